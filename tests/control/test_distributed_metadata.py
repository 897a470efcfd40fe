"""metadata_mode = distributed: one network:distributed port per network with a DHCP-enabled
IPv4 subnet, kept by subnet writes and by the control API's start-up sweep (mode switch)."""

from __future__ import annotations

from typing import Any

import pytest

from openimds.control.call import Settings
from openimds.control.distributed_metadata import sync_all_metadata_ports
from openimds.inventory.store import Store

from .conftest import Api, make_network


@pytest.fixture
def settings() -> Settings:
    return Settings(metadata_mode="distributed")


async def meta_ports(api: Api, net_id: str) -> list[dict[str, Any]]:
    return list((await api.ok("admin", "GET", "/v2.0/ports", params={
        "network_id": net_id, "device_owner": "network:distributed"}))["ports"])


async def test_one_port_per_network_with_an_address_on_each_dhcp_v4_subnet(api: Api) -> None:
    net, sub = await make_network(api, "admin", "d1", "10.0.0.0/24")
    assert sub is not None
    (port,) = await meta_ports(api, net["id"])
    assert port["device_id"] == f"qmeta-{net['id']}"
    assert port["binding:host_id"] == ""
    assert [f["subnet_id"] for f in port["fixed_ips"]] == [sub["id"]]
    dhcp = (await api.ok("admin", "GET", "/v2.0/ports", params={
        "network_id": net["id"], "device_owner": "network:dhcp"}))["ports"]
    assert port["mac_address"] not in {p["mac_address"] for p in dhcp}
    # A second IPv4 subnet adds an address; a DHCP-less or IPv6 one does not.
    second = (await api.ok("admin", "POST", "/v2.0/subnets", {"subnet": {
        "network_id": net["id"], "cidr": "10.1.0.0/24", "ip_version": 4}}))["subnet"]
    await api.ok("admin", "POST", "/v2.0/subnets", {"subnet": {
        "network_id": net["id"], "cidr": "10.2.0.0/24", "ip_version": 4,
        "enable_dhcp": False}})
    await api.ok("admin", "POST", "/v2.0/subnets", {"subnet": {
        "network_id": net["id"], "cidr": "fd00:1::/64", "ip_version": 6}})
    (port,) = await meta_ports(api, net["id"])
    assert sorted(f["subnet_id"] for f in port["fixed_ips"]) == sorted([sub["id"],
                                                                        second["id"]])
    # Subnet and network deletes are not blocked by it, and it goes with the last subnet.
    await api.ok("admin", "DELETE", f"/v2.0/subnets/{second['id']}")
    (port,) = await meta_ports(api, net["id"])
    assert [f["subnet_id"] for f in port["fixed_ips"]] == [sub["id"]]
    await api.ok("admin", "DELETE", f"/v2.0/subnets/{sub['id']}")
    assert await meta_ports(api, net["id"]) == []
    await api.ok("admin", "DELETE", f"/v2.0/networks/{net['id']}")


async def test_network_without_subnet_has_none(api: Api) -> None:
    net, _ = await make_network(api, "admin", "bare")
    assert await meta_ports(api, net["id"]) == []


async def test_mode_switch_sweep_creates_and_removes_every_port(api: Api, store: Store) -> None:
    a, _ = await make_network(api, "admin", "a", "10.0.0.0/24")
    b, _ = await make_network(api, "admin", "b", "10.0.0.0/24")
    assert sync_all_metadata_ports(store, "distributed") == 0  # already right: no write
    assert sync_all_metadata_ports(store, "network_node") == 2
    assert await meta_ports(api, a["id"]) == [] and await meta_ports(api, b["id"]) == []
    assert sync_all_metadata_ports(store, "distributed") == 2
    assert len(await meta_ports(api, a["id"])) == 1 and len(await meta_ports(api, b["id"])) == 1
