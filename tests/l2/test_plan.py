"""The l2 plan and diff as tables (l2/plan.py, l2/apply.py) and the parsers on captured
`ip -j -d link` / `bridge -j fdb` output (linux/segments.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from openimds.l2.apply import Action, L2Actual, diff_l2
from openimds.l2.plan import (
    L2Options,
    L2Plan,
    PlanError,
    Uplink,
    desired_l2_state,
    ha_router_hosts,
)
from openimds.linux import segments as seg
from openimds.linux.segments import SegmentLink, parse_flood_entries, parse_segment_links

HERE = Path(__file__).parent
NET = "11111111-2222-3333-4444-555555555555"
BRQ = "brq11111111-22"
OPTS = L2Options(host="cmp-1", local_ip="192.0.2.1",
                 physical_interface_mappings={"physnet1": "ul0", "ext": "eth-ext"})
PEERS = {"cmp-1": "192.0.2.1", "cmp-2": "192.0.2.2", "net-1": "192.0.2.10"}


def net(ntype: str, physnet: str | None = None, seg_id: int | None = None,
        mtu: int = 1450) -> dict[str, Any]:
    return {"id": NET, "mtu": mtu, "provider:network_type": ntype,
            "provider:physical_network": physnet, "provider:segmentation_id": seg_id}


def ports(*hosts: str) -> list[dict[str, Any]]:
    return [{"id": f"p{i}", "network_id": NET, "binding:host_id": h}
            for i, h in enumerate(hosts)]


def vx(peers: tuple[str, ...] = (), vni: int = 1001) -> Uplink:
    return Uplink("vxlan", f"vxlan-{vni}", None, vni, "192.0.2.1", 4789, peers)


@pytest.mark.parametrize(("network", "bound", "expected"), [
    (None, ("cmp-1",), None),
    (net("local"), ("cmp-1",), None),
    (net("vxlan", seg_id=1001), ("cmp-2",), None),  # nothing bound here
    (net("vxlan", seg_id=1001), ("cmp-1",), L2Plan(NET, BRQ, 1450, vx())),
    # peers: every other host with a port and a registered tunnel address, sorted
    (net("vxlan", seg_id=1001), ("cmp-1", "net-1", "cmp-2", "cmp-2", "unregistered"),
     L2Plan(NET, BRQ, 1450, vx(("192.0.2.10", "192.0.2.2")))),
    (net("vlan", "physnet1", 120, 1500), ("cmp-1",),
     L2Plan(NET, BRQ, 1500, Uplink("vlan", "ul0.120", "ul0", 120))),
    (net("flat", "ext", None, 1500), ("cmp-1", ""),
     L2Plan(NET, BRQ, 1500, Uplink("flat", "eth-ext"))),
])
def test_desired_l2_state(network: dict[str, Any] | None, bound: tuple[str, ...],
                          expected: L2Plan | None) -> None:
    assert desired_l2_state(network, ports(*bound), OPTS, PEERS) == expected


def test_ha_router_hosts_need_the_bridges_of_its_networks() -> None:
    """An HA router's interface is unbound; its ha- ports' hosts get the bridge and are
    flood peers, a legacy router's ha-less interface adds nobody."""
    rows = [
        {"id": "qr", "network_id": NET, "device_id": "r1", "binding:host_id": "",
         "device_owner": "network:router_interface"},
        {"id": "ha1", "network_id": "ha-net", "device_id": "r1", "binding:host_id": "cmp-1",
         "device_owner": "network:router_ha_interface"},
        {"id": "ha2", "network_id": "ha-net", "device_id": "r1", "binding:host_id": "net-1",
         "device_owner": "network:router_ha_interface"},
        {"id": "qr2", "network_id": "other", "device_id": "r2", "binding:host_id": "net-9",
         "device_owner": "network:router_interface"},
    ]
    extra = ha_router_hosts(rows)
    assert extra == {NET: {"cmp-1", "net-1"}}
    assert desired_l2_state(net("vxlan", seg_id=1001), rows[:1], OPTS, PEERS,
                            extra[NET]) == L2Plan(NET, BRQ, 1450, vx(("192.0.2.10",)))
    assert desired_l2_state(net("vxlan", seg_id=1001), rows[:1], OPTS, PEERS) is None


@pytest.mark.parametrize(("network", "options", "fragment"), [
    (net("vlan", "physnet9", 5), OPTS, "'physnet9', which [linux_bridge]"),
    (net("vxlan", seg_id=5), L2Options(host="cmp-1"), "enable_vxlan = true and local_ip"),
    (net("vxlan", seg_id=5), L2Options(host="cmp-1", local_ip="192.0.2.1",
                                       enable_vxlan=False), "no VXLAN"),
    (net("vlan", "physnet1", 4000), L2Options(host="cmp-1", physical_interface_mappings={
        "physnet1": "underlay-eth1"}), "longer than 15"),
])
def test_plan_errors_say_what_is_missing(network: dict[str, Any], options: L2Options,
                                         fragment: str) -> None:
    with pytest.raises(PlanError, match=fragment.replace("[", r"\[")):
        desired_l2_state(network, ports("cmp-1"), options, PEERS)


def link(name: str, kind: str | None, *, master: str | None = None, up: bool = True,
         mtu: int = 1450, owner: str | None = NET, **extra: Any) -> SegmentLink:
    return SegmentLink(name, kind, master, up, mtu, owner, **extra)


OURS_VX = link("vxlan-1001", "vxlan", master=BRQ, vni=1001, local_ip="192.0.2.1", dstport=4789)
OURS_BR = link(BRQ, "bridge")
PLAN = L2Plan(NET, BRQ, 1450, vx(("192.0.2.2", "192.0.2.10")))


@pytest.mark.parametrize(("plan", "actual", "expected"), [
    # from nothing
    (PLAN, L2Actual(()), [
        Action(seg.create_bridge, (BRQ, NET, 1450)),
        Action(seg.create_vxlan, ("vxlan-1001", 1001, "192.0.2.1", 4789, NET, 1450)),
        Action(seg.set_master, ("vxlan-1001", BRQ)),
        Action(seg.add_flood_entry, ("vxlan-1001", "192.0.2.10")),
        Action(seg.add_flood_entry, ("vxlan-1001", "192.0.2.2")),
    ]),
    # converged: nothing to do
    (PLAN, L2Actual((OURS_BR, OURS_VX), frozenset({"192.0.2.2", "192.0.2.10"})), []),
    # a peer left, another came
    (PLAN, L2Actual((OURS_BR, OURS_VX), frozenset({"192.0.2.2", "192.0.2.99"})), [
        Action(seg.add_flood_entry, ("vxlan-1001", "192.0.2.10")),
        Action(seg.delete_flood_entry, ("vxlan-1001", "192.0.2.99")),
    ]),
    # our device with the wrong local address is re-created (its flood list with it)
    (PLAN, L2Actual((OURS_BR, link("vxlan-1001", "vxlan", master=BRQ, vni=1001,
                                   local_ip="192.0.2.7", dstport=4789)),
                    frozenset({"192.0.2.2"})), [
        Action(seg.delete_link, ("vxlan-1001",)),
        Action(seg.create_vxlan, ("vxlan-1001", 1001, "192.0.2.1", 4789, NET, 1450)),
        Action(seg.set_master, ("vxlan-1001", BRQ)),
        Action(seg.add_flood_entry, ("vxlan-1001", "192.0.2.10")),
        Action(seg.add_flood_entry, ("vxlan-1001", "192.0.2.2")),
    ]),
    # a bridge made by someone else (no alias) is adopted; a detached uplink re-enslaved
    (PLAN, L2Actual((link(BRQ, "bridge", owner=None),
                     link("vxlan-1001", "vxlan", vni=1001, local_ip="192.0.2.1",
                          dstport=4789)), frozenset({"192.0.2.2", "192.0.2.10"})), [
        Action(seg.create_bridge, (BRQ, NET, 1450)),
        Action(seg.set_master, ("vxlan-1001", BRQ)),
    ]),
    # nothing wanted: our uplink goes, then the empty bridge
    (None, L2Actual((OURS_BR, OURS_VX)), [
        Action(seg.delete_link, ("vxlan-1001",)),
        Action(seg.delete_link, (BRQ,)),
    ]),
    # a guest's tap still on the bridge keeps it
    (None, L2Actual((OURS_BR, OURS_VX, link("tapabc", "veth", master=BRQ, owner=None))), [
        Action(seg.delete_link, ("vxlan-1001",)),
    ]),
    # a flat physical interface is released, never deleted; other links untouched
    (None, L2Actual((OURS_BR, link("eth-ext", None, master=BRQ, owner=None),
                     link("eth0", None, owner=None), link("brqother", "bridge", owner="x"))), [
        Action(seg.set_nomaster, ("eth-ext",)),
        Action(seg.delete_link, (BRQ,)),
    ]),
])
def test_diff(plan: L2Plan | None, actual: L2Actual, expected: list[Action]) -> None:
    assert diff_l2(NET, plan, actual) == expected


def test_diff_never_touches_a_foreign_device_with_our_name() -> None:
    foreign = link("vxlan-1001", "vxlan", vni=9, local_ip="192.0.2.1", dstport=4789,
                   owner=None)
    with pytest.raises(PlanError, match="not ours"):
        diff_l2(NET, PLAN, L2Actual((OURS_BR, foreign)))


def test_vlan_and_flat_diff() -> None:
    vlan = L2Plan(NET, BRQ, 1500, Uplink("vlan", "ul0.120", "ul0", 120))
    assert diff_l2(NET, vlan, L2Actual((link(BRQ, "bridge", mtu=1500),
                                        link("ul0", None, owner=None)))) == [
        Action(seg.create_vlan, ("ul0.120", "ul0", 120, NET, 1500)),
        Action(seg.set_master, ("ul0.120", BRQ)),
    ]
    flat = L2Plan(NET, BRQ, 1500, Uplink("flat", "eth-ext"))
    with pytest.raises(PlanError, match="does not exist"):
        diff_l2(NET, flat, L2Actual(()))


def test_parsers_on_captured_output() -> None:
    found = {x.name: x for x in parse_segment_links((HERE / "ip-link-vxlan.json").read_text())}
    vxlan = found["vxlan-7"]
    assert (vxlan.kind, vxlan.vni, vxlan.local_ip, vxlan.dstport, vxlan.master, vxlan.owner) == (
        "vxlan", 7, "192.0.2.1", 4789, "brqabc", None)
    assert (found["brqabc"].kind, found["brqabc"].owner) == ("bridge", "abc")
    assert parse_flood_entries((HERE / "bridge-fdb.json").read_text()) == {"192.0.2.2"}
    assert parse_segment_links("") == [] and parse_flood_entries("\n") == set()
    vlan_json = ('[{"ifindex":3,"ifname":"ul0.120","flags":["UP"],"mtu":1500,'
                 '"link":"ul0","ifalias":"openimds-l2:n1","linkinfo":{"info_kind":"vlan",'
                 '"info_data":{"protocol":"802.1Q","id":120}}}]')
    (vl,) = parse_segment_links(vlan_json)
    assert (vl.kind, vl.vlan_id, vl.parent, vl.owner, vl.up) == ("vlan", 120, "ul0", "n1", True)
