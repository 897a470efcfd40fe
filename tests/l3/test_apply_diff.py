"""diff_router as a table: observed values in, typed actions out (no root, no kernel)."""

from __future__ import annotations

import dataclasses

from openimds.l3.apply import RouterActual, RouterSettings, diff_router
from openimds.l3.model import RouterInfo, RouterInterface
from openimds.l3.plan import L3Options, desired_router_state
from openimds.linux.iptables import IptablesState, SavedTable
from openimds.linux.observe import Address, Link
from openimds.proxy.haproxy import ProxyDefaults
from openimds.reconcile import actions as act

RID = "router-1"
NS = f"qrouter-{RID}"
SETTINGS = RouterSettings(fabric="fab", state_path="/s",
                          proxy=ProxyDefaults(state_path="/s", socket_path="/s/mp"))
ROUTER = RouterInfo(RID, "r", "p", (
    RouterInterface("port-aaaaaaaa", "net-a", "fa:16:3e:00:00:01", ("10.0.0.1/24",)),
))
OPTS = L3Options(ipv6_enabled=False)


def saved(rules: tuple[tuple[str, str, str], ...]) -> IptablesState:
    tables: dict[str, SavedTable] = {}
    for t in {r[0] for r in rules}:
        chains = {c: "ACCEPT" for c in ("PREROUTING", "INPUT", "FORWARD", "OUTPUT")}
        chains |= {r[1]: "-" for r in rules if r[0] == t and r[1].startswith("openimds")}
        tables[t] = SavedTable(t, chains, tuple((c, x) for tt, c, x in rules if tt == t))
    return IptablesState(tables)


def in_sync() -> RouterActual:
    plan = desired_router_state(ROUTER, OPTS)
    qr = Link("qr-port-aaaaaa", 5, "veth", "fa:16:3e:00:00:01", 1500, True, None, 8, 0)
    near = Link("tapport-aaaaaa", 8, "veth", "aa:aa:aa:aa:aa:aa", 1500, True, "brqnet-a", 5, 1)
    br = Link("brqnet-a", 2, "bridge", "bb:bb:bb:bb:bb:bb", 1500, True, None, None, None)
    return RouterActual(
        namespace_exists=True,
        links=(Link("lo", 1, None, "", 65536, True, None, None, None), qr),
        addresses=(Address("qr-port-aaaaaa", "10.0.0.1/24", 4, "global", False, False),),
        fabric_links=(br, near),
        sysctls=dict(plan.sysctls),
        iptables=saved(plan.rules),
        proxy_configured=True,
    )


def kinds(actions: list[act.Action]) -> list[str]:
    return [type(a).__name__ for a in actions]


def test_fresh_router_builds_everything() -> None:
    plan = desired_router_state(ROUTER, OPTS)
    out = diff_router(RID, plan, RouterActual(), SETTINGS)
    # Rules before devices: they name devices by wildcard, and nothing may leave a device
    # before they are in place (an HA router's copy must never send MLD).
    assert kinds(out) == ["EnsureNamespace", "SetSysctl", "RestoreIptables", "EnsurePortLink",
                          "SyncAddresses", "EnsureProxy"]
    assert out[1] == act.SetSysctl(NS, "net.ipv4.ip_forward", "1")
    assert out[3] == act.EnsurePortLink("fab", "net-a", "port-aaaaaaaa", NS, "qr-port-aaaaaa",
                                        "fa:16:3e:00:00:01", 1500)


def test_in_sync_router_only_ensures_the_proxy() -> None:
    plan = desired_router_state(ROUTER, OPTS)
    assert kinds(diff_router(RID, plan, in_sync(), SETTINGS)) == ["EnsureProxy"]


def test_drifted_rule_and_sysctl_are_repaired_and_stale_port_removed() -> None:
    plan = desired_router_state(ROUTER, OPTS)
    actual = in_sync()
    stale = Link("qr-oldport-000", 6, "veth", "fa:16:3e:00:00:09", 1500, True, None, 9, 0)
    actual = dataclasses.replace(
        actual,
        links=(*actual.links, stale),
        sysctls={"net.ipv4.ip_forward": "0"},
        iptables=saved(plan.rules[:-1]),
    )
    out = diff_router(RID, plan, actual, SETTINGS)
    assert kinds(out) == ["SetSysctl", "RestoreIptables", "DeleteLink", "EnsureProxy"]
    assert out[2] == act.DeleteLink(NS, "qr-oldport-000")


def test_proxy_disabled_stops_it() -> None:
    plan = desired_router_state(ROUTER, L3Options(ipv6_enabled=False, enable_metadata_proxy=False))
    out = diff_router(RID, plan, in_sync(), SETTINGS)
    assert kinds(out) == ["RestoreIptables", "StopProxy"]


def test_gone_router_tears_down() -> None:
    out = diff_router(RID, None, in_sync(), SETTINGS)
    assert out == [act.StopProxy(RID), act.DeleteLink(NS, "qr-port-aaaaaa"),
                   act.DeleteNamespace(NS)]
    assert diff_router(RID, None, RouterActual(), SETTINGS) == []


def test_addresses_follow_the_same_link_local_rule_as_dhcp() -> None:
    """Only the kernel's fe80::/64 is ignored (what sync_addresses leaves alone); any other
    link-scope address on a qr- device is drift and gets synced away."""
    plan = desired_router_state(ROUTER, OPTS)
    actual = in_sync()
    kernel = Address("qr-port-aaaaaa", "fe80::f816:3eff:fe00:1/64", 6, "link", False, False)
    actual = dataclasses.replace(actual, addresses=(*actual.addresses, kernel))
    assert kinds(diff_router(RID, plan, actual, SETTINGS)) == ["EnsureProxy"]
    stray = Address("qr-port-aaaaaa", "fe80::5/128", 6, "link", False, False)
    actual = dataclasses.replace(actual, addresses=(*actual.addresses, stray))
    out = diff_router(RID, plan, actual, SETTINGS)
    assert out[0] == act.SyncAddresses(NS, "qr-port-aaaaaa", ("10.0.0.1/24",))


def test_broken_pair_recreates_the_port_and_resyncs_its_addresses() -> None:
    plan = desired_router_state(ROUTER, OPTS)
    actual = in_sync()
    qr = dataclasses.replace(actual.links[1], peer_ifindex=99)  # its peer is another device
    out = diff_router(RID, plan, dataclasses.replace(actual, links=(actual.links[0], qr)),
                      SETTINGS)
    assert kinds(out) == ["EnsurePortLink", "SyncAddresses", "EnsureProxy"]
    # Only the MTU drifted: the pair is intact, so the addresses are left alone.
    near = dataclasses.replace(actual.fabric_links[1], mtu=1400)
    out = diff_router(RID, plan, dataclasses.replace(actual, fabric_links=(actual.fabric_links[0],
                                                                           near)), SETTINGS)
    assert kinds(out) == ["EnsurePortLink", "EnsureProxy"]


RA_ROUTER = RouterInfo(RID, "r", "p", (
    RouterInterface("port-aaaaaaaa", "net-a", "fa:16:3e:00:00:01", ("2001:db8::1/64",),
                    ipv6_ra=(("2001:db8::/64", "slaac"),)),
))
RA_DIR = "/s/ra/router-1"


def test_advertisement_daemon_started_adopted_restarted_stopped() -> None:
    from openimds.linux.dnsmasq import DnsmasqProcess, daemon_argv

    plan = desired_router_state(RA_ROUTER, OPTS_V6)
    assert plan.ra is not None
    base = dataclasses.replace(in_sync(), netns_inode=(4, 1))
    out = diff_router(RID, plan, base, SETTINGS)
    start = [a for a in out if isinstance(a, act.StartDnsmasq)]
    assert len(start) == 1 and start[0].netns == NS
    assert "--keep-in-foreground" not in start[0].argv  # daemonised: a restarted agent adopts it
    assert act.WriteFile(f"{RA_DIR}/argv", "\n".join(start[0].argv) + "\n") in out
    running = DnsmasqProcess(77, start[0].argv, (4, 1))
    adopted = diff_router(RID, plan, dataclasses.replace(base, ra=running), SETTINGS)
    assert not any(isinstance(a, act.StartDnsmasq | act.StopDnsmasq) for a in adopted)
    # Another command line (a link added) or another namespace: restarted.
    for proc in (DnsmasqProcess(77, ("dnsmasq", "--old"), (4, 1)),
                 DnsmasqProcess(77, tuple(daemon_argv(plan.ra.argv(RA_DIR))), (4, 9))):
        out = diff_router(RID, plan, dataclasses.replace(base, ra=proc), SETTINGS)
        assert act.StopDnsmasq(77, f"{RA_DIR}/pid") in out
        assert any(isinstance(a, act.StartDnsmasq) for a in out)
    # No advertised link any more: stopped. Router gone: stopped and its folder removed.
    out = diff_router(RID, desired_router_state(ROUTER, OPTS), dataclasses.replace(base, ra=running),
                      SETTINGS)
    assert act.StopDnsmasq(77, f"{RA_DIR}/pid") in out
    out = diff_router(RID, None, dataclasses.replace(base, ra=running, ra_dir_exists=True),
                      SETTINGS)
    assert out.index(act.StopDnsmasq(77, f"{RA_DIR}/pid")) < out.index(act.DeleteNamespace(NS))
    assert out[-1] == act.RemoveTree(RA_DIR)


OPTS_V6 = L3Options(ipv6_enabled=True)
