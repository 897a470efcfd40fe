"""Networks, subnets, ports and routers through the HTTP API."""

from __future__ import annotations

from typing import Any

import pytest

from .conftest import Api, make_network


def ips(port: dict[str, Any]) -> list[str]:
    return [f["ip_address"] for f in port["fixed_ips"]]


async def ports_of(api: Api, user: str, **filters: str) -> list[dict[str, Any]]:
    return list((await api.ok(user, "GET", "/v2.0/ports", params=filters))["ports"])


# ---- networks -----------------------------------------------------------------------------


async def test_network_crud(api: Api) -> None:
    net = (await api.ok("alice", "POST", "/v2.0/networks",
                        {"network": {"name": "n1", "mtu": 1450}}))["network"]
    assert net["name"] == "n1" and net["mtu"] == 1450 and net["subnets"] == []
    assert net["tenant_id"] == net["project_id"]
    assert net["created_at"].endswith("Z")
    shown = (await api.ok("alice", "GET", f"/v2.0/networks/{net['id']}"))["network"]
    assert shown == net
    upd = (await api.ok("alice", "PUT", f"/v2.0/networks/{net['id']}",
                        {"network": {"name": "n2", "admin_state_up": False}}))["network"]
    assert upd["name"] == "n2" and upd["admin_state_up"] is False
    listed = (await api.ok("alice", "GET", "/v2.0/networks", params={"name": "n2"}))["networks"]
    assert [n["id"] for n in listed] == [net["id"]]
    assert (await api.ok("alice", "GET", "/v2.0/networks",
                         params={"name": "n1"}))["networks"] == []
    await api.ok("alice", "DELETE", f"/v2.0/networks/{net['id']}")
    status, body = await api.call("alice", "GET", f"/v2.0/networks/{net['id']}")
    assert status == 404 and body["NeutronError"]["type"] == "NetworkNotFound"


async def test_network_list_fields_and_bool_filters(api: Api) -> None:
    await make_network(api, "alice", "up")
    down = (await api.ok("alice", "POST", "/v2.0/networks",
                         {"network": {"name": "down", "admin_state_up": False}}))["network"]
    got = (await api.ok("alice", "GET", "/v2.0/networks",
                        params=[("admin_state_up", "false"), ("fields", "id"),
                                ("fields", "name")]))["networks"]
    assert got == [{"id": down["id"], "name": "down"}]
    status, _ = await api.call("alice", "GET", "/v2.0/networks", params={"bogus": "1"})
    assert status == 400
    status, _ = await api.call("alice", "GET", "/v2.0/networks",
                               params={"admin_state_up": "maybe"})
    assert status == 400


async def test_network_in_use_is_409_and_nothing_changes(api: Api) -> None:
    net, _ = await make_network(api, "alice", "n", "10.0.0.0/24")
    port = (await api.ok("alice", "POST", "/v2.0/ports",
                         {"port": {"network_id": net["id"]}}))["port"]
    status, body = await api.call("alice", "DELETE", f"/v2.0/networks/{net['id']}")
    assert status == 409 and body["NeutronError"]["type"] == "NetworkInUse"
    assert (await api.ok("alice", "GET", f"/v2.0/networks/{net['id']}"))["network"]["subnets"]
    assert len(await ports_of(api, "alice", network_id=net["id"])) == 2  # DHCP + ours
    await api.ok("alice", "DELETE", f"/v2.0/ports/{port['id']}")
    # Only the DHCP port is left: the network goes, with its subnets and DHCP port.
    await api.ok("alice", "DELETE", f"/v2.0/networks/{net['id']}")
    assert await ports_of(api, "admin", network_id=net["id"]) == []
    assert (await api.ok("admin", "GET", "/v2.0/subnets",
                         params={"network_id": net["id"]}))["subnets"] == []


@pytest.mark.parametrize("body", [
    {"network": {"name": 5}}, {"network": {"mtu": 10}}, {"network": {"bogus": 1}},
    {"network": []}, {"networks": {}}, {"network": {"admin_state_up": "yes"}},
    {"network": {"name": "a\x00b"}}, {"network": {"name": "x" * 256}},
])
async def test_network_validation_is_400(api: Api, body: Any) -> None:
    status, err = await api.call("alice", "POST", "/v2.0/networks", body)
    assert status == 400, err
    assert err["NeutronError"]["message"]


async def test_only_admin_creates_shared_networks_visible_to_all(api: Api) -> None:
    status, _ = await api.call("alice", "POST", "/v2.0/networks", {"network": {"shared": True}})
    assert status == 403
    net = (await api.ok("admin", "POST", "/v2.0/networks",
                        {"network": {"name": "public", "shared": True}}))["network"]
    await api.ok("admin", "POST", "/v2.0/subnets", {"subnet": {
        "network_id": net["id"], "cidr": "198.51.100.0/24", "enable_dhcp": False}})
    assert (await api.ok("bob", "GET", f"/v2.0/networks/{net['id']}"))["network"]["shared"]
    port = (await api.ok("bob", "POST", "/v2.0/ports",
                         {"port": {"network_id": net["id"]}}))["port"]
    assert ips(port) == ["198.51.100.2"]
    status, _ = await api.call("bob", "DELETE", f"/v2.0/networks/{net['id']}")
    assert status == 404


# ---- subnets and the DHCP port ----------------------------------------------------------------


async def test_subnet_defaults_like_neutron(api: Api) -> None:
    _, sub = await make_network(api, "alice", "n", "10.1.0.0/24")
    assert sub is not None
    assert sub["gateway_ip"] == "10.1.0.1"
    assert sub["allocation_pools"] == [{"start": "10.1.0.2", "end": "10.1.0.254"}]
    assert sub["enable_dhcp"] is True and sub["ip_version"] == 4


async def test_dhcp_port_takes_first_pool_address(api: Api) -> None:
    net, _ = await make_network(api, "alice", "gw", "172.31.0.0/24")
    dhcp = await ports_of(api, "alice", network_id=net["id"], device_owner="network:dhcp")
    assert [ips(p) for p in dhcp] == [["172.31.0.2"]]
    net2, _ = await make_network(api, "alice", "nogw", "192.168.111.0/24", gateway_ip=None)
    dhcp2 = await ports_of(api, "alice", network_id=net2["id"], device_owner="network:dhcp")
    assert [ips(p) for p in dhcp2] == [["192.168.111.1"]]
    assert dhcp2[0]["device_id"] == f"dhcp-{net2['id']}"


async def test_one_dhcp_port_follows_dhcp_subnets(api: Api) -> None:
    net, s1 = await make_network(api, "alice", "n", "10.0.0.0/24")
    assert s1 is not None
    s2 = (await api.ok("alice", "POST", "/v2.0/subnets", {"subnet": {
        "network_id": net["id"], "cidr": "10.0.1.0/24"}}))["subnet"]
    s3 = (await api.ok("alice", "POST", "/v2.0/subnets", {"subnet": {
        "network_id": net["id"], "cidr": "10.0.2.0/24", "enable_dhcp": False}}))["subnet"]
    dhcp = await ports_of(api, "alice", device_owner="network:dhcp")
    assert len(dhcp) == 1
    assert sorted(ips(dhcp[0])) == ["10.0.0.2", "10.0.1.2"]
    await api.ok("alice", "PUT", f"/v2.0/subnets/{s3['id']}", {"subnet": {"enable_dhcp": True}})
    await api.ok("alice", "PUT", f"/v2.0/subnets/{s1['id']}", {"subnet": {"enable_dhcp": False}})
    dhcp = await ports_of(api, "alice", device_owner="network:dhcp")
    assert sorted(ips(dhcp[0])) == ["10.0.1.2", "10.0.2.2"]
    await api.ok("alice", "DELETE", f"/v2.0/subnets/{s2['id']}")
    await api.ok("alice", "DELETE", f"/v2.0/subnets/{s3['id']}")
    assert await ports_of(api, "alice", device_owner="network:dhcp") == []


async def test_overlapping_subnet_on_one_network_is_409_on_two_networks_fine(api: Api) -> None:
    net, _ = await make_network(api, "alice", "n", "10.0.0.0/24")
    status, body = await api.call("alice", "POST", "/v2.0/subnets", {"subnet": {
        "network_id": net["id"], "cidr": "10.0.0.128/25"}})
    assert status == 409 and body["NeutronError"]["type"] == "OverlappingSubnet"
    await make_network(api, "alice", "other", "10.0.0.0/24")  # tenants reuse addresses
    assert len((await api.ok("alice", "GET", "/v2.0/subnets",
                             params={"network_id": net["id"]}))["subnets"]) == 1


@pytest.mark.parametrize("extra,fragment", [
    ({"cidr": "10.0.0.1/24"}, "did you mean 10.0.0.0/24"),
    ({"cidr": "nonsense"}, "not a valid CIDR"),
    ({"cidr": "10.0.0.0/24", "ip_version": 6}, "not an IPv6"),
    ({"cidr": "10.0.0.0/24", "gateway_ip": "10.9.9.9"}, "not inside"),
    ({"cidr": "10.0.0.0/24", "allocation_pools": [{"start": "10.0.0.1", "end": "10.0.0.9"}]},
     "conflicts with allocation pool"),
    ({"cidr": "10.0.0.0/24", "allocation_pools": [{"start": "10.0.1.1", "end": "10.0.1.9"}]},
     "spans beyond"),
    ({"cidr": "10.0.0.0/24", "host_routes": [{"destination": "x", "nexthop": "10.0.0.1"}]},
     "not a valid CIDR"),
    ({"cidr": "10.0.0.0/24", "dns_nameservers": ["8.8.8.8", "8.8.8.8"]}, "Duplicate"),
    ({}, "Required attribute 'cidr'"),
])
async def test_subnet_validation_is_400(api: Api, extra: dict[str, Any], fragment: str) -> None:
    net, _ = await make_network(api, "alice", "n")
    status, body = await api.call("alice", "POST", "/v2.0/subnets",
                                  {"subnet": {"network_id": net["id"], **extra}})
    assert status == 400, body
    assert fragment in body["NeutronError"]["message"]


async def test_subnet_options_round_trip(api: Api) -> None:
    net, _ = await make_network(api, "alice", "n")
    sub = (await api.ok("alice", "POST", "/v2.0/subnets", {"subnet": {
        "network_id": net["id"], "cidr": "10.5.0.0/24", "gateway_ip": "10.5.0.254",
        "host_routes": [{"destination": "10.6.0.0/16", "nexthop": "10.5.0.10"}],
        "dns_nameservers": ["10.5.0.53"]}}))["subnet"]
    assert sub["allocation_pools"] == [{"start": "10.5.0.1", "end": "10.5.0.253"}]
    assert sub["host_routes"] == [{"destination": "10.6.0.0/16", "nexthop": "10.5.0.10"}]
    assert sub["dns_nameservers"] == ["10.5.0.53"]
    v6 = (await api.ok("alice", "POST", "/v2.0/subnets", {"subnet": {
        "network_id": net["id"], "cidr": "fd00:1::/64", "ip_version": 6}}))["subnet"]
    assert v6["gateway_ip"] == "fd00:1::1"
    assert v6["allocation_pools"] == [{"start": "fd00:1::2",
                                       "end": "fd00:1::ffff:ffff:ffff:ffff"}]


async def test_subnet_in_use_is_409(api: Api) -> None:
    net, sub = await make_network(api, "alice", "n", "10.0.0.0/24")
    assert sub is not None
    await api.ok("alice", "POST", "/v2.0/ports", {"port": {"network_id": net["id"]}})
    status, body = await api.call("alice", "DELETE", f"/v2.0/subnets/{sub['id']}")
    assert status == 409 and body["NeutronError"]["type"] == "SubnetInUse"


# ---- ports -----------------------------------------------------------------------------------


async def test_port_crud_and_fixed_ip_lookup(api: Api) -> None:
    net, sub = await make_network(api, "alice", "n", "10.0.0.0/24")
    assert sub is not None
    a = (await api.ok("alice", "POST", "/v2.0/ports", {"port": {
        "network_id": net["id"], "name": "a", "device_id": "vm-1",
        "device_owner": "compute:nova"}}))["port"]
    assert ips(a) == ["10.0.0.3"]  # .1 gateway, .2 DHCP
    assert a["mac_address"].startswith("fa:16:3e:")
    b = (await api.ok("alice", "POST", "/v2.0/ports", {"port": {
        "network_id": net["id"], "fixed_ips": [{"ip_address": "10.0.0.5"}],
        "mac_address": "FA-16-3E-00-00-05"}}))["port"]
    assert ips(b) == ["10.0.0.5"] and b["mac_address"] == "fa:16:3e:00:00:05"
    assert b["fixed_ips"][0]["subnet_id"] == sub["id"]
    found = await ports_of(api, "neutron", network_id=net["id"],
                           fixed_ips="ip_address=10.0.0.5")
    assert [p["id"] for p in found] == [b["id"]]
    # Same address on another tenant's network: the network filter tells them apart.
    other, _ = await make_network(api, "bob", "n", "10.0.0.0/24")
    await api.ok("bob", "POST", "/v2.0/ports", {"port": {
        "network_id": other["id"], "fixed_ips": [{"ip_address": "10.0.0.5"}]}})
    assert len(await ports_of(api, "admin", fixed_ips="ip_address=10.0.0.5")) == 2
    assert [p["id"] for p in await ports_of(api, "admin", network_id=net["id"],
                                            fixed_ips="ip_address=10.0.0.5")] == [b["id"]]
    assert [p["id"] for p in await ports_of(api, "alice", device_id="vm-1")] == [a["id"]]
    upd = (await api.ok("alice", "PUT", f"/v2.0/ports/{a['id']}", {"port": {
        "fixed_ips": [{"subnet_id": sub["id"], "ip_address": "10.0.0.3"},
                      {"subnet_id": sub["id"], "ip_address": "10.0.0.9"}],
        "name": "a2"}}))["port"]
    assert sorted(ips(upd)) == ["10.0.0.3", "10.0.0.9"] and upd["name"] == "a2"
    await api.ok("alice", "DELETE", f"/v2.0/ports/{a['id']}")
    # The freed addresses are handed out again.
    c = (await api.ok("alice", "POST", "/v2.0/ports",
                      {"port": {"network_id": net["id"]}}))["port"]
    assert ips(c) == ["10.0.0.3"]


async def test_ip_in_use_and_bad_fixed_ips(api: Api) -> None:
    net, sub = await make_network(api, "alice", "n", "10.0.0.0/24")
    assert sub is not None
    await api.ok("alice", "POST", "/v2.0/ports", {"port": {
        "network_id": net["id"], "fixed_ips": [{"ip_address": "10.0.0.7"}]}})
    status, body = await api.call("alice", "POST", "/v2.0/ports", {"port": {
        "network_id": net["id"], "fixed_ips": [{"ip_address": "10.0.0.7"}]}})
    assert status == 409 and body["NeutronError"]["type"] == "IpAddressInUse"
    for fixed, code in (([{"ip_address": "10.9.0.1"}], 400),
                        ([{"ip_address": "10.0.0.255"}], 400),
                        ([{"ip_address": "10.0.0.1"}], 409),       # the gateway
                        ([{"subnet_id": "nope"}], 400),
                        ([{}], 400), (["x"], 400), ("x", 400)):
        status, body = await api.call("alice", "POST", "/v2.0/ports", {"port": {
            "network_id": net["id"], "fixed_ips": fixed}})
        assert status == code, (fixed, body)
    # None of the failures left a port behind.
    assert len(await ports_of(api, "alice", network_id=net["id"])) == 2


async def test_pool_exhaustion_is_409(api: Api) -> None:
    net, _ = await make_network(api, "alice", "tiny", "10.0.0.0/29", enable_dhcp=False)
    got = []
    for _ in range(5):  # .2 .. .6 (.1 is the gateway, .7 broadcast)
        got += ips((await api.ok("alice", "POST", "/v2.0/ports",
                                 {"port": {"network_id": net["id"]}}))["port"])
    assert got == [f"10.0.0.{i}" for i in range(2, 7)]
    status, body = await api.call("alice", "POST", "/v2.0/ports",
                                  {"port": {"network_id": net["id"]}})
    assert status == 409 and body["NeutronError"]["type"] == "IpAddressGenerationFailure"


async def test_member_cannot_make_network_owned_ports(api: Api) -> None:
    net, _ = await make_network(api, "alice", "n", "10.0.0.0/24")
    status, _ = await api.call("alice", "POST", "/v2.0/ports", {"port": {
        "network_id": net["id"], "device_owner": "network:router_interface"}})
    assert status == 403


# ---- routers --------------------------------------------------------------------------------


async def test_router_interface_takes_gateway_and_detaches(api: Api) -> None:
    net, sub = await make_network(api, "alice", "n", "172.31.0.0/24")
    assert sub is not None
    router = (await api.ok("alice", "POST", "/v2.0/routers",
                           {"router": {"name": "r"}}))["router"]
    rid = router["id"]
    info = await api.ok("alice", "PUT", f"/v2.0/routers/{rid}/add_router_interface",
                        {"subnet_id": sub["id"]}, status=200)
    assert info["subnet_id"] == sub["id"] and info["id"] == rid
    port = (await api.ok("alice", "GET", f"/v2.0/ports/{info['port_id']}"))["port"]
    assert ips(port) == ["172.31.0.1"]
    assert port["device_owner"] == "network:router_interface" and port["device_id"] == rid
    # Second attach of the same subnet, deleting the interface port or the router: refused.
    status, _ = await api.call("alice", "PUT", f"/v2.0/routers/{rid}/add_router_interface",
                               {"subnet_id": sub["id"]})
    assert status == 400
    status, body = await api.call("alice", "DELETE", f"/v2.0/ports/{port['id']}")
    assert status == 409
    status, body = await api.call("alice", "DELETE", f"/v2.0/routers/{rid}")
    assert status == 409 and body["NeutronError"]["type"] == "RouterInUse"
    await api.ok("alice", "PUT", f"/v2.0/routers/{rid}/remove_router_interface",
                 {"subnet_id": sub["id"]}, status=200)
    status, _ = await api.call("alice", "GET", f"/v2.0/ports/{port['id']}")
    assert status == 404
    status, _ = await api.call("alice", "PUT", f"/v2.0/routers/{rid}/remove_router_interface",
                               {"subnet_id": sub["id"]})
    assert status == 404
    await api.ok("alice", "DELETE", f"/v2.0/routers/{rid}")


async def test_router_interface_on_subnet_without_gateway_is_a_clear_400(api: Api) -> None:
    _, sub = await make_network(api, "alice", "n", "192.168.111.0/24", gateway_ip=None)
    assert sub is not None
    router = (await api.ok("alice", "POST", "/v2.0/routers", {"router": {}}))["router"]
    status, body = await api.call("alice", "PUT",
                                  f"/v2.0/routers/{router['id']}/add_router_interface",
                                  {"subnet_id": sub["id"]})
    assert status == 400
    assert "must have a gateway IP" in body["NeutronError"]["message"]
    assert await ports_of(api, "alice", device_owner="network:router_interface") == []


async def test_router_interface_by_port(api: Api) -> None:
    net, sub = await make_network(api, "alice", "n", "10.0.0.0/24")
    port = (await api.ok("alice", "POST", "/v2.0/ports", {"port": {
        "network_id": net["id"], "fixed_ips": [{"ip_address": "10.0.0.254"}]}}))["port"]
    router = (await api.ok("alice", "POST", "/v2.0/routers", {"router": {}}))["router"]
    rid = router["id"]
    for body in ({}, {"subnet_id": "x", "port_id": "y"}, {"bogus": 1}):
        status, _ = await api.call("alice", "PUT", f"/v2.0/routers/{rid}/add_router_interface",
                                   body)
        assert status == 400
    info = await api.ok("alice", "PUT", f"/v2.0/routers/{rid}/add_router_interface",
                        {"port_id": port["id"]}, status=200)
    assert info["port_id"] == port["id"]
    shown = (await api.ok("alice", "GET", f"/v2.0/ports/{port['id']}"))["port"]
    assert shown["device_id"] == rid
    await api.ok("alice", "PUT", f"/v2.0/routers/{rid}/remove_router_interface",
                 {"port_id": port["id"]}, status=200)


async def test_router_crud(api: Api) -> None:
    router = (await api.ok("bob", "POST", "/v2.0/routers", {"router": {"name": "r1"}}))["router"]
    assert router["status"] == "ACTIVE" and router["external_gateway_info"] is None
    upd = (await api.ok("bob", "PUT", f"/v2.0/routers/{router['id']}",
                        {"router": {"name": "r2"}}))["router"]
    assert upd["name"] == "r2"
    assert [r["name"] for r in (await api.ok("bob", "GET", "/v2.0/routers"))["routers"]] == [
        "r2"]
    status, _ = await api.call("bob", "POST", "/v2.0/routers", {"router": {
        "external_gateway_info": {"network_id": "x"}}})
    assert status == 400


async def test_port_security_and_allowed_address_pairs(api: Api) -> None:
    net, _ = await make_network(api, "alice", "n", "10.0.0.0/24")
    p = (await api.ok("alice", "POST", "/v2.0/ports", {"port": {
        "network_id": net["id"]}}))["port"]
    # Neutron's default: on, no pairs.
    assert p["port_security_enabled"] is True and p["allowed_address_pairs"] == []
    upd = (await api.ok("alice", "PUT", f"/v2.0/ports/{p['id']}", {"port": {
        "allowed_address_pairs": [{"ip_address": "10.0.0.100/32"},
                                  {"ip_address": "10.1.0.0/24",
                                   "mac_address": "FA:16:3E:00:00:99"}]}}))["port"]
    assert upd["allowed_address_pairs"] == [
        {"ip_address": "10.0.0.100"},
        {"ip_address": "10.1.0.0/24", "mac_address": "fa:16:3e:00:00:99"}]
    shown = (await api.ok("alice", "GET", f"/v2.0/ports/{p['id']}"))["port"]
    assert shown["allowed_address_pairs"] == upd["allowed_address_pairs"]
    # Pairs need port security (Neutron's 409), and bad pairs are a precise 400.
    status, body = await api.call("alice", "PUT", f"/v2.0/ports/{p['id']}", {"port": {
        "port_security_enabled": False}})
    assert status == 409 and body["NeutronError"]["type"] == "AddressPairAndPortSecurityRequired"
    for bad in ([{"ip_address": "10.0.0.300"}], [{"mac_address": "fa:16:3e:00:00:01"}],
                [{"ip_address": "10.0.0.7", "mac_address": "nope"}], "10.0.0.7",
                [{"ip_address": "10.0.0.7"}, {"ip_address": "10.0.0.7/32"}]):
        status, body = await api.call("alice", "PUT", f"/v2.0/ports/{p['id']}", {"port": {
            "allowed_address_pairs": bad}})
        assert status == 400, (bad, body)
        assert "allowed_address_pairs" in body["NeutronError"]["message"] or \
            "Duplicate" in body["NeutronError"]["message"]
    off = (await api.ok("alice", "PUT", f"/v2.0/ports/{p['id']}", {"port": {
        "port_security_enabled": False, "allowed_address_pairs": []}}))["port"]
    assert off["port_security_enabled"] is False and off["allowed_address_pairs"] == []
    created = (await api.ok("alice", "POST", "/v2.0/ports", {"port": {
        "network_id": net["id"], "port_security_enabled": False}}))["port"]
    assert created["port_security_enabled"] is False
