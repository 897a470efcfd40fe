"""Identity administration over REST (Keystone v3 shapes): projects, users, roles, role
assignments, the Default domain, token validation and revocation, the reader role."""

from __future__ import annotations

from typing import Any

from .conftest import PASSWORD, Api, v3_body


async def _token(api: Api, user: str, password: str, project: str | None) -> tuple[int, Any,
                                                                                   str]:
    resp = await api.client.post("/v3/auth/tokens", json=v3_body(user, password, project))
    return resp.status, await resp.json(), resp.headers.get("X-Subject-Token", "")


async def test_admin_creates_project_user_and_grants_a_role(api: Api) -> None:
    project = (await api.ok("admin", "POST", "/v3/projects", {"project": {
        "name": "demo", "description": "d", "domain_id": "default"}}))["project"]
    assert project["domain_id"] == "default" and project["enabled"] is True
    user = (await api.ok("admin", "POST", "/v3/users", {"user": {
        "name": "carol", "password": "pw-carol", "domain_id": "default"}}))["user"]
    assert user["default_project_id"] is None
    # No role anywhere yet: no token.
    status, _, _ = await _token(api, "carol", "pw-carol", "demo")
    assert status == 401
    path = f"/v3/projects/{project['id']}/users/{user['id']}/roles/member"
    await api.ok("admin", "PUT", path, status=204)
    await api.ok("admin", "PUT", path, status=204)  # idempotent
    await api.ok("admin", "HEAD", path, status=204)
    status, body, token = await _token(api, "carol", "pw-carol", "demo")
    assert status == 201 and body["token"]["project"]["id"] == project["id"]
    assert [r["name"] for r in body["token"]["roles"]] == ["member"]
    api.tokens["carol"] = token
    # Carol sees her project and herself only; she may write in it.
    projects = (await api.ok("carol", "GET", "/v3/projects"))["projects"]
    assert [p["name"] for p in projects] == ["demo"]
    assert [u["name"] for u in (await api.ok("carol", "GET", "/v3/users"))["users"]] == [
        "carol"]
    status, _ = await api.call("carol", "GET", f"/v3/users/{api_user_id(body)}")
    assert status == 200
    net = (await api.ok("carol", "POST", "/v2.0/networks", {"network": {"name": "n"}}))
    assert net["network"]["project_id"] == project["id"]
    assignments = (await api.ok("admin", "GET", "/v3/role_assignments", params={
        "scope.project.id": project["id"], "include_names": "1"}))["role_assignments"]
    assert [(a["user"]["name"], a["role"]["name"]) for a in assignments] == [
        ("carol", "member")]
    # Revoking the role revokes her tokens at once.
    await api.ok("admin", "DELETE", path, status=204)
    status, _ = await api.call("carol", "GET", "/v2.0/networks")
    assert status == 401
    status, _ = await api.call("admin", "HEAD", path)
    assert status == 404


def api_user_id(token_body: dict[str, Any]) -> str:
    return str(token_body["token"]["user"]["id"])


async def test_members_cannot_administer_identity(api: Api) -> None:
    for method, path, body in (
        ("POST", "/v3/projects", {"project": {"name": "x"}}),
        ("POST", "/v3/users", {"user": {"name": "x", "password": "y"}}),
    ):
        status, _ = await api.call("alice", method, path, body)
        assert status == 403
    bob_project = (await api.ok("admin", "GET", "/v3/projects", params={"name": "b"}))[
        "projects"][0]
    alice = (await api.ok("admin", "GET", "/v3/users", params={"name": "alice"}))["users"][0]
    status, _ = await api.call("alice", "PUT", f"/v3/projects/{bob_project['id']}/users/"
                                               f"{alice['id']}/roles/admin")
    assert status in (403, 404)
    status, _ = await api.call("alice", "GET", f"/v3/projects/{bob_project['id']}")
    assert status == 404
    status, _ = await api.call("alice", "PATCH", f"/v3/users/{alice['id']}",
                               {"user": {"enabled": False}})
    assert status == 403


async def test_roles_domains_and_conflicts(api: Api) -> None:
    roles = [r["name"] for r in (await api.ok("alice", "GET", "/v3/roles"))["roles"]]
    assert roles == ["admin", "member", "reader", "service"]
    assert (await api.ok("alice", "GET", "/v3/roles/reader"))["role"]["id"] == "reader"
    status, _ = await api.call("alice", "GET", "/v3/roles/owner")
    assert status == 404
    domains = (await api.ok("alice", "GET", "/v3/domains"))["domains"]
    assert [(d["id"], d["name"]) for d in domains] == [("default", "Default")]
    status, _ = await api.call("admin", "POST", "/v3/projects", {"project": {"name": "a"}})
    assert status == 409
    status, _ = await api.call("admin", "POST", "/v3/projects", {"project": {
        "name": "z", "domain_id": "other"}})
    assert status == 400


async def test_reader_reads_but_never_writes(api: Api) -> None:
    a_project = (await api.ok("admin", "GET", "/v3/projects", params={"name": "a"}))[
        "projects"][0]
    await api.ok("alice", "POST", "/v2.0/networks", {"network": {"name": "alice-net"}})
    reader = (await api.ok("admin", "POST", "/v3/users", {"user": {
        "name": "rita", "password": "pw-rita"}}))["user"]
    await api.ok("admin", "PUT", f"/v3/projects/{a_project['id']}/users/{reader['id']}/roles/"
                                 "reader", status=204)
    _, _, token = await _token(api, "rita", "pw-rita", "a")
    api.tokens["rita"] = token
    names = [n["name"] for n in (await api.ok("rita", "GET", "/v2.0/networks"))["networks"]]
    assert names == ["alice-net"]
    status, body = await api.call("rita", "POST", "/v2.0/networks", {"network": {"name": "x"}})
    assert status == 403 and "reader" in body["NeutronError"]["message"]


async def test_token_validation_and_revocation(api: Api) -> None:
    _, _, alice_token = await _token(api, "alice", PASSWORD, "a")
    resp = await api.client.get("/v3/auth/tokens", headers={
        "X-Auth-Token": api.tokens["admin"], "X-Subject-Token": alice_token})
    assert resp.status == 200
    body = await resp.json()
    assert body["token"]["user"]["name"] == "alice" and "catalog" in body["token"]
    assert resp.headers["X-Subject-Token"] == alice_token
    # A member may check its own token, not another user's.
    resp = await api.client.get("/v3/auth/tokens", headers={
        "X-Auth-Token": api.tokens["bob"], "X-Subject-Token": alice_token})
    assert resp.status == 403
    resp = await api.client.delete("/v3/auth/tokens", headers={
        "X-Auth-Token": alice_token, "X-Subject-Token": alice_token})
    assert resp.status == 204
    resp = await api.client.get("/v3/auth/tokens", headers={
        "X-Auth-Token": api.tokens["admin"], "X-Subject-Token": alice_token})
    assert resp.status == 404
    resp = await api.client.get("/v2.0/networks", headers={"X-Auth-Token": alice_token})
    assert resp.status == 401


async def test_disabling_a_project_or_user_revokes_its_tokens(api: Api) -> None:
    b = (await api.ok("admin", "GET", "/v3/projects", params={"name": "b"}))["projects"][0]
    await api.ok("admin", "PATCH", f"/v3/projects/{b['id']}", {"project": {"enabled": False}})
    status, _ = await api.call("bob", "GET", "/v2.0/networks")
    assert status == 401
    status, _, _ = await _token(api, "bob", PASSWORD, "b")
    assert status == 401
    alice = (await api.ok("admin", "GET", "/v3/users", params={"name": "alice"}))["users"][0]
    assert alice["default_project_id"] is not None
    await api.ok("admin", "PATCH", f"/v3/users/{alice['id']}", {"user": {"enabled": False}})
    status, _ = await api.call("alice", "GET", "/v2.0/networks")
    assert status == 401


async def test_project_delete_refuses_while_it_owns_resources(api: Api) -> None:
    project = (await api.ok("admin", "POST", "/v3/projects", {"project": {
        "name": "tmp"}}))["project"]
    await api.ok("admin", "POST", "/v2.0/networks", {"network": {
        "name": "owned", "project_id": project["id"]}})
    status, _ = await api.call("admin", "DELETE", f"/v3/projects/{project['id']}")
    assert status == 409
    empty = (await api.ok("admin", "POST", "/v3/projects", {"project": {
        "name": "empty"}}))["project"]
    await api.ok("admin", "DELETE", f"/v3/projects/{empty['id']}")
    status, _ = await api.call("admin", "GET", f"/v3/projects/{empty['id']}")
    assert status == 404
