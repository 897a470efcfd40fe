"""The metadata next hop port (issue 11 item 2, control/metadata_vip.py): when it exists, as a
table, and through the API as DHCP agents, subnets and networks come and go."""

from __future__ import annotations

from typing import Any

import pytest

from openimds.control.call import Settings
from openimds.control.metadata_vip import wants_metadata_vip
from openimds.inventory.store import Store

from .conftest import Api, make_network
from .test_dhcp_scheduling_api import dhcp_ports, register


@pytest.mark.parametrize(("subnets", "dhcp", "exists", "want"), [
    (1, 2, False, True),  # two DHCP agents: created
    (1, 3, False, True),
    (1, 1, False, False),  # one agent: a DHCP port's own address is as good
    (1, 0, False, False),
    (1, 1, True, True),  # back to one agent: guests still hold the address
    (1, 0, True, True),
    (0, 2, True, False),  # no DHCP-enabled IPv4 subnet left: nothing to route
    (0, 2, False, False),
])
def test_wants_metadata_vip(subnets: int, dhcp: int, exists: bool, want: bool) -> None:
    assert wants_metadata_vip(subnets, dhcp, exists) is want


@pytest.fixture
def settings() -> Settings:
    return Settings(dhcp_agents_per_network=2, agent_down_time=30)


async def vip_ports(api: Api, net_id: str) -> list[dict[str, Any]]:
    return list((await api.ok("admin", "GET", "/v2.0/ports", params={
        "network_id": net_id, "device_owner": "network:metadata"}))["ports"])


async def test_the_port_follows_the_dhcp_agents_and_subnets(api: Api, store: Store) -> None:
    a1 = await register(api, "net-1")
    net, sub = await make_network(api, "alice", "n", "10.7.0.0/24")
    assert sub is not None
    assert await vip_ports(api, net["id"]) == []  # one DHCP agent
    await register(api, "net-2")  # a starting agent takes the network: two DHCP ports
    (vip,) = await vip_ports(api, net["id"])
    assert vip["device_id"] == f"metadata-{net['id']}"
    assert vip["binding:host_id"] == ""  # unbound: keepalived decides where it lives
    ((fip,),) = [vip["fixed_ips"]]
    assert fip["subnet_id"] == sub["id"]
    dhcp_ips = {p["fixed_ips"][0]["ip_address"] for p in await dhcp_ports(api, net["id"])}
    assert fip["ip_address"] not in dhcp_ips | {sub["gateway_ip"]}

    # A second IPv4 subnet gets an address; an IPv6 subnet none.
    sub2 = (await api.ok("alice", "POST", "/v2.0/subnets", {"subnet": {
        "network_id": net["id"], "cidr": "10.8.0.0/24", "ip_version": 4}}))["subnet"]
    await api.ok("alice", "POST", "/v2.0/subnets", {"subnet": {
        "network_id": net["id"], "cidr": "fd00:7::/64", "ip_version": 6,
        "ipv6_address_mode": "dhcpv6-stateful", "ipv6_ra_mode": "dhcpv6-stateful"}})
    (vip2,) = await vip_ports(api, net["id"])
    assert vip2["id"] == vip["id"]
    assert sorted(f["subnet_id"] for f in vip2["fixed_ips"]) == sorted([sub["id"], sub2["id"]])
    assert fip in vip2["fixed_ips"]  # the address guests hold is kept

    # Back to one DHCP agent: the port stays, with the same address.
    await api.ok("admin", "DELETE", f"/v2.0/agents/{a1}/dhcp-networks/{net['id']}")
    assert len(await dhcp_ports(api, net["id"])) == 1
    (vip3,) = await vip_ports(api, net["id"])
    assert vip3["id"] == vip["id"] and fip in vip3["fixed_ips"]

    # DHCP off on one subnet: its address goes; the subnet can be deleted (the port is the
    # network's own, it does not hold the subnet).
    await api.ok("alice", "PUT", f"/v2.0/subnets/{sub2['id']}",
                 {"subnet": {"enable_dhcp": False}})
    assert [f["subnet_id"] for f in (await vip_ports(api, net["id"]))[0]["fixed_ips"]] == [
        sub["id"]]
    await api.ok("alice", "DELETE", f"/v2.0/subnets/{sub['id']}")
    assert await vip_ports(api, net["id"]) == []
    await api.ok("alice", "DELETE", f"/v2.0/networks/{net['id']}")


async def test_the_network_goes_with_its_metadata_port(api: Api) -> None:
    await register(api, "net-1")
    await register(api, "net-2")
    net, _ = await make_network(api, "alice", "n", "10.9.0.0/24")
    assert len(await vip_ports(api, net["id"])) == 1
    await api.ok("alice", "DELETE", f"/v2.0/networks/{net['id']}")
    assert await vip_ports(api, net["id"]) == []
