"""Make one router's namespace match its plan: observe → pure diff → execute.

`observe_router` reads the namespace (links, addresses, sysctls, iptables-save of both
families) and the router's bridge-side ports; `diff_router(plan, actual, settings)` is pure;
`RouterApplier.apply` runs the actions. `plan=None` (router gone) converges to nothing: the
proxy is stopped, the qr- veths deleted (which also removes their bridge side at once) and the
namespace deleted. Bridges belong to networks, so they are created here when missing but never
deleted (the DHCP agent removes a network's bridge when the network goes).

iptables: `render_iptables_restore(plan.rules, saved)` is "" when our chains already hold
exactly the plan, so a pass over a router in sync runs no iptables-restore at all.

Router advertisements (`plan.ra`): a dnsmasq daemon in the namespace, tracked by its pid file
under `<state_path>/ra/<router id>/` like the DHCP agent's, so a restarted agent adopts it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from openimds import wire
from openimds.l3.ha import render_keepalived_conf, state_from_addresses
from openimds.l3.plan import RouterPlan, render_iptables_restore
from openimds.linux import iptables as ipt
from openimds.linux.dnsmasq import DnsmasqProcess, daemon_argv, find_dnsmasq, netns_inode
from openimds.linux.fabric import bridge_name, fabric_port_name
from openimds.linux.keepalived import KeepalivedSupervisor
from openimds.linux.netns import get_sysctl, netns_exists
from openimds.linux.observe import Address, Link, addresses, links, normalize_cidr
from openimds.linux.ports import addresses_match, port_link_state
from openimds.linux.procfs import pid_in_netns
from openimds.proxy.haproxy import (
    ProxyDefaults,
    ProxySpec,
    owned_proxy_ids,
    proxy_spec,
    router_binds,
)
from openimds.reconcile import actions as act
from openimds.reconcile.claims import Claims
from openimds.reconcile.converge import execute_pass
from openimds.reconcile.executor import Executor

__all__ = [
    "NAMESPACE_PREFIX",
    "RouterActual",
    "RouterApplier",
    "RouterSettings",
    "diff_router",
    "namespace_name",
    "observe_router",
    "proxy_spec_for_plan",
]

LOG = logging.getLogger(__name__)

NAMESPACE_PREFIX = wire.ROUTER_NAMESPACE_PREFIX


def namespace_name(router_id: str) -> str:
    return f"{NAMESPACE_PREFIX}{router_id}"


@dataclass(frozen=True)
class RouterSettings:
    fabric: str  # resolved fabric namespace name
    state_path: str
    # What every proxy of this agent shares (proxy.options.proxy_defaults_from_conf).
    proxy: ProxyDefaults = field(default_factory=ProxyDefaults)

    def ra_dir(self, router_id: str) -> str:
        """The router advertisement daemon's pid and lease files."""
        return os.path.join(self.state_path, "ra", router_id)


@dataclass(frozen=True)
class RouterActual:
    namespace_exists: bool = False
    links: tuple[Link, ...] = ()
    addresses: tuple[Address, ...] = ()
    fabric_links: tuple[Link, ...] = ()  # our ports' bridge sides and their bridges
    sysctls: dict[str, str | None] = field(default_factory=dict)
    iptables: ipt.IptablesState = field(default_factory=ipt.IptablesState)
    ip6tables: ipt.IptablesState = field(default_factory=ipt.IptablesState)
    proxy_configured: bool = False
    ra: DnsmasqProcess | None = None  # the router advertisement daemon
    ra_dir_exists: bool = False
    netns_inode: tuple[int, int] | None = None
    keepalived_configured: bool = False  # a config of ours on disk
    keepalived_running: bool = False  # and its process alive in this namespace

    def link(self, name: str) -> Link | None:
        return next((x for x in self.links if x.name == name), None)

    def fabric_link(self, name: str) -> Link | None:
        return next((x for x in self.fabric_links if x.name == name), None)


def proxy_spec_for_plan(plan: RouterPlan, settings: RouterSettings) -> ProxySpec | None:
    if not plan.metadata_proxy or plan.proxy_listen is None:
        return None
    host, port = plan.proxy_listen
    return proxy_spec(settings.proxy, "router", plan.router_id,
                      router_binds(port, ipv6=host == "::"))


def diff_router(
    router_id: str, plan: RouterPlan | None, actual: RouterActual, settings: RouterSettings
) -> list[act.Action]:
    """The actions that turn `actual` into `plan` (pure)."""
    ns = namespace_name(router_id)
    out: list[act.Action] = []
    ra_dir = settings.ra_dir(router_id)
    ra_pidfile = os.path.join(ra_dir, "pid")
    if plan is None:
        if actual.keepalived_configured:
            out.append(act.StopKeepalived(router_id))
        if actual.proxy_configured:
            out.append(act.StopProxy(router_id))
        if actual.ra is not None:
            out.append(act.StopDnsmasq(actual.ra.pid, ra_pidfile))
        out += [act.DeleteLink(ns, x.name) for x in actual.links if x.name != "lo"]
        if actual.namespace_exists:
            out.append(act.DeleteNamespace(ns))
        if actual.ra_dir_exists:
            out.append(act.RemoveTree(ra_dir))
        return out

    if not actual.namespace_exists:
        out.append(act.EnsureNamespace(ns))
    # Set explicitly: a new namespace copies the host's IPv4 settings (MACHINE-NOTES).
    out += [
        act.SetSysctl(ns, key, value)
        for key, value in plan.sysctls
        if actual.sysctls.get(key) != value
    ]
    if plan.ha is None and actual.keepalived_configured:
        # No longer HA here: keepalived goes first, since it removes its addresses as it
        # stops, and the address sync below then puts the legacy router's back.
        out.append(act.StopKeepalived(router_id))
    # Our rules before any device comes up: they name devices by wildcard (qr-+), and an HA
    # router's copy must never send MLD from the gateway MAC, not even once at link up.
    v4 = render_iptables_restore(plan.rules, actual.iptables, plan.chain_prefix)
    if v4:
        out.append(act.RestoreIptables(ns, v4))
    v6 = render_iptables_restore(plan.rules6, actual.ip6tables, plan.chain_prefix)
    if v6:
        out.append(act.RestoreIptables(ns, v6, ipv6=True))
    all_ports = (*plan.ports, *((plan.ha_port,) if plan.ha_port is not None else ()))
    wanted = {p.name for p in all_ports}
    out += [act.DeleteLink(ns, x.name) for x in actual.links if x.name not in wanted | {"lo"}]
    recreated = False
    for p in all_ports:
        port = port_link_state(
            actual.links,
            actual.fabric_links,
            network_id=p.network_id,
            port_id=p.port_id,
            ifname=p.name,
            mac=p.mac_address,
            mtu=p.mtu,
        )
        if not port.ok:
            out.append(
                act.EnsurePortLink(
                    settings.fabric, p.network_id, p.port_id, ns, p.name, p.mac_address, p.mtu
                )
            )
        if plan.ha is not None:
            out += _ha_addresses(plan, p.name, p.addresses, port.paired, actual)
        elif not port.paired or not addresses_match(actual.addresses, p.name, p.addresses):
            out.append(act.SyncAddresses(ns, p.name, p.addresses))
        recreated = recreated or not port.paired


    if plan.ha is not None:
        out.append(act.EnsureKeepalived(router_id, render_keepalived_conf(plan.ha), ns))

    out += _diff_ra(ns, plan, actual, ra_dir, recreated=recreated)

    spec = proxy_spec_for_plan(plan, settings)
    if spec is not None:
        out.append(act.EnsureProxy(spec, ns))
    elif actual.proxy_configured:
        out.append(act.StopProxy(router_id))
    return out


def _diff_ra(ns: str, plan: RouterPlan, actual: RouterActual, ra_dir: str, *,
             recreated: bool) -> list[act.Action]:
    """Start, restart or stop the advertisement daemon. It binds its qr- devices at start,
    so a changed argv or a re-created device (or a foreign namespace) means a restart."""
    pidfile = os.path.join(ra_dir, "pid")
    proc = actual.ra
    if plan.ra is None:
        return [act.StopDnsmasq(proc.pid, pidfile)] if proc is not None else []
    argv = tuple(daemon_argv(plan.ra.argv(ra_dir)))
    if (proc is not None and proc.argv == argv and not recreated
            and proc.netns_inode == actual.netns_inode):
        return []
    out: list[act.Action] = []
    if proc is not None:
        out.append(act.StopDnsmasq(proc.pid, pidfile))
    # The command line, for operators (and it creates the folder dnsmasq writes its pid to).
    out.append(act.WriteFile(os.path.join(ra_dir, "argv"), "\n".join(argv) + "\n"))
    out.append(act.StartDnsmasq(ns, argv, os.path.join(ra_dir, "started"), ""))
    return out


def _ha_addresses(plan: RouterPlan, dev: str, own: tuple[str, ...], paired: bool,
                  actual: RouterActual) -> list[act.Action]:
    """An HA router's addresses. keepalived adds and removes the qr- addresses and the
    primary VIP; the ha- device's own address is ours. Without a running keepalived nothing
    of its may be left (a keepalived killed with -9, or a legacy router turned HA, leaves its
    addresses behind, and a backup holding the gateway address would answer for it): then
    the qr- devices are emptied and the ha- device holds just its own address."""
    ns = namespace_name(plan.router_id)
    is_ha_dev = plan.ha_port is not None and dev == plan.ha_port.name
    keep = own if is_ha_dev else ()
    if not actual.keepalived_running:
        if not paired or not addresses_match(actual.addresses, dev, keep):
            return [act.SyncAddresses(ns, dev, keep)]
        return []
    have = {a.cidr for a in actual.addresses if a.dev == dev} if paired else set()
    missing = tuple(c for c in keep if normalize_cidr(c) not in have)
    return [act.EnsureAddresses(ns, dev, missing)] if missing else []


def observe_router(
    router_id: str,
    plan: RouterPlan | None,
    settings: RouterSettings,
    proxy_ids: Iterable[str],
    keepalived: KeepalivedSupervisor | None = None,
) -> RouterActual:
    ns = namespace_name(router_id)
    exists = netns_exists(ns)
    wanted_fabric: set[str] = set()
    if plan is not None:
        for p in (*plan.ports, *((plan.ha_port,) if plan.ha_port is not None else ())):
            wanted_fabric |= {bridge_name(p.network_id), fabric_port_name(p.port_id)}
    fabric = tuple(x for x in links(settings.fabric) if x.name in wanted_fabric)
    ra_dir = settings.ra_dir(router_id)
    ra = find_dnsmasq(os.path.join(ra_dir, "pid"))
    ka_conf = keepalived is not None and router_id in keepalived.owned_ids()
    ka_pid = keepalived.pid(router_id) if keepalived is not None else None
    if not exists:
        return RouterActual(fabric_links=fabric, proxy_configured=router_id in set(proxy_ids),
                            ra=ra, ra_dir_exists=os.path.isdir(ra_dir),
                            keepalived_configured=ka_conf)
    sysctls = {k: get_sysctl(ns, k) for k, _ in plan.sysctls} if plan is not None else {}
    want6 = plan is not None and bool(plan.rules6)
    return RouterActual(
        namespace_exists=True,
        links=tuple(links(ns)),
        addresses=tuple(addresses(ns)),
        fabric_links=fabric,
        sysctls=sysctls,
        iptables=ipt.save(ns) if plan is not None else ipt.IptablesState(),
        ip6tables=ipt.save(ns, ipv6=True) if want6 else ipt.IptablesState(),
        proxy_configured=router_id in set(proxy_ids),
        ra=ra,
        ra_dir_exists=os.path.isdir(ra_dir),
        netns_inode=netns_inode(ns),
        keepalived_configured=ka_conf,
        keepalived_running=ka_pid is not None and pid_in_netns(ka_pid, ns),
    )


class RouterApplier:
    def __init__(self, settings: RouterSettings, proxy: Any) -> None:
        self.settings = settings
        self.proxy = proxy  # HaproxySupervisor
        self.keepalived = KeepalivedSupervisor(settings.state_path)
        self.executor = Executor(proxy, self.keepalived)
        self.claims = Claims(settings.state_path, "router")

    def apply(
        self,
        router_id: str,
        plan: RouterPlan | None,
        *,
        log: logging.LoggerAdapter[Any] | logging.Logger = LOG,
    ) -> list[act.Action]:
        actual = observe_router(router_id, plan, self.settings, self.proxy_ids(),
                                self.keepalived)
        actions = diff_router(router_id, plan, actual, self.settings)
        execute_pass(
            self.executor, self.claims, router_id, actions, wanted=plan is not None, log=log
        )
        return actions

    def children(self, router_id: str) -> list[int]:
        """The router's live haproxy, advertisement daemon and keepalived pids (verified
        through /proc): when one dies, the router is reconciled again, which starts it
        again."""
        ra = find_dnsmasq(os.path.join(self.settings.ra_dir(router_id), "pid"))
        pids = [self.proxy.pid(router_id), ra.pid if ra is not None else None,
                self.keepalived.pid(router_id)]
        return [p for p in pids if p is not None]

    def ha_state(self, router_id: str, plan: RouterPlan) -> str | None:
        """`active` or `standby` for an HA router built here (read from its namespace), None
        for a legacy router."""
        if plan.ha is None:
            return None
        ns = namespace_name(router_id)
        if not netns_exists(ns):
            return "standby"
        held = [(a.dev, a.cidr) for a in addresses(ns, plan.ha.device)]
        return state_from_addresses(plan.ha, held)

    def proxy_ids(self) -> list[str]:
        """Routers with a proxy config of ours on disk. Never a metadata network's proxy,
        which stamps X-Neutron-Router-ID too but belongs to the DHCP agent."""
        return owned_proxy_ids(self.settings.state_path, "router")
