"""metadata_mode = distributed: one network:distributed port per network with a DHCP-enabled
IPv4 subnet, kept by subnet writes and by the control API's start-up sweep (mode switch)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from openimds.control.call import Settings
from openimds.control.distributed_metadata import next_retirement, sync_all_metadata_ports
from openimds.inventory.store import Store
from openimds.metadata_retirement import RETIRING_KEY

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


async def test_mode_switch_sweep_creates_retires_and_removes_every_port(
        api: Api, store: Store) -> None:
    a, _ = await make_network(api, "admin", "a", "10.0.0.0/24")
    b, _ = await make_network(api, "admin", "b", "10.0.0.0/24")
    assert sync_all_metadata_ports(store, "distributed") == 0  # already right: no write
    (port_a,) = await meta_ports(api, a["id"])
    # Back to network_node: both ports retire for one lease time, addresses kept.
    t0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    assert sync_all_metadata_ports(store, "network_node", lease_seconds=600, now=t0) == 2
    (retiring,) = await meta_ports(api, a["id"])
    assert retiring["binding:profile"] == {RETIRING_KEY: "2026-01-01T12:10:00Z"}
    assert retiring["fixed_ips"] == port_a["fixed_ips"]
    assert next_retirement(store) == t0 + timedelta(seconds=600)
    # A later sweep before the deadline changes nothing (the deadline does not move).
    assert sync_all_metadata_ports(store, "network_node", lease_seconds=600,
                                   now=t0 + timedelta(seconds=599)) == 0
    # Distributed again before the deadline: the same port and address serve again.
    assert sync_all_metadata_ports(store, "distributed", now=t0) == 2
    (again,) = await meta_ports(api, a["id"])
    assert again["id"] == port_a["id"] and again["binding:profile"] == {}
    assert next_retirement(store) is None
    # Retire, then at the deadline the ports go.
    assert sync_all_metadata_ports(store, "network_node", lease_seconds=600, now=t0) == 2
    assert sync_all_metadata_ports(store, "network_node", lease_seconds=600,
                                   now=t0 + timedelta(seconds=600)) == 2
    assert await meta_ports(api, a["id"]) == [] and await meta_ports(api, b["id"]) == []
    assert next_retirement(store) is None
    assert sync_all_metadata_ports(store, "distributed") == 2
    assert len(await meta_ports(api, a["id"])) == 1 and len(await meta_ports(api, b["id"])) == 1


async def test_retiring_port_with_infinite_leases_stays(api: Api, store: Store) -> None:
    net, _ = await make_network(api, "admin", "inf", "10.0.0.0/24")
    assert sync_all_metadata_ports(store, "network_node", lease_seconds=-1) == 1
    (port,) = await meta_ports(api, net["id"])
    assert port["binding:profile"] == {RETIRING_KEY: "never"}
    assert next_retirement(store) is None  # nothing to wake up for
    far = datetime(2100, 1, 1, tzinfo=UTC)
    assert sync_all_metadata_ports(store, "network_node", lease_seconds=-1, now=far) == 0


@pytest.mark.parametrize("settings", [Settings(metadata_mode="network_node")])
async def test_retiring_port_takes_no_address_on_a_new_subnet(api: Api, store: Store) -> None:
    net, sub = await make_network(api, "admin", "r", "10.0.0.0/24")
    assert sub is not None
    assert await meta_ports(api, net["id"]) == []  # network_node: none created
    sync_all_metadata_ports(store, "distributed")
    sync_all_metadata_ports(store, "network_node", lease_seconds=600)
    await api.ok("admin", "POST", "/v2.0/subnets", {"subnet": {
        "network_id": net["id"], "cidr": "10.1.0.0/24", "ip_version": 4}})
    (port,) = await meta_ports(api, net["id"])
    assert [f["subnet_id"] for f in port["fixed_ips"]] == [sub["id"]]
    assert RETIRING_KEY in port["binding:profile"]
