"""Map mode, pure: what a namespace's identity map holds, its edits and its file (no sockets)."""

from __future__ import annotations

import dataclasses

import pytest

from openimds.agent.index import PortEntry, PortIndex, PortRemoved, PortUpsert
from openimds.agent.maps import (
    desired_map,
    diff_map,
    link_local_from_mac,
    map_file_text,
    map_target,
)
from openimds.agent.resolve import AgentRequest, mac_from_link_local, resolve
from openimds.proxy.haproxy import Connections, proxy_spec_for_network, render_haproxy_cfg
from openimds.proxy.runtime_api import MapEdit, parse_show_map
from openimds.wire import sign_instance_id

IFACE = "network:router_interface"
SECRET = "s3cret"


def port(pid: str, net: str, *ips: str, device: str, owner: str = "compute:nova",
         project: str = "proj", mac: str = "fa:16:3e:00:00:01") -> PortEntry:
    return PortEntry.from_api({
        "id": pid, "network_id": net, "mac_address": mac,
        "fixed_ips": [{"subnet_id": "s", "ip_address": ip} for ip in ips],
        "device_id": device, "device_owner": owner, "project_id": project,
    })


def value(instance: str, project: str) -> str:
    return f"{instance}|{project}|{sign_instance_id(SECRET, instance)}"


@pytest.fixture
def index() -> PortIndex:
    idx = PortIndex()
    idx.replace(1, [
        port("p-a", "net-a", "10.0.0.5", "2001:db8::5", device="vm-a", project="proj-a",
             mac="fa:16:3e:00:00:0a"),
        port("p-b", "net-b", "10.0.0.5", device="vm-b", project="proj-b", mac="fa:16:3e:00:00:0b"),
        port("p-c", "net-c", "10.1.0.7", device="vm-c", project="proj-a", mac="fa:16:3e:00:00:0c"),
        port("ri-a", "net-a", "10.0.0.1", device="r1", owner=IFACE, mac="fa:16:3e:00:01:0a"),
        port("ri-c", "net-c", "10.1.0.1", device="r1", owner=IFACE, mac="fa:16:3e:00:01:0c"),
        port("dhcp", "net-a", "10.0.0.2", device="dhcp-net-a", owner="network:dhcp",
             mac="fa:16:3e:00:02:0a"),
        port("dup1", "net-d", "10.4.0.9", device="vm-d1", mac="fa:16:3e:00:00:d1"),
        port("dup2", "net-d", "10.4.0.9", device="vm-d2", mac="fa:16:3e:00:00:d2"),
        port("bad", "net-f", "10.6.0.3", device="vm f", mac="fa:16:3e:00:00:0f"),
    ], routers=["r1", "r-empty"])
    return idx


def ll(mac: str) -> str:
    addr = link_local_from_mac(mac)
    assert addr is not None
    return addr


def test_link_local_is_the_inverse_of_the_agents_mac_rule() -> None:
    import ipaddress
    assert ll("52:54:00:de:5b:bf") == "fe80::5054:ff:fede:5bbf"
    for mac in ("fa:16:3e:00:00:0a", "00:00:00:00:00:00", "ff:ff:ff:ff:ff:ff"):
        assert mac_from_link_local(ipaddress.IPv6Address(ll(mac))) == mac
    assert link_local_from_mac("") is None
    assert link_local_from_mac("fa:16:3e") is None
    assert link_local_from_mac("zz:16:3e:00:00:0a") is None


def test_network_map_holds_its_instances_addresses_only(index: PortIndex) -> None:
    # The router interface and DHCP port of net-a are no instances: absent, as they are 404.
    assert desired_map(index, "network", "net-a", SECRET) == {
        "10.0.0.5": value("vm-a", "proj-a"),
        "2001:db8::5": value("vm-a", "proj-a"),
        ll("fa:16:3e:00:00:0a"): value("vm-a", "proj-a"),
    }


def test_overlapping_addresses_are_separate_maps(index: PortIndex) -> None:
    a = desired_map(index, "network", "net-a", SECRET)
    b = desired_map(index, "network", "net-b", SECRET)
    assert a["10.0.0.5"] == value("vm-a", "proj-a")
    assert b["10.0.0.5"] == value("vm-b", "proj-b")


def test_router_map_spans_its_interface_networks(index: PortIndex) -> None:
    got = desired_map(index, "router", "r1", SECRET)
    assert got["10.0.0.5"] == value("vm-a", "proj-a")
    assert got["10.1.0.7"] == value("vm-c", "proj-a")
    assert "10.0.0.1" not in got  # the router's own port
    # net-b has no interface on r1: its guest is not in r1's map, whatever its address.
    assert value("vm-b", "proj-b") not in got.values()
    assert desired_map(index, "router", "r-empty", SECRET) == {}
    assert desired_map(index, "router", "unknown", SECRET) == {}


def test_ambiguous_and_unsafe_entries_are_left_out(index: PortIndex) -> None:
    # Two ports hold 10.4.0.9: the agent answers 404 (and logs), so no entry; each port's
    # link-local address is still its own.
    got = desired_map(index, "network", "net-d", SECRET)
    assert "10.4.0.9" not in got
    assert got[ll("fa:16:3e:00:00:d1")] == value("vm-d1", "proj")
    # An id with a space could not travel as one token: left out.
    assert desired_map(index, "network", "net-f", SECRET) == {}


@pytest.mark.parametrize("kind, scope", [("network", "net-a"), ("network", "net-b"),
                                         ("network", "net-d"), ("router", "r1")])
def test_every_key_is_what_the_agent_resolves(index: PortIndex, kind: str, scope: str) -> None:
    for addr, val in desired_map(index, kind, scope, SECRET).items():  # type: ignore[arg-type]
        req = AgentRequest(forwarded_for=(addr,), network_ids=(scope,) if kind == "network"
                           else (), router_ids=(scope,) if kind == "router" else ())
        res = resolve(req, index)
        assert val == value(res.instance_id, res.project_id)


def test_a_port_change_changes_the_map(index: PortIndex) -> None:
    moved = dataclasses.replace(index.port("p-a"), device_id="vm-a2")  # type: ignore[arg-type]
    index.apply(PortUpsert(moved))
    assert desired_map(index, "network", "net-a", SECRET)["10.0.0.5"] == value("vm-a2", "proj-a")
    index.apply(PortRemoved("p-a"))
    assert desired_map(index, "network", "net-a", SECRET) == {}
    assert index.ports_on_network("net-a")  # the DHCP and router ports remain


def test_diff_map() -> None:
    actual = [("10.0.0.5", "a|p|s"), ("10.0.0.6", "b|p|s"), ("10.0.0.7", "c|p|s"),
              ("10.0.0.7", "c|p|s")]
    desired = {"10.0.0.5": "a|p|s", "10.0.0.6": "b2|p|s", "10.0.0.7": "c|p|s",
               "10.0.0.8": "d|p|s"}
    assert diff_map(actual, desired) == [
        MapEdit("set", "10.0.0.6", "b2|p|s"),
        MapEdit("del", "10.0.0.7"), MapEdit("add", "10.0.0.7", "c|p|s"),
        MapEdit("add", "10.0.0.8", "d|p|s"),
    ]
    assert diff_map([("10.0.0.9", "x")], {}) == [MapEdit("del", "10.0.0.9")]
    assert diff_map(list(desired.items()), desired) == []


def test_map_file_text_is_sorted_and_stable() -> None:
    entries = {"10.0.0.6": "b|p|s", "10.0.0.5": "a|p|s"}
    assert map_file_text(entries) == "10.0.0.5 a|p|s\n10.0.0.6 b|p|s\n"
    assert map_file_text({}) == ""


def test_parse_show_map() -> None:
    text = "0x55d0c8a4f0 10.0.0.5 a|p|s\n0x55d0c8a5a0 fe80::1 b|p|s\n\n"
    assert parse_show_map(text) == [("10.0.0.5", "a|p|s"), ("fe80::1", "b|p|s")]
    assert parse_show_map("Unknown map identifier. Please use #<id> or <file>.\n") == []


def test_map_target_reads_what_the_renderer_writes() -> None:
    conns = Connections(identity="haproxy_map", api_servers=(("127.0.0.1", 8775),))
    spec = proxy_spec_for_network("net-a", state_path="/st", socket_path="/st/mp",
                                  connections=conns)
    target = map_target(render_haproxy_cfg(spec))
    assert target is not None
    assert (target.owner_id, target.kind, target.scope_id) == ("net-a", "network", "net-a")
    assert target.map_file == "/st/ns-metadata-proxy/net-a.map"
    assert target.admin_socket == "/st/ns-metadata-proxy/net-a.sock"
    # A metadata network (spec 3.6): owned by the network, resolving for its router.
    meta = proxy_spec_for_network("net-m", state_path="/st", socket_path="/st/mp",
                                  connections=conns, router_id="r1")
    target = map_target(render_haproxy_cfg(meta))
    assert target is not None
    assert (target.owner_id, target.kind, target.scope_id) == ("net-m", "router", "r1")
    # The agent's path has no map.
    plain = proxy_spec_for_network("net-a", state_path="/st", socket_path="/st/mp")
    assert map_target(render_haproxy_cfg(plain)) is None
