"""Provider segments through the HTTP API: admin shapes, tenant allocation, errors, reuse."""

from __future__ import annotations

from typing import Any

import pytest

from openimds.control.call import Settings
from openimds.control.segments import segment_config

from .conftest import Api

PROVIDER = ("provider:network_type", "provider:physical_network", "provider:segmentation_id")


@pytest.fixture
def settings() -> Settings:
    return Settings(segments=segment_config(["vxlan"], ["1000:1001"],
                                            ["physnet1:100:101", "physnet2"]))


def provider(net: dict[str, object]) -> tuple[object, ...]:
    return tuple(net[k] for k in PROVIDER)


async def create(api: Api, user: str, **body: object) -> tuple[int, Any]:
    status, reply = await api.call(user, "POST", "/v2.0/networks",
                                   {"network": {"name": "n", **body}})
    return status, reply


async def test_tenant_networks_draw_vnis_and_ids_return_to_the_pool(api: Api) -> None:
    a = (await api.ok("alice", "POST", "/v2.0/networks", {"network": {"name": "a"}}))["network"]
    assert "provider:network_type" not in a  # tenants do not see segments (Neutron's policy)
    admin_view = (await api.ok("admin", "GET", f"/v2.0/networks/{a['id']}"))["network"]
    assert provider(admin_view) == ("vxlan", None, 1000)
    assert admin_view["mtu"] == 1450  # VXLAN overhead taken off a 1500 underlay
    service_view = (await api.ok("neutron", "GET", f"/v2.0/networks/{a['id']}"))["network"]
    assert provider(service_view) == ("vxlan", None, 1000)
    b = (await api.ok("bob", "POST", "/v2.0/networks", {"network": {"name": "b"}}))["network"]
    status, body = await create(api, "alice")
    assert status == 503, body
    assert body["NeutronError"]["type"] == "NoNetworkAvailable"
    assert "No tenant network is available" in body["NeutronError"]["message"]
    await api.ok("alice", "DELETE", f"/v2.0/networks/{a['id']}")
    c = (await api.ok("alice", "POST", "/v2.0/networks", {"network": {"name": "c"}}))["network"]
    shown = (await api.ok("admin", "GET", f"/v2.0/networks/{c['id']}"))["network"]
    assert provider(shown) == ("vxlan", None, 1000)
    listed = (await api.ok("admin", "GET", "/v2.0/networks",
                           params={"provider:segmentation_id": "1001"}))["networks"]
    assert [n["id"] for n in listed] == [b["id"]]


async def test_admin_provider_networks(api: Api) -> None:
    body = (await api.ok("admin", "POST", "/v2.0/networks", {"network": {
        "name": "v", "provider:network_type": "vlan", "provider:physical_network": "physnet1",
        "provider:segmentation_id": 150}}))["network"]
    assert provider(body) == ("vlan", "physnet1", 150) and body["mtu"] == 1500
    flat = (await api.ok("admin", "POST", "/v2.0/networks", {"network": {
        "name": "f", "provider:network_type": "flat",
        "provider:physical_network": "physnet2"}}))["network"]
    assert provider(flat) == ("flat", "physnet2", None)
    partial = (await api.ok("admin", "POST", "/v2.0/networks", {"network": {
        "name": "p", "provider:network_type": "vlan",
        "provider:physical_network": "physnet1"}}))["network"]
    assert provider(partial) == ("vlan", "physnet1", 100)
    local = (await api.ok("admin", "POST", "/v2.0/networks", {"network": {
        "name": "l", "provider:network_type": "local"}}))["network"]
    assert provider(local) == ("local", None, None)


@pytest.mark.parametrize(("first", "second", "status", "type_"), [
    ({"provider:network_type": "vxlan", "provider:segmentation_id": 5000},
     {"provider:network_type": "vxlan", "provider:segmentation_id": 5000}, 409, "TunnelIdInUse"),
    ({"provider:network_type": "vlan", "provider:physical_network": "physnet1",
      "provider:segmentation_id": 7},
     {"provider:network_type": "vlan", "provider:physical_network": "physnet1",
      "provider:segmentation_id": 7}, 409, "VlanIdInUse"),
    ({"provider:network_type": "flat", "provider:physical_network": "physnet1"},
     {"provider:network_type": "flat", "provider:physical_network": "physnet1"}, 409,
     "FlatNetworkInUse"),
    (None, {"provider:network_type": "vlan", "provider:physical_network": "physnet1",
            "provider:segmentation_id": 4095}, 400, "InvalidInput"),
    (None, {"provider:network_type": "flat"}, 400, "InvalidInput"),
    (None, {"provider:network_type": "vlan", "provider:physical_network": "physnet9",
            "provider:segmentation_id": 3}, 400, "InvalidInput"),
    (None, {"provider:network_type": "gre"}, 400, "InvalidInput"),
])
async def test_provider_errors(api: Api, first: dict[str, object] | None,
                               second: dict[str, object], status: int, type_: str) -> None:
    if first is not None:
        got, body = await create(api, "admin", **first)
        assert got == 201, body
    before = (await api.ok("admin", "GET", "/v2.0/networks"))["networks"]
    got, body = await create(api, "admin", **second)
    assert (got, body["NeutronError"]["type"]) == (status, type_), body
    after = (await api.ok("admin", "GET", "/v2.0/networks"))["networks"]
    assert after == before  # nothing written


async def test_tenants_may_not_set_or_update_segments(api: Api) -> None:
    status, body = await create(api, "alice", **{"provider:network_type": "vxlan"})
    assert status == 403, body
    net = (await api.ok("admin", "POST", "/v2.0/networks", {"network": {
        "name": "x", "provider:network_type": "vxlan", "provider:segmentation_id": 77}}))[
        "network"]
    status, body = await api.call("admin", "PUT", f"/v2.0/networks/{net['id']}", {"network": {
        "provider:segmentation_id": 78}})
    assert status == 400 and "updating provider attributes" in body["NeutronError"]["message"]
    same = await api.ok("admin", "PUT", f"/v2.0/networks/{net['id']}", {"network": {
        "name": "y", "provider:segmentation_id": 77}})
    assert same["network"]["name"] == "y"

