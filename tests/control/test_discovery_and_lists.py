"""Version documents, microversions, /v2.0/extensions and the server list filters the real
clients send (`deleted`, `name`, `status`, `all_tenants`/`project_id`, `limit`/`marker`)."""

from __future__ import annotations

from typing import Any

import pytest

from openimds.control.errors import BadRequest
from openimds.control.name_filter import name_matcher

from .conftest import Api


async def _get(api: Api, path: str, headers: dict[str, str] | None = None) -> tuple[int, Any,
                                                                                    Any]:
    resp = await api.client.get(path, headers=headers or {})
    return resp.status, resp.headers, await resp.json()


async def test_version_documents_need_no_token(api: Api) -> None:
    status, _, root = await _get(api, "/")
    assert status == 200
    by_id = {v["id"]: v for v in root["versions"]}
    assert by_id["v2.1"]["version"] == "2.47" and by_id["v2.1"]["min_version"] == "2.1"
    assert by_id["v2.0"]["links"][0]["href"].endswith("/v2.0/")
    for path in ("/v2.1", "/v2.1/"):
        status, _, doc = await _get(api, path)
        assert status == 200
        assert doc["version"]["id"] == "v2.1" and doc["version"]["version"] == "2.47"
    status, _, doc = await _get(api, "/v3")
    assert status == 200 and doc["version"]["id"].startswith("v3.")
    assert doc["version"]["links"][0]["href"].endswith("/v3/")
    status, _, doc = await _get(api, "/image")
    assert status == 200 and doc["versions"][0]["links"][0]["href"].endswith("/image/v2/")


@pytest.mark.parametrize(("headers", "expected"), [
    ({}, "2.1"),
    ({"OpenStack-API-Version": "compute 2.26"}, "2.26"),
    ({"X-OpenStack-Nova-API-Version": "2.10"}, "2.10"),
    ({"OpenStack-API-Version": "compute latest"}, "2.47"),
    ({"OpenStack-API-Version": "identity 3.0, compute 2.3"}, "2.3"),
])
async def test_microversion_is_negotiated_and_echoed(api: Api, headers: dict[str, str],
                                                     expected: str) -> None:
    resp = await api.client.get("/v2.1/servers", headers={
        "X-Auth-Token": api.tokens["alice"], **headers})
    assert resp.status == 200
    assert resp.headers["OpenStack-API-Version"] == f"compute {expected}"
    assert resp.headers["X-OpenStack-Nova-API-Version"] == expected


@pytest.mark.parametrize(("value", "status"), [("2.48", 406), ("3.0", 406), ("2.0", 406),
                                               ("two", 400)])
async def test_unsupported_microversion_is_refused(api: Api, value: str, status: int) -> None:
    resp = await api.client.get("/v2.1/servers", headers={
        "X-Auth-Token": api.tokens["alice"], "OpenStack-API-Version": f"compute {value}"})
    assert resp.status == status
    assert "message" in next(iter((await resp.json()).values()))


async def test_extensions_list_and_show(api: Api) -> None:
    body = await api.ok("alice", "GET", "/v2.0/extensions")
    aliases = {e["alias"] for e in body["extensions"]}
    assert {"net-mtu", "router", "project-id"} <= aliases
    shown = await api.ok("alice", "GET", "/v2.0/extensions/net-mtu")
    assert shown["extension"]["name"] == "Network MTU"
    status, body = await api.call("alice", "GET", "/v2.0/extensions/port-hints")
    assert status == 404 and body["NeutronError"]["type"] == "ExtensionNotFound"


async def _servers(api: Api, user: str, *names: str) -> list[str]:
    ids = []
    for name in names:
        body = await api.ok(user, "POST", "/v2.1/servers", {"server": {"name": name}},
                            status=202)
        ids.append(body["server"]["id"])
    return ids


async def _names(api: Api, user: str, path: str = "/v2.1/servers/detail",
                 **params: Any) -> list[str]:
    body = await api.ok(user, "GET", path, params=params)
    return [s["name"] for s in body["servers"]]


async def test_detail_filters_the_clients_send(api: Api) -> None:
    await _servers(api, "alice", "web-1", "web-2", "db-1")
    await _servers(api, "bob", "web-b")
    # openstack server list always sends deleted=False.
    assert sorted(await _names(api, "alice", deleted="False")) == ["db-1", "web-1", "web-2"]
    assert await _names(api, "alice", deleted="True") == []
    assert sorted(await _names(api, "alice", name="web")) == ["web-1", "web-2"]
    assert await _names(api, "alice", name="^web-1$") == ["web-1"]
    assert await _names(api, "alice", name="-1$") == ["db-1", "web-1"]  # newest first
    assert sorted(await _names(api, "alice", status="active")) == ["db-1", "web-1", "web-2"]
    assert await _names(api, "alice", status="ERROR") == []


async def test_projects_and_all_tenants(api: Api) -> None:
    await _servers(api, "alice", "a1")
    await _servers(api, "bob", "b1")
    await _servers(api, "admin", "adm")
    # Everyone, admins too, lists their own project by default (Nova).
    assert await _names(api, "admin") == ["adm"]
    assert sorted(await _names(api, "admin", all_tenants="True")) == ["a1", "adm", "b1"]
    status, body = await api.call("alice", "GET", "/v2.1/servers/detail",
                                  params={"all_tenants": "True"})
    assert status == 403 and "forbidden" in body
    [bob_server] = (await api.ok("bob", "GET", "/v2.1/servers/detail"))["servers"]
    assert await _names(api, "admin", project_id=bob_server["tenant_id"]) == ["b1"]
    # A member naming another project sees nothing of it.
    assert await _names(api, "alice", project_id=bob_server["tenant_id"]) == []


async def test_limit_and_marker_paginate_newest_first(api: Api) -> None:
    await _servers(api, "alice", "s1", "s2", "s3")
    first = await api.ok("alice", "GET", "/v2.1/servers", params={"limit": "2"})
    assert [s["name"] for s in first["servers"]] == ["s3", "s2"]
    [link] = first["servers_links"]
    assert link["rel"] == "next" and "marker=" in link["href"]
    marker = first["servers"][-1]["id"]
    rest = await api.ok("alice", "GET", "/v2.1/servers", params={"limit": "2",
                                                                  "marker": marker})
    assert [s["name"] for s in rest["servers"]] == ["s1"] and "servers_links" not in rest
    status, _ = await api.call("alice", "GET", "/v2.1/servers",
                               params={"marker": "00000000-0000-0000-0000-000000000000"})
    assert status == 400
    status, _ = await api.call("alice", "GET", "/v2.1/servers", params={"limit": "-1"})
    assert status == 400


async def _walk(api: Api, path: str, limit: int, **params: Any) -> list[str]:
    """Every page of a server list by its next links; the names in order."""
    names: list[str] = []
    query = {**params, "limit": str(limit)}
    while True:
        body = await api.ok("alice", "GET", path, params=query)
        names += [s["name"] for s in body["servers"]]
        links = body.get("servers_links", [])
        if not links:
            return names
        query = {**params, "limit": str(limit),
                 "marker": links[0]["href"].rsplit("marker=", 1)[1]}


@pytest.mark.parametrize("path", ["/v2.1/servers", "/v2.1/servers/detail"])
async def test_pages_walk_the_same_list_with_and_without_a_name_filter(api: Api,
                                                                        path: str) -> None:
    """The page is cut in the database (keyset on creation time, id) and, with a name filter,
    read in batches: walking it page by page gives exactly the unpaged list."""
    await _servers(api, "alice", *[f"web-{i}" for i in range(7)], "db-1", "db-2", "web-7")
    everything = await _names(api, "alice", path)
    assert len(everything) == 10
    for limit in (1, 2, 3, 10, 11):
        assert await _walk(api, path, limit) == everything
    webs = await _names(api, "alice", path, name="web")
    assert webs == [n for n in everything if n.startswith("web")] and len(webs) == 8
    for limit in (1, 3, 8):
        assert await _walk(api, path, limit, name="web") == webs
    # A marker the name filter excludes is not a place in that list (Nova: 400).
    db = (await api.ok("alice", "GET", path, params={"name": "db-1"}))["servers"][0]["id"]
    status, _ = await api.call("alice", "GET", path, params={"name": "web", "marker": db})
    assert status == 400
    # Another project's server is no marker either.
    [other] = await _servers(api, "bob", "b1")
    status, _ = await api.call("alice", "GET", path, params={"marker": other})
    assert status == 400


async def test_name_filter_is_never_a_regular_expression(api: Api) -> None:
    """Issue 16 #2: `^(a+)+$` against `'a' * 26 + '!'` backtracked for seconds and blocked
    every tenant. The pattern is now literal text between optional anchors."""
    await _servers(api, "alice", "a" * 26 + "!", "(a+)+", "x.y", "xzy")
    assert await _names(api, "alice", "/v2.1/servers", name="^(a+)+$") == ["(a+)+"]
    assert await _names(api, "alice", name="x.y") == ["x.y"]
    assert await _names(api, "alice", name="^" + "a" * 26 + "!$") == ["a" * 26 + "!"]


@pytest.mark.parametrize(("pattern", "name", "expected"), [
    ("web", "my-web-1", True), ("^web", "my-web-1", False), ("^my", "my-web-1", True),
    ("-1$", "my-web-1", True), ("^my-web-1$", "my-web-1", True), ("^my-web$", "my-web-1", False),
    ("a\\$", "a$b", True), ("a\\$", "xa", False), ("a\\\\$", "a\\", True), (".*", "abc", False),
    (".*", "x.*y", True), ("", "anything", True), ("^$", "", True),
])
def test_name_matcher_forms(pattern: str, name: str, expected: bool) -> None:
    assert name_matcher(pattern)(name) is expected


def test_name_matcher_rejects_bad_patterns() -> None:
    with pytest.raises(BadRequest):
        name_matcher("x" * 256)
    with pytest.raises(BadRequest):
        name_matcher("ab\\")


async def test_v2_0_answers_keystone_discovery_and_neutron_index(api: Api) -> None:
    status, _, doc = await _get(api, "/v2.0")
    assert status == 200
    assert doc["version"]["id"] == "v2.0"
    assert "networks" in {r["collection"] for r in doc["resources"]}
