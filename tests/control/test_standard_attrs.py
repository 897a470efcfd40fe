"""Neutron standard attributes: descriptions stored and returned, tags and tag filters."""

from __future__ import annotations

import pytest

from .conftest import Api, make_network


async def test_descriptions_are_stored_on_every_resource(api: Api) -> None:
    net = (await api.ok("alice", "POST", "/v2.0/networks", {"network": {
        "name": "n", "description": "net desc"}}))["network"]
    assert net["description"] == "net desc"
    sub = (await api.ok("alice", "POST", "/v2.0/subnets", {"subnet": {
        "network_id": net["id"], "cidr": "10.0.0.0/24", "description": "sub desc"}}))["subnet"]
    port = (await api.ok("alice", "POST", "/v2.0/ports", {"port": {
        "network_id": net["id"], "description": "port desc"}}))["port"]
    router = (await api.ok("alice", "POST", "/v2.0/routers", {"router": {
        "name": "r", "description": "router desc"}}))["router"]
    for path, key, rid, text in (("networks", "network", net["id"], "net desc"),
                                 ("subnets", "subnet", sub["id"], "sub desc"),
                                 ("ports", "port", port["id"], "port desc"),
                                 ("routers", "router", router["id"], "router desc")):
        shown = (await api.ok("alice", "GET", f"/v2.0/{path}/{rid}"))[key]
        assert shown["description"] == text
        updated = (await api.ok("alice", "PUT", f"/v2.0/{path}/{rid}", {key: {
            "description": "changed"}}))[key]
        assert updated["description"] == "changed"
        listed = (await api.ok("alice", "GET", f"/v2.0/{path}",
                               params={"description": "changed"}))[path]
        assert [i["id"] for i in listed] == [rid]


async def test_tags_and_tag_filters(api: Api) -> None:
    a, _ = await make_network(api, "alice", "a")
    b, _ = await make_network(api, "alice", "b")
    await api.ok("alice", "PUT", f"/v2.0/networks/{a['id']}/tags/red", status=201)
    await api.ok("alice", "PUT", f"/v2.0/networks/{a['id']}/tags/red", status=201)
    await api.ok("alice", "PUT", f"/v2.0/networks/{a['id']}/tags/blue", status=201)
    await api.ok("alice", "PUT", f"/v2.0/networks/{b['id']}/tags", {"tags": ["blue"]})
    assert (await api.ok("alice", "GET", f"/v2.0/networks/{a['id']}/tags")) == {
        "tags": ["red", "blue"]}
    await api.ok("alice", "GET", f"/v2.0/networks/{a['id']}/tags/red", status=204)
    status, _ = await api.call("alice", "GET", f"/v2.0/networks/{a['id']}/tags/green")
    assert status == 404

    async def names(**params: str) -> list[str]:
        body = await api.ok("alice", "GET", "/v2.0/networks", params=params)
        return sorted(n["name"] for n in body["networks"])

    assert await names(tags="red,blue") == ["a"]
    assert await names(**{"tags-any": "red,blue"}) == ["a", "b"]
    assert await names(**{"not-tags": "red"}) == ["b"]
    assert await names(**{"not-tags-any": "blue"}) == []
    shown = (await api.ok("alice", "GET", f"/v2.0/networks/{a['id']}"))["network"]
    assert shown["tags"] == ["red", "blue"]
    await api.ok("alice", "DELETE", f"/v2.0/networks/{a['id']}/tags/red")
    await api.ok("alice", "DELETE", f"/v2.0/networks/{a['id']}/tags")
    assert (await api.ok("alice", "GET", f"/v2.0/networks/{a['id']}/tags")) == {"tags": []}
    status, _ = await api.call("bob", "PUT", f"/v2.0/networks/{b['id']}/tags/x")
    assert status == 404
    status, _ = await api.call("alice", "PUT", f"/v2.0/networks/{b['id']}/tags/a,b")
    assert status == 400
    status, _ = await api.call("alice", "PUT", f"/v2.0/widgets/{b['id']}/tags/x")
    assert status == 404


@pytest.mark.parametrize("alias", ["standard-attr-description", "standard-attr-tag",
                                   "security-group"])
async def test_extensions_name_what_is_implemented(api: Api, alias: str) -> None:
    await api.ok("alice", "GET", f"/v2.0/extensions/{alias}")


async def test_network_availability_zones(api: Api) -> None:
    zones = (await api.ok("alice", "GET", "/v2.0/availability_zones"))["availability_zones"]
    assert {(z["name"], z["resource"], z["state"]) for z in zones} == {
        ("nova", "network", "available"), ("nova", "router", "available")}
    only = await api.ok("alice", "GET", "/v2.0/availability_zones",
                        params={"resource": "router"})
    assert [z["resource"] for z in only["availability_zones"]] == ["router"]
    net, _ = await make_network(api, "alice", "n")
    assert net["availability_zones"] == ["nova"] and net["availability_zone_hints"] == []
