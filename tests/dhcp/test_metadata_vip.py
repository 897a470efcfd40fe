"""The isolated-subnet metadata next hop of a network with several DHCP agents (issue 11
item 2): which next hop a subnet's options get, what each DHCP namespace does with the
`network:metadata` port's addresses, the keepalived config it renders, and how the diff treats
the addresses keepalived owns. Pure: no root, no kernel."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest

from openimds.dhcp.apply import diff_dhcp
from openimds.dhcp.model import NetworkInfo, PortInfo, SubnetInfo
from openimds.dhcp.plan import DhcpOptions, DhcpPlan, desired_dhcp_state, metadata_next_hop
from openimds.dhcp.vrrp import plan_vips
from openimds.linux.keepalived import render_vrrp_conf
from openimds.linux.observe import Address
from openimds.reconcile import actions as act

from .test_apply_diff import NET, SETTINGS, in_sync, kinds

T0 = datetime(2026, 1, 1, tzinfo=UTC)
T1 = datetime(2026, 1, 2, tzinfo=UTC)
S1 = SubnetInfo("s1", "10.0.0.0/24", 4, "10.0.0.1", True)
S2 = SubnetInfo("s2", "10.1.0.0/24", 4, None, True)
S6 = SubnetInfo("s6", "fd00::/64", 6, None, True, ipv6_address_mode="dhcpv6-stateful")
OPTS = DhcpOptions(enable_isolated_metadata=True, dhcp_confs="/s/dhcp", vrrp_advert_int=1)


def dhcp(pid: str, ips: list[tuple[str, str]], host: str, created: datetime = T0) -> PortInfo:
    return PortInfo(pid, f"fa:16:3e:00:00:{pid[-2:]}", tuple(ips), "network:dhcp",
                    f"dhcp-{host}", created)


D1 = dhcp("dhcpport-0001", [("s1", "10.0.0.2"), ("s2", "10.1.0.2")], "a")
D2 = dhcp("dhcpport-0002", [("s1", "10.0.0.3"), ("s2", "10.1.0.3")], "b", T1)
VIP = PortInfo("vipport", "fa:16:3e:00:00:99", (("s1", "10.0.0.9"), ("s2", "10.1.0.9")),
               "network:metadata", f"metadata-{NET}", T1)
VM = PortInfo("vmport", "fa:16:3e:00:00:05", (("s1", "10.0.0.5"),), "compute:nova", "i", T0)


def network(*ports: PortInfo, subnets: tuple[SubnetInfo, ...] = (S1, S2)) -> NetworkInfo:
    return NetworkInfo(NET, "n", "p", 1500, subnets, (VM, *ports))


def plan_for(net: NetworkInfo, device: str, opts: DhcpOptions = OPTS) -> DhcpPlan:
    p = desired_dhcp_state(net, dataclasses.replace(opts, dhcp_port_device_id=device), T1)
    assert p is not None
    return p


@pytest.mark.parametrize(("isolated", "force", "iso_opt", "vip", "want"), [
    (True, False, True, "vip", "vip"),  # the isolated subnet's route: the shared address
    (True, False, True, None, "dhcp"),  # no metadata port: the DHCP port's own (Neutron)
    (False, False, True, "vip", "gw"),  # routed: the router answers, not the DHCP namespaces
    (False, True, True, "vip", "vip"),  # force_metadata: via the DHCP namespaces, so shared
    (True, False, False, "vip", None),  # no isolated metadata: no route at all
])
def test_next_hop_table(isolated: bool, force: bool, iso_opt: bool, vip: str | None,
                        want: str | None) -> None:
    assert metadata_next_hop("network_node", isolated=isolated, force_metadata=force,
                             enable_isolated_metadata=iso_opt, dhcp_ip="dhcp",
                             distributed_ip=None, gateway="gw", vip=vip) == want


def test_every_dhcp_namespace_hands_out_the_same_route() -> None:
    net = network(D1, D2, VIP)
    opts = {plan_for(net, d).opts for d in ("dhcp-a", "dhcp-b")}
    assert len(opts) == 1
    (text,) = opts
    assert "tag:tag0,option:classless-static-route,10.1.0.0/24,0.0.0.0," \
           "169.254.169.254/32,10.0.0.9,0.0.0.0/0,10.0.0.1" in text
    assert "tag:tag1,249,10.0.0.0/24,0.0.0.0,169.254.169.254/32,10.1.0.9" in text
    # Without the metadata port, each hands out its own address (Neutron's behaviour).
    assert "169.254.169.254/32,10.0.0.2" in plan_for(network(D1, D2), "dhcp-a").opts
    assert "169.254.169.254/32,10.0.0.3" in plan_for(network(D1, D2), "dhcp-b").opts


def test_keepalived_config_unicast_between_the_dhcp_ports() -> None:
    p = plan_for(network(D1, D2, VIP), "dhcp-a")
    assert p.vrrp is not None
    assert p.vips == ("10.0.0.9/32", "10.1.0.9/32")
    # keepalived's, not the address sync's.
    assert not set(p.vips) & set(p.addresses)
    assert p.addresses == ("10.0.0.2/24", "10.1.0.2/24", "169.254.169.254/32")
    text = render_vrrp_conf(p.vrrp)
    assert text == (
        "global_defs {\n"
        f"    router_id {NET}\n"
        "    vrrp_garp_master_repeat 5\n"
        "}\n"
        "vrrp_instance VR_1 {\n"
        "    state BACKUP\n"
        "    interface tapdhcpport-00\n"
        "    virtual_router_id 1\n"
        "    priority 50\n"
        "    nopreempt\n"
        "    advert_int 1\n"
        "    garp_master_delay 60\n"
        "    unicast_src_ip 10.0.0.2\n"
        "    check_unicast_src\n"
        "    unicast_peer {\n"
        "        10.0.0.3\n"
        "    }\n"
        "    virtual_ipaddress {\n"
        "        10.0.0.9/32 dev tapdhcpport-00\n"
        "        10.1.0.9/32 dev tapdhcpport-00\n"
        "    }\n"
        "}\n")
    other = plan_for(network(D1, D2, VIP), "dhcp-b")
    assert other.vrrp is not None
    assert (other.vrrp.unicast_src, other.vrrp.unicast_peers) == ("10.0.0.3", ("10.0.0.2",))


def test_a_moved_dhcp_port_keeps_the_peer_list() -> None:
    # The failover pass rebinds a dead agent's DHCP port (same address) to another host: the
    # survivors' config does not change, so keepalived is not even reloaded.
    moved = dataclasses.replace(D2, device_id="dhcp-c")
    before = plan_for(network(D1, D2, VIP), "dhcp-a").vrrp
    assert plan_for(network(D1, moved, VIP), "dhcp-a").vrrp == before


def test_one_dhcp_port_left_holds_the_addresses_without_vrrp() -> None:
    p = plan_for(network(D1, VIP), "dhcp-a")
    assert p.vrrp is None and p.vips == ()
    assert p.addresses == ("10.0.0.2/24", "10.1.0.2/24", "10.0.0.9/32", "10.1.0.9/32",
                           "169.254.169.254/32")


def test_only_subnets_the_namespace_is_on_and_never_ipv6() -> None:
    partial = dataclasses.replace(D1, fixed_ips=(("s2", "10.1.0.2"),))
    static, conf = plan_vips(network(partial, D2, VIP), partial, "tapx", ["s1", "s2"], 2)
    assert static == ()
    assert conf is not None and [c for c, _ in conf.vips] == ["10.1.0.9/32"]
    # Elected over the first shared subnet: s2 here.
    assert (conf.unicast_src, conf.unicast_peers) == ("10.1.0.2", ("10.1.0.3",))
    net6 = network(D1, D2, VIP, subnets=(S1, S2, S6))
    assert plan_for(net6, "dhcp-a").vips == ("10.0.0.9/32", "10.1.0.9/32")


def test_nothing_when_the_namespace_serves_no_metadata() -> None:
    routed = dataclasses.replace(S1, gateway_ip="10.0.0.1")
    router = PortInfo("rport", "fa:16:3e:00:00:01", (("s1", "10.0.0.1"),),
                      "network:router_interface", "r", datetime(2000, 1, 1, tzinfo=UTC))
    p = plan_for(network(D1, D2, VIP, router, subnets=(routed,)), "dhcp-a")
    assert not p.metadata_proxy and p.vrrp is None
    assert "10.0.0.9" not in " ".join(p.addresses) + p.opts


def test_the_metadata_port_gets_no_dhcp_host_entry() -> None:
    p = plan_for(network(D1, D2, VIP), "dhcp-a")
    assert "10.0.0.9" not in p.host_file and "10.0.0.5" in p.host_file


# --- the diff ------------------------------------------------------------------------------

def test_keepalived_is_ensured_and_its_addresses_left_alone() -> None:
    p = plan_for(network(D1, D2, VIP), "dhcp-a")
    assert p.vrrp is not None
    base = dataclasses.replace(in_sync(p), keepalived_configured=True, keepalived_running=True)
    out = diff_dhcp(NET, p, base, SETTINGS, network_exists=True)
    assert kinds(out) == ["EnsureKeepalived", "EnsureProxy"]
    ensure = out[0]
    assert isinstance(ensure, act.EnsureKeepalived)
    assert ensure.text == render_vrrp_conf(p.vrrp) and ensure.netns == f"qdhcp-{NET}"
    # The master holds the addresses: still nothing to sync.
    vips = tuple(Address(p.interface, c, 4, "global", False, False) for c in p.vips)
    master = dataclasses.replace(base, addresses=base.addresses + vips)
    assert kinds(diff_dhcp(NET, p, master, SETTINGS, network_exists=True)) == [
        "EnsureKeepalived", "EnsureProxy"]
    # keepalived died (kill -9): its addresses must not stay where no VRRP speaks for them.
    dead = dataclasses.replace(master, keepalived_running=False)
    out = diff_dhcp(NET, p, dead, SETTINGS, network_exists=True)
    assert kinds(out) == ["SyncAddresses", "EnsureKeepalived", "EnsureProxy"]
    assert out[0].cidrs == p.addresses  # type: ignore[attr-defined]


def test_keepalived_stops_first_when_no_longer_planned() -> None:
    old = plan_for(network(D1, D2, VIP), "dhcp-a")
    new = plan_for(network(D1, VIP), "dhcp-a")
    actual = dataclasses.replace(in_sync(old), keepalived_configured=True,
                                 keepalived_running=True)
    out = diff_dhcp(NET, new, actual, SETTINGS, network_exists=True)
    assert kinds(out)[:2] == ["StopKeepalived", "SyncAddresses"]
    assert out[1].cidrs == new.addresses  # type: ignore[attr-defined]
    # Also when what was observed already matches the new plan: keepalived takes the
    # addresses it holds (now plain ones of the plan) with it as it stops.
    vips = tuple(Address(old.interface, c, 4, "global", False, False) for c in old.vips)
    held = dataclasses.replace(actual, addresses=actual.addresses + vips)
    assert set(new.addresses) >= set(old.vips)
    assert kinds(diff_dhcp(NET, new, held, SETTINGS, network_exists=True))[:2] == [
        "StopKeepalived", "SyncAddresses"]
    gone = diff_dhcp(NET, None, actual, SETTINGS, network_exists=False)
    assert kinds(gone)[0] == "StopKeepalived"
