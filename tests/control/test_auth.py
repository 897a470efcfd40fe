"""Identity: v3 and legacy v2.0 tokens, 401s, expiry, hashing, and project isolation."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, update

from openimds.control.passwords import hash_password, verify_password
from openimds.inventory.models import Token, User
from openimds.inventory.store import Store

from .conftest import PASSWORD, Api, make_network, v3_body


async def test_v3_token_has_expiry_user_project_roles_and_catalog(api: Api) -> None:
    resp = await api.client.post("/v3/auth/tokens", json=v3_body("alice", PASSWORD, "a"))
    assert resp.status == 201
    token = resp.headers["X-Subject-Token"]
    body = (await resp.json())["token"]
    assert body["user"]["name"] == "alice"
    assert body["project"]["name"] == "a"
    assert [r["name"] for r in body["roles"]] == ["member"]
    expires = datetime.fromisoformat(body["expires_at"].replace("Z", "+00:00"))
    assert timedelta(minutes=55) < expires - datetime.now(UTC) <= timedelta(hours=1)
    kinds = {s["type"]: s for s in body["catalog"]}
    assert set(kinds) >= {"network", "compute", "metadata", "identity"}
    base = str(api.client.make_url("")).rstrip("/")
    network_urls = {e["url"] for e in kinds["network"]["endpoints"]}
    assert network_urls == {base}
    assert kinds["compute"]["endpoints"][0]["url"] == base + "/v2.1"
    assert kinds["metadata"]["endpoints"][0]["url"].endswith(":8775")
    # The token works.
    ok = await api.client.get("/v2.0/networks", headers={"X-Auth-Token": token})
    assert ok.status == 200


async def test_v3_unscoped_request_scopes_to_the_users_project(api: Api) -> None:
    resp = await api.client.post("/v3/auth/tokens", json=v3_body("bob", PASSWORD, None))
    assert resp.status == 201
    assert (await resp.json())["token"]["project"]["name"] == "b"


async def test_legacy_v2_token_as_the_seeds_metadata_agent_sends_it(api: Api) -> None:
    body = {"auth": {"passwordCredentials": {"username": "neutron", "password": PASSWORD},
                     "tenantName": "service"}}
    resp = await api.client.post("/v2.0/tokens", json=body)
    assert resp.status == 200
    access = (await resp.json())["access"]
    token = access["token"]["id"]
    assert access["token"]["tenant"]["name"] == "service"
    assert [r["name"] for r in access["user"]["roles"]] == ["service"]
    assert {s["type"] for s in access["serviceCatalog"]} >= {"network", "compute", "metadata"}
    ok = await api.client.get("/v2.0/changes", headers={"X-Auth-Token": token})
    assert ok.status == 200


@pytest.mark.parametrize("user,password,project", [
    ("alice", "wrong", "a"),
    ("nobody", PASSWORD, "a"),
    ("alice", PASSWORD, "b"),       # not her project
    ("alice", PASSWORD, "missing"),
])
async def test_bad_credentials_are_401_in_keystone_shape(api: Api, user: str, password: str,
                                                         project: str) -> None:
    resp = await api.client.post("/v3/auth/tokens", json=v3_body(user, password, project))
    assert resp.status == 401
    body = await resp.json()
    assert body["error"]["code"] == 401
    assert "X-Subject-Token" not in resp.headers
    v2 = await api.client.post("/v2.0/tokens", json={"auth": {
        "passwordCredentials": {"username": user, "password": password},
        "tenantName": project}})
    assert v2.status == 401


@pytest.mark.parametrize("body", [None, {}, {"auth": {}}, {"auth": {"identity": {
    "methods": ["token"]}}}, {"auth": {"identity": {"methods": ["password"], "password": {
        "user": {"name": 5, "password": "x"}}}}}, [1, 2]])
async def test_malformed_auth_bodies_are_400(api: Api, body: object) -> None:
    resp = await api.client.post("/v3/auth/tokens", json=body)
    assert resp.status == 400


@pytest.mark.parametrize("headers", [{}, {"X-Auth-Token": "not-a-token"},
                                     {"X-Auth-Token": ""}])
@pytest.mark.parametrize("path", ["/v2.0/networks", "/v2.0/subnets", "/v2.0/ports",
                                  "/v2.0/routers", "/v2.0/changes", "/v2.1/servers",
                                  "/v2.1/os-keypairs"])
async def test_missing_or_invalid_token_is_401(api: Api, path: str,
                                               headers: dict[str, str]) -> None:
    resp = await api.client.get(path, headers=headers)
    assert resp.status == 401
    body = await resp.json()
    if path.startswith("/v2.1"):
        assert body["unauthorized"]["code"] == 401
    else:
        assert body["NeutronError"]["type"] == "HTTPUnauthorized"
    assert "WWW-Authenticate" in resp.headers


async def test_expired_token_is_401(api: Api, store: Store) -> None:
    token = api.tokens["alice"]
    with store.session() as s:
        s.execute(update(Token).where(Token.token_hash == hashlib.sha256(
            token.encode()).hexdigest()).values(expires_at=datetime.now(UTC) - timedelta(1)))
    status, _ = await api.call("alice", "GET", "/v2.0/networks")
    assert status == 401


async def test_tokens_and_passwords_are_stored_hashed(api: Api, store: Store) -> None:
    with store.read() as s:
        hashes = set(s.scalars(select(Token.token_hash)))
        alice_hash = s.scalars(select(User.password_hash).where(User.name == "alice")).one()
    for token in api.tokens.values():
        assert token not in hashes
        assert hashlib.sha256(token.encode()).hexdigest() in hashes
    assert PASSWORD not in alice_hash
    assert alice_hash.startswith("scrypt$")


def test_password_hash_round_trip_and_salt() -> None:
    a, b = hash_password("pw"), hash_password("pw")
    assert a != b  # per-user salt
    assert verify_password("pw", a) and verify_password("pw", b)
    assert not verify_password("pW", a)
    assert not verify_password("pw", "garbage")


async def test_member_never_sees_another_projects_resources(api: Api) -> None:
    net, sub = await make_network(api, "alice", "alice-net", "10.0.0.0/24")
    assert sub is not None
    port = (await api.ok("alice", "POST", "/v2.0/ports",
                         {"port": {"network_id": net["id"]}}))["port"]
    router = (await api.ok("alice", "POST", "/v2.0/routers", {"router": {"name": "r"}}))["router"]
    for kind, rid in (("networks", net["id"]), ("subnets", sub["id"]), ("ports", port["id"]),
                      ("routers", router["id"])):
        for method, body in (("GET", None), ("PUT", {kind[:-1]: {"name": "x"}}),
                             ("DELETE", None)):
            status, err = await api.call("bob", method, f"/v2.0/{kind}/{rid}", body)
            assert status == 404, (kind, method, status, err)
        listed = await api.ok("bob", "GET", f"/v2.0/{kind}")
        assert listed[kind] == []
        # The admin and the service user see everything.
        assert await api.ok("admin", "GET", f"/v2.0/{kind}/{rid}")
        assert await api.ok("neutron", "GET", f"/v2.0/{kind}/{rid}")
    # Bob can neither use Alice's network nor attach her subnet to his router.
    status, _ = await api.call("bob", "POST", "/v2.0/ports", {"port": {"network_id": net["id"]}})
    assert status == 404
    bob_router = (await api.ok("bob", "POST", "/v2.0/routers", {"router": {}}))["router"]
    status, _ = await api.call("bob", "PUT", f"/v2.0/routers/{bob_router['id']}/"
                               "add_router_interface", {"subnet_id": sub["id"]})
    assert status == 404
    # ... nor create a server on it.
    status, _ = await api.call("bob", "POST", "/v2.1/servers", {"server": {
        "name": "x", "networks": [{"uuid": net["id"]}]}})
    assert status == 404


async def test_service_role_reads_all_but_writes_only_its_project(api: Api) -> None:
    net, _ = await make_network(api, "alice", "alice-net")
    status, _ = await api.call("neutron", "DELETE", f"/v2.0/networks/{net['id']}")
    assert status == 404
    status, _ = await api.call("neutron", "PUT", f"/v2.0/networks/{net['id']}",
                               {"network": {"name": "stolen"}})
    assert status == 404


async def test_admin_may_create_in_another_project_member_may_not(api: Api) -> None:
    alice_project = (await api.ok("alice", "POST", "/v2.0/networks",
                                  {"network": {}}))["network"]["project_id"]
    made = await api.ok("admin", "POST", "/v2.0/networks",
                        {"network": {"name": "for-alice", "tenant_id": alice_project}})
    assert made["network"]["project_id"] == alice_project
    listed = await api.ok("alice", "GET", "/v2.0/networks", params={"name": "for-alice"})
    assert len(listed["networks"]) == 1
    status, body = await api.call("bob", "POST", "/v2.0/networks",
                                  {"network": {"tenant_id": alice_project}})
    assert status == 403, body


async def test_changes_feed_is_admin_or_service_only(api: Api) -> None:
    status, body = await api.call("alice", "GET", "/v2.0/changes")
    assert status == 403
    assert body["NeutronError"]["type"] == "HTTPForbidden"
