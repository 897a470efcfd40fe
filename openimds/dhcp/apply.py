"""Make one network's DHCP namespace match its plan: observe → pure diff → execute.

`observe_dhcp` reads what exists (namespace, links, addresses, dnsmasq's files and process, the
proxy configs on disk); `diff_dhcp(plan, actual, settings)` is pure and returns the typed
actions of `openimds.reconcile.actions`; `DhcpApplier.apply` runs them. `plan=None` (network gone,
or nothing to serve) converges to nothing: proxy, dnsmasq, links, namespace and files go, and
the network's bridge too once the network itself is gone from the inventory.

dnsmasq is daemonised and tracked by the pid file in its conf dir, so it survives an agent
restart and is adopted (same pid). It is restarted only when its argv differs from the plan's
(or its tap was re-created), and sent SIGHUP only when the files it reads changed. A marker
file `reloaded` holds "<pid> <digest of the files>" written after each start or SIGHUP, so a
crash between writing the files and signalling is caught on the next pass.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from openimds import wire
from openimds.dhcp.plan import DhcpPlan
from openimds.dhcp.settings import DhcpSettings
from openimds.l3.plan import render_iptables_restore
from openimds.linux import iptables as ipt
from openimds.linux.dnsmasq import DnsmasqProcess, daemon_argv, find_dnsmasq, netns_inode
from openimds.linux.fabric import bridge_name, fabric_port_name
from openimds.linux.keepalived import KeepalivedSupervisor, render_vrrp_conf
from openimds.linux.netns import netns_exists
from openimds.linux.observe import Address, Link, addresses, links, normalize_cidr
from openimds.linux.ports import addresses_match, port_link_state
from openimds.linux.procfs import pid_in_netns
from openimds.proxy.haproxy import owned_proxy_ids
from openimds.reconcile import actions as act
from openimds.reconcile.claims import Claims
from openimds.reconcile.converge import execute_pass
from openimds.reconcile.executor import Executor

__all__ = [
    "MARKER_NAME",
    "DhcpActual",
    "DhcpApplier",
    "DhcpSettings",
    "diff_dhcp",
    "files_digest",
    "namespace_name",
    "observe_dhcp",
]

LOG = logging.getLogger(__name__)

MARKER_NAME = "reloaded"
NAMESPACE_PREFIX = wire.DHCP_NAMESPACE_PREFIX


def namespace_name(network_id: str) -> str:
    return f"{NAMESPACE_PREFIX}{network_id}"


@dataclass(frozen=True)
class DhcpActual:
    """What one network has on this host, as plain values."""

    namespace_exists: bool = False
    links: tuple[Link, ...] = ()  # in qdhcp-<id>
    addresses: tuple[Address, ...] = ()  # in qdhcp-<id>
    fabric_links: tuple[Link, ...] = ()  # the network's bridge and our port's bridge side
    files: dict[str, str | None] = field(default_factory=dict)
    conf_dir_exists: bool = False
    dnsmasq: DnsmasqProcess | None = None
    netns_inode: tuple[int, int] | None = None
    marker: str | None = None
    proxy_configured: bool = False  # a proxy config owned by this network is on disk
    iptables: ipt.IptablesState = field(default_factory=ipt.IptablesState)
    ip6tables: ipt.IptablesState = field(default_factory=ipt.IptablesState)
    keepalived_configured: bool = False  # a metadata next hop config of ours on disk
    keepalived_running: bool = False  # and its process alive in this namespace

    def link(self, name: str) -> Link | None:
        return next((x for x in self.links if x.name == name), None)

    def fabric_link(self, name: str) -> Link | None:
        return next((x for x in self.fabric_links if x.name == name), None)


KEEPALIVED_SUBDIR = "dhcp_ha"  # <state_path>/dhcp_ha/<network id>/keepalived.conf


def files_digest(files: dict[str, str]) -> str:
    h = hashlib.sha256()
    for path in sorted(files):
        h.update(path.encode() + b"\0" + files[path].encode() + b"\0")
    return h.hexdigest()[:32]


def diff_dhcp(
    network_id: str,
    plan: DhcpPlan | None,
    actual: DhcpActual,
    settings: DhcpSettings,
    *,
    network_exists: bool,
) -> list[act.Action]:
    """The actions that turn `actual` into `plan` (pure)."""
    ns = namespace_name(network_id)
    conf_dir = settings.conf_dir(network_id)
    pidfile = os.path.join(conf_dir, "pid")
    bridge = bridge_name(network_id)
    out: list[act.Action] = []

    if plan is None:
        if actual.keepalived_configured:
            out.append(act.StopKeepalived(network_id))
        if actual.proxy_configured:
            out.append(act.StopProxy(network_id))
        if actual.dnsmasq is not None:
            out.append(act.StopDnsmasq(actual.dnsmasq.pid, pidfile))
        # Deleting our end of a veth removes the bridge side at once (a namespace's devices
        # otherwise vanish asynchronously, and the names would still be taken).
        out += [act.DeleteLink(ns, x.name) for x in actual.links if x.name != "lo"]
        if actual.namespace_exists:
            out.append(act.DeleteNamespace(ns))
        if actual.conf_dir_exists:
            out.append(act.RemoveTree(conf_dir))
        if not network_exists and actual.fabric_link(bridge) is not None:
            out.append(act.DeleteLink(settings.fabric, bridge))
        return out

    if not actual.namespace_exists:
        out.append(act.EnsureNamespace(ns))
    stopping = plan.vrrp is None and actual.keepalived_configured
    if stopping:
        # keepalived goes first: it removes its addresses as it stops, and the address sync
        # below (forced: what was observed still shows them) then puts what the plan holds
        # statically.
        out.append(act.StopKeepalived(network_id))
    out += [
        act.DeleteLink(ns, x.name)
        for x in actual.links
        if x.name not in ("lo", plan.interface)
    ]
    port = port_link_state(
        actual.links,
        actual.fabric_links,
        network_id=network_id,
        port_id=plan.port_id,
        ifname=plan.interface,
        mac=plan.mac_address,
        mtu=plan.mtu,
    )
    paired = port.paired
    if not port.ok:
        out.append(
            act.EnsurePortLink(
                settings.fabric,
                network_id,
                plan.port_id,
                ns,
                plan.interface,
                plan.mac_address,
                plan.mtu,
            )
        )

    spec = plan.proxy
    if spec is None and actual.proxy_configured:
        # Before the address goes: haproxy is bound to it.
        out.append(act.StopProxy(network_id))

    wanted = _wanted_addresses(plan, actual, paired)
    if stopping or not paired or not addresses_match(actual.addresses, plan.interface, wanted):
        out.append(act.SyncAddresses(ns, plan.interface, wanted))

    # The hop-limit rules before the proxy (re)starts, so its first token answer is limited.
    v4 = render_iptables_restore(plan.rules, actual.iptables, plan.chain_prefix)
    if v4:
        out.append(act.RestoreIptables(ns, v4))
    v6 = render_iptables_restore(plan.rules6, actual.ip6tables, plan.chain_prefix)
    if v6:
        out.append(act.RestoreIptables(ns, v6, ipv6=True))

    files = plan.files()
    changed = [p for p, text in files.items() if actual.files.get(p) != text]
    out += [act.WriteFile(p, files[p]) for p in sorted(changed)]

    digest = files_digest(files)
    marker = os.path.join(conf_dir, MARKER_NAME)
    argv = tuple(daemon_argv(plan.dnsmasq.argv()))
    proc = actual.dnsmasq
    restart = (
        proc is None
        or proc.netns_inode != actual.netns_inode
        or proc.argv != argv
        or not paired  # a new tap: dnsmasq's sockets belong to the old one
    )
    if restart:
        if proc is not None:
            out.append(act.StopDnsmasq(proc.pid, pidfile))
        out.append(act.StartDnsmasq(ns, argv, marker, digest))
    elif proc is not None and (changed or actual.marker != f"{proc.pid} {digest}"):
        out.append(act.ReloadDnsmasq(pidfile, marker, digest))

    if plan.vrrp is not None:
        # Always, like the proxy: adopts after an agent restart, restarts a dead one.
        out.append(act.EnsureKeepalived(network_id, render_vrrp_conf(plan.vrrp), ns))
    if spec is not None:
        # Always: ensure is idempotent and cheap, adopts after a restart, restarts if dead.
        out.append(act.EnsureProxy(spec, ns))
    return out


def _wanted_addresses(plan: DhcpPlan, actual: DhcpActual, paired: bool) -> tuple[str, ...]:
    """The tap's addresses: the plan's, plus the metadata next hops keepalived holds right
    now (they are its to add and remove). Without a running keepalived none of them may stay:
    a namespace holding one without being master would answer ARP for it beside the master."""
    if plan.vrrp is None or not actual.keepalived_running or not paired:
        return tuple(plan.addresses)
    held = {a.cidr for a in actual.addresses if a.dev == plan.interface}
    return (*plan.addresses, *(c for c in plan.vips if normalize_cidr(c) in held))


def _read(path: str) -> str | None:
    try:
        with open(path) as fh:
            return fh.read()
    except FileNotFoundError:
        return None


def observe_dhcp(
    network_id: str,
    plan: DhcpPlan | None,
    settings: DhcpSettings,
    proxy_ids: Iterable[str],
    keepalived: KeepalivedSupervisor | None = None,
) -> DhcpActual:
    """Read the state of one network on this host (only what `diff_dhcp` looks at)."""
    ns = namespace_name(network_id)
    exists = netns_exists(ns)
    ka_pid = keepalived.pid(network_id) if keepalived is not None else None
    conf_dir = settings.conf_dir(network_id)
    wanted_fabric = {bridge_name(network_id)}
    if plan is not None:
        wanted_fabric.add(fabric_port_name(plan.port_id))
    return DhcpActual(
        namespace_exists=exists,
        links=tuple(links(ns)) if exists else (),
        addresses=tuple(addresses(ns)) if exists else (),
        fabric_links=tuple(x for x in links(settings.fabric) if x.name in wanted_fabric),
        files={p: _read(p) for p in plan.files()} if plan is not None else {},
        conf_dir_exists=os.path.isdir(conf_dir),
        dnsmasq=find_dnsmasq(os.path.join(conf_dir, "pid")),
        netns_inode=netns_inode(ns) if exists else None,
        marker=(_read(os.path.join(conf_dir, MARKER_NAME)) or "").strip() or None,
        proxy_configured=network_id in set(proxy_ids),
        # Only mangle: the hop-limit rules are all there is of ours in a DHCP namespace.
        iptables=(ipt.save(ns, tables=("mangle",)) if exists and plan is not None
                  else ipt.IptablesState()),
        ip6tables=(ipt.save(ns, ipv6=True, tables=("mangle",))
                   if exists and plan is not None else ipt.IptablesState()),
        keepalived_configured=(keepalived is not None
                               and network_id in keepalived.owned_ids()),
        keepalived_running=ka_pid is not None and exists and pid_in_netns(ka_pid, ns),
    )


class DhcpApplier:
    """observe → diff → execute for one network at a time."""

    def __init__(self, settings: DhcpSettings, proxy: Any) -> None:
        self.settings = settings
        self.proxy = proxy  # HaproxySupervisor (ensure/stop)
        self.keepalived = KeepalivedSupervisor(settings.state_path, subdir=KEEPALIVED_SUBDIR)
        self.executor = Executor(proxy, self.keepalived)
        self.claims = Claims(settings.state_path, "network")

    def apply(
        self,
        network_id: str,
        plan: DhcpPlan | None,
        *,
        network_exists: bool,
        log: logging.LoggerAdapter[Any] | logging.Logger = LOG,
    ) -> list[act.Action]:
        actual = observe_dhcp(network_id, plan, self.settings, self.proxy_ids(),
                              self.keepalived)
        actions = diff_dhcp(
            network_id, plan, actual, self.settings, network_exists=network_exists
        )
        execute_pass(
            self.executor, self.claims, network_id, actions, wanted=plan is not None, log=log
        )
        return actions

    def children(self, network_id: str) -> list[int]:
        """The network's live dnsmasq and haproxy pids (verified through /proc)."""
        pids = []
        found = find_dnsmasq(os.path.join(self.settings.conf_dir(network_id), "pid"))
        if found is not None:
            pids.append(found.pid)
        for pid in (self.proxy.pid(network_id), self.keepalived.pid(network_id)):
            if pid is not None:
                pids.append(pid)
        return pids

    def vrrp_state(self, network_id: str, plan: DhcpPlan | None) -> str | None:
        """`active` when this namespace holds the network's metadata next hops, `standby`
        when keepalived runs here without them, None when no keepalived is planned."""
        if plan is None or plan.vrrp is None:
            return None
        ns = namespace_name(network_id)
        if not netns_exists(ns):
            return "standby"
        held = {a.cidr for a in addresses(ns, plan.interface)}
        return "active" if all(normalize_cidr(c) in held for c in plan.vips) else "standby"

    def keepalived_ids(self) -> list[str]:
        return self.keepalived.owned_ids()

    def proxy_ids(self) -> list[str]:
        """Networks with a proxy config of ours on disk (metadata networks included)."""
        return owned_proxy_ids(self.settings.state_path, "network")
