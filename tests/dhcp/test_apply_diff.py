"""diff_dhcp as a table: observed values in, typed actions out (no root, no kernel)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

from openimds.dhcp.apply import DhcpActual, diff_dhcp, files_digest
from openimds.dhcp.model import NetworkInfo, PortInfo, SubnetInfo
from openimds.dhcp.plan import DhcpOptions, DhcpPlan, desired_dhcp_state
from openimds.dhcp.settings import DhcpSettings
from openimds.linux.dnsmasq import DnsmasqProcess, daemon_argv
from openimds.linux.iptables import IptablesState, SavedTable
from openimds.linux.observe import Address, Link
from openimds.proxy.haproxy import ProxyDefaults
from openimds.reconcile import actions as act

T0 = datetime(2026, 1, 1, tzinfo=UTC)
NET = "net-1"
NS = f"qdhcp-{NET}"
PROXY = ProxyDefaults(state_path="/s", socket_path="/s/mp")
SETTINGS = DhcpSettings(
    fabric="fab", state_path="/s", options=DhcpOptions(dhcp_confs="/s/dhcp", proxy=PROXY)
)
INODE = (4, 1234)


def plan(isolated: bool = True) -> DhcpPlan:
    subnet = SubnetInfo("s1", "10.0.0.0/24", 4, "10.0.0.1", True)
    ports = [
        PortInfo("dhcpport-0001", "fa:16:3e:00:00:02", (("s1", "10.0.0.2"),), "network:dhcp",
                 "d", T0),
        PortInfo("vmport", "fa:16:3e:00:00:05", (("s1", "10.0.0.5"),), "compute:nova", "i", T0),
    ]
    if not isolated:
        ports.append(PortInfo("rport", "fa:16:3e:00:00:01", (("s1", "10.0.0.1"),),
                              "network:router_interface", "r", T0))
    net = NetworkInfo(NET, "n", "p", 1500, (subnet,), tuple(ports))
    opts = DhcpOptions(enable_isolated_metadata=True, dhcp_confs="/s/dhcp", dhcp_lease_duration=60,
                       proxy=PROXY)
    p = desired_dhcp_state(net, opts, T0 if isolated else datetime(2027, 1, 1, tzinfo=UTC))
    assert p is not None
    return p


def saved(rules: tuple[tuple[str, str, str], ...]) -> IptablesState:
    tables: dict[str, SavedTable] = {}
    for t in {r[0] for r in rules}:
        chains = {c: "ACCEPT" for c in ("PREROUTING", "INPUT", "FORWARD", "OUTPUT")}
        chains |= {r[1]: "-" for r in rules if r[0] == t and r[1].startswith("openimds")}
        tables[t] = SavedTable(t, chains, tuple((c, x) for tt, c, x in rules if tt == t))
    return IptablesState(tables)


def in_sync(p: DhcpPlan) -> DhcpActual:
    """What a host that already matches `p` looks like."""
    tap = Link(p.interface, 7, "veth", p.mac_address, 1500, True, None, 9, 0)
    near = Link("tapdhcpport-00", 9, "veth", "aa:aa:aa:aa:aa:aa", 1500, True, "brqnet-1", 7, 1)
    br = Link("brqnet-1", 3, "bridge", "bb:bb:bb:bb:bb:bb", 1500, True, None, None, None)
    addrs = tuple(
        Address(p.interface, c, 4, "global", False, False) for c in p.addresses
    ) + (Address(p.interface, "fe80::1/64", 6, "link", False, False),)
    proc = DnsmasqProcess(4242, tuple(daemon_argv(p.dnsmasq.argv())), INODE)
    return DhcpActual(
        namespace_exists=True,
        links=(Link("lo", 1, None, "", 65536, True, None, None, None), tap),
        addresses=addrs,
        fabric_links=(br, near),
        files=p.files(),
        conf_dir_exists=True,
        dnsmasq=proc,
        netns_inode=INODE,
        marker=f"4242 {files_digest(p.files())}",
        proxy_configured=p.metadata_proxy,
        iptables=saved(p.rules),
        ip6tables=saved(p.rules6),
    )


def kinds(actions: list[act.Action]) -> list[str]:
    return [type(a).__name__ for a in actions]


def test_nothing_there_builds_everything_in_order() -> None:
    p = plan()
    out = diff_dhcp(NET, p, DhcpActual(), SETTINGS, network_exists=True)
    assert kinds(out) == [
        "EnsureNamespace", "EnsurePortLink", "SyncAddresses", "RestoreIptables",
        "RestoreIptables", "WriteFile", "WriteFile", "WriteFile", "StartDnsmasq", "EnsureProxy",
    ]
    # The token PUT's hop limit, over IPv4 and IPv6, before the proxy starts.
    v4, v6 = out[3], out[4]
    assert isinstance(v4, act.RestoreIptables) and isinstance(v6, act.RestoreIptables)
    assert not v4.ipv6 and v6.ipv6
    assert "-j TTL --ttl-set 1" in v4.text and "-j HL --hl-set 1" in v6.text
    assert "-I OUTPUT 1 -p tcp -j openimds-dhcp-OUTPUT" in v4.text
    start = out[8]
    assert isinstance(start, act.StartDnsmasq)
    assert "--keep-in-foreground" not in start.argv
    assert start.digest == files_digest(p.files())


def test_in_sync_is_only_the_idempotent_proxy_ensure() -> None:
    p = plan()
    assert kinds(diff_dhcp(NET, p, in_sync(p), SETTINGS, network_exists=True)) == ["EnsureProxy"]


def test_router_attached_after_window_stops_proxy_before_removing_address() -> None:
    old, new = plan(), plan(isolated=False)
    assert not new.metadata_proxy
    out = diff_dhcp(NET, new, in_sync(old), SETTINGS, network_exists=True)
    # The hop-limit chains go with the proxy.
    assert kinds(out) == ["StopProxy", "SyncAddresses", "RestoreIptables", "RestoreIptables",
                          "WriteFile", "WriteFile", "WriteFile", "ReloadDnsmasq"]
    assert "-X openimds-dhcp-OUTPUT" in out[2].text  # type: ignore[attr-defined]


def test_crash_between_write_and_sighup_is_seen_through_the_marker() -> None:
    p = plan()
    actual = dataclasses.replace(in_sync(p), marker="4242 stale")
    assert kinds(diff_dhcp(NET, p, actual, SETTINGS, network_exists=True)) == [
        "ReloadDnsmasq", "EnsureProxy"
    ]


def test_argv_change_or_foreign_namespace_restarts_dnsmasq() -> None:
    p = plan()
    for proc in (
        DnsmasqProcess(4242, ("dnsmasq", "--other"), INODE),
        DnsmasqProcess(4242, tuple(daemon_argv(p.dnsmasq.argv())), (4, 999)),
    ):
        actual = dataclasses.replace(in_sync(p), dnsmasq=proc)
        out = diff_dhcp(NET, p, actual, SETTINGS, network_exists=True)
        assert kinds(out) == ["StopDnsmasq", "StartDnsmasq", "EnsureProxy"]
        assert out[0] == act.StopDnsmasq(4242, "/s/dhcp/net-1/pid")


def test_dead_dnsmasq_is_started_and_new_tap_restarts_it() -> None:
    p = plan()
    out = diff_dhcp(NET, p, dataclasses.replace(in_sync(p), dnsmasq=None), SETTINGS,
                    network_exists=True)
    assert kinds(out) == ["StartDnsmasq", "EnsureProxy"]
    # The veth was re-created (peer ifindex no longer matches): links, addresses, dnsmasq.
    actual = in_sync(p)
    tap = dataclasses.replace(actual.links[1], peer_ifindex=55)
    out = diff_dhcp(NET, p, dataclasses.replace(actual, links=(actual.links[0], tap)), SETTINGS,
                    network_exists=True)
    assert kinds(out) == ["EnsurePortLink", "SyncAddresses", "StopDnsmasq", "StartDnsmasq",
                          "EnsureProxy"]


def test_stale_links_in_namespace_are_deleted() -> None:
    p = plan()
    actual = in_sync(p)
    old_tap = Link("tapoldport-00", 8, "veth", "fa:16:3e:00:00:09", 1500, True, None, 10, 0)
    actual = dataclasses.replace(actual, links=(*actual.links, old_tap))
    out = diff_dhcp(NET, p, actual, SETTINGS, network_exists=True)
    assert out[0] == act.DeleteLink(NS, "tapoldport-00")


def test_gone_network_tears_everything_down() -> None:
    actual = in_sync(plan())
    out = diff_dhcp(NET, None, actual, SETTINGS, network_exists=False)
    assert out == [
        act.StopProxy(NET),
        act.StopDnsmasq(4242, "/s/dhcp/net-1/pid"),
        act.DeleteLink(NS, actual.links[1].name),
        act.DeleteNamespace(NS),
        act.RemoveTree("/s/dhcp/net-1"),
        act.DeleteLink("fab", "brqnet-1"),
    ]
    # A network that exists but needs no DHCP keeps its bridge (instances may use it).
    out = diff_dhcp(NET, None, actual, SETTINGS, network_exists=True)
    assert act.DeleteLink("fab", "brqnet-1") not in out


def test_nothing_to_remove_is_no_action() -> None:
    assert diff_dhcp(NET, None, DhcpActual(), SETTINGS, network_exists=False) == []


def metadata_network_plan(*, metadata_network: bool = True) -> DhcpPlan:
    """Spec 3.6: a 169.254.169.252/30 network attached to router `rtr-1` (long ago)."""
    subnet = SubnetInfo("m", "169.254.169.252/30", 4, "169.254.169.253", True)
    ports = (
        PortInfo("dhcpport-0001", "fa:16:3e:00:00:02", (("m", "169.254.169.254"),),
                 "network:dhcp", "d", T0),
        PortInfo("rport", "fa:16:3e:00:00:01", (("m", "169.254.169.253"),),
                 "network:router_interface", "rtr-1", T0),
    )
    net = NetworkInfo(NET, "n", "p", 1500, (subnet,), ports)
    opts = DhcpOptions(enable_isolated_metadata=True, enable_metadata_network=metadata_network,
                       dhcp_confs="/s/dhcp", dhcp_lease_duration=60, proxy=PROXY)
    p = desired_dhcp_state(net, opts, datetime(2027, 1, 1, tzinfo=UTC))
    assert p is not None
    return p


def test_metadata_network_proxy_is_keyed_by_the_network() -> None:
    p = metadata_network_plan()
    assert p.proxy_router_id == "rtr-1"
    out = diff_dhcp(NET, p, DhcpActual(), SETTINGS, network_exists=True)
    ensure = out[-1]
    assert isinstance(ensure, act.EnsureProxy) and ensure.netns == NS
    spec = ensure.spec
    # Files and ownership: the network's, never the router's (whose key the L3 agent uses).
    assert (spec.kind, spec.resource_id) == ("network", NET)
    assert spec.pidfile == "/s/external/pids/net-1.pid.haproxy"
    assert spec.stamped == ("router", "rtr-1")
    assert [(b.host, b.port) for b in spec.binds] == [("169.254.169.254", 80)]


def test_metadata_network_that_stops_qualifying_stops_its_proxy_by_network_id() -> None:
    was, now = metadata_network_plan(), metadata_network_plan(metadata_network=False)
    assert not now.metadata_proxy
    out = diff_dhcp(NET, now, in_sync(was), SETTINGS, network_exists=True)
    assert out[0] == act.StopProxy(NET)
    assert not any(isinstance(a, act.EnsureProxy) for a in out)


def test_only_the_kernels_link_local_address_is_ignored() -> None:
    p = plan()
    actual = in_sync(p)
    # The kernel's fe80::/64 is in in_sync() already; a stray link-local /128 is not ours.
    stray = Address(p.interface, "fe80::a9fe:a9fe/128", 6, "link", False, False)
    out = diff_dhcp(NET, p, dataclasses.replace(actual, addresses=(*actual.addresses, stray)),
                    SETTINGS, network_exists=True)
    assert kinds(out) == ["SyncAddresses", "EnsureProxy"]
    assert out[0] == act.SyncAddresses(NS, p.interface, p.addresses)
