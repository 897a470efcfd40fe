"""A compute host's `qmeta-<network>` namespace (metadata_mode = distributed): plan → observe →
diff → apply, run by the l2-agent after the network's bridge (docs/distributed-metadata.md).

The namespace exists exactly while this host has an instance port (compute:* / baremetal:*)
bound on the network and the network has its distributed metadata port (device_id
`qmeta-<network>`, owner `network:distributed`, created by the control plane in distributed
mode). It holds the port (veth `tap<port[:11]>` on `brq<network>`, far end `qm-<port[:11]>`
with the port's MAC) with the port's addresses plus 169.254.169.254/32, and a haproxy on
169.254.169.254:80 that stamps the network id and forwards to this host's metadata agent. The
bridge's localport table (`portsec/localport.py`) keeps all of it on this host.

`desired_meta_state` and `diff_meta` are pure; `MetaApplier` observes and runs the typed
actions of `openimds.reconcile.actions` (the same executor as the DHCP and L3 agents). A restart
adopts: namespace, veth and addresses are compared, haproxy is adopted by its pid file.
"""

from __future__ import annotations

import ipaddress
import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from openimds import wire
from openimds.l3.plan import render_iptables_restore
from openimds.linux import iptables as ipt
from openimds.linux.fabric import bridge_name, fabric_port_name
from openimds.linux.netns import list_netns, netns_exists
from openimds.linux.nftables import apply_ruleset
from openimds.linux.observe import Address, Link, addresses, links
from openimds.linux.ports import addresses_match, port_link_state
from openimds.metadata_retirement import retired, retiring_until
from openimds.portsec.localport import LocalPort, localport_rules
from openimds.proxy.haproxy import (
    METADATA_IPV4_CIDR,
    ProxyDefaults,
    ProxySpec,
    network_binds,
    owned_proxy_ids,
    proxy_spec,
)
from openimds.proxy.hoplimit import ttl_rules
from openimds.reconcile import actions as act
from openimds.reconcile.executor import Executor
from openimds.wire import DISTRIBUTED_OWNER, INSTANCE_OWNER_PREFIXES

__all__ = ["NAMESPACE_PREFIX", "MetaActual", "MetaApplier", "MetaPlan", "MetaSettings",
           "desired_meta_state", "diff_meta", "meta_state_path", "namespace_name"]

LOG = logging.getLogger(__name__)

NAMESPACE_PREFIX = wire.METADATA_NAMESPACE_PREFIX
# Our iptables chains in a qmeta- namespace: the token PUT's hop limit (proxy/hoplimit.py).
CHAIN_PREFIX = "openimds-meta-"


def namespace_name(network_id: str) -> str:
    return f"{NAMESPACE_PREFIX}{network_id}"


@dataclass(frozen=True)
class MetaPlan:
    network_id: str
    namespace: str
    port_id: str
    interface: str  # inside the namespace
    mac_address: str
    mtu: int
    addresses: tuple[str, ...]  # "ip/prefix" on each subnet, then 169.254.169.254/32
    localport: LocalPort
    # mangle rules (iptables-save form): the token PUT's answer leaves with the instance's
    # hop limit, as on the DHCP and router paths.
    rules: tuple[ipt.Rule, ...] = tuple(ttl_rules(CHAIN_PREFIX, ipv6=False))
    # A retiring port (openimds.metadata_retirement) serves the old leases until then.
    retiring_until: datetime | None = None


def desired_meta_state(network: Mapping[str, Any] | None, subnets: Iterable[Mapping[str, Any]],
                       ports: Iterable[Mapping[str, Any]], host: str,
                       uplink: str | None, now: datetime | None = None) -> MetaPlan | None:
    """The namespace for one network on `host`; None = nothing of it should exist here.

    `ports` are the network's ports, `subnets` (any, filtered by id) give the prefixes, and
    `uplink` is the bridge's uplink device on this host (None: no bridge, so nothing). A
    retiring metadata port keeps its namespace until its deadline, judged at `now` (None: no
    deadline has passed).
    """
    if network is None or uplink is None:
        return None
    net_id = str(network["id"])
    ports = list(ports)
    meta = next((p for p in ports if p.get("device_owner") == DISTRIBUTED_OWNER
                 and p.get("device_id") == namespace_name(net_id)), None)
    if meta is None or (now is not None and retired(meta.get("binding:profile"), now)):
        return None
    if not any(p.get("binding:host_id") == host
               and str(p.get("device_owner") or "").startswith(INSTANCE_OWNER_PREFIXES)
               for p in ports):
        return None
    prefixes = {str(s["id"]): ipaddress.ip_network(str(s["cidr"]), strict=False)
                for s in subnets if s.get("network_id", net_id) == net_id}
    cidrs: list[str] = []
    ips: list[str] = []
    for fixed in meta.get("fixed_ips") or ():
        net = prefixes.get(str(fixed.get("subnet_id")))
        if net is None or net.version != 4:
            continue
        cidrs.append(f"{fixed['ip_address']}/{net.prefixlen}")
        ips.append(str(fixed["ip_address"]))
    if not cidrs:
        return None
    port_id = str(meta["id"])
    mac = str(meta["mac_address"]).lower()
    until = retiring_until(meta.get("binding:profile"))
    return MetaPlan(
        network_id=net_id,
        namespace=namespace_name(net_id),
        port_id=port_id,
        interface=f"qm-{port_id[:11]}",
        mac_address=mac,
        mtu=int(str(network.get("mtu") or 1500)),
        addresses=(*cidrs, METADATA_IPV4_CIDR),
        localport=LocalPort(mac, tuple(ips), uplink),
        retiring_until=until if isinstance(until, datetime) else None,
    )


@dataclass(frozen=True)
class MetaSettings:
    fabric: str
    state_path: str  # the proxies' files: <state_path>/ns-metadata-proxy/<network>.conf
    # What every qmeta- proxy shares; its `state_path` is this one (meta_state_path).
    proxy: ProxyDefaults = field(default_factory=ProxyDefaults)


@dataclass(frozen=True)
class MetaActual:
    namespace_exists: bool = False
    links: tuple[Link, ...] = ()
    addresses: tuple[Address, ...] = ()
    fabric_links: tuple[Link, ...] = ()
    proxy_configured: bool = False
    iptables: ipt.IptablesState = field(default_factory=ipt.IptablesState)


def meta_proxy_spec(plan: MetaPlan, settings: MetaSettings) -> ProxySpec:
    return proxy_spec(settings.proxy, "network", plan.network_id, network_binds())


def diff_meta(network_id: str, plan: MetaPlan | None, actual: MetaActual,
              settings: MetaSettings) -> list[act.Action]:
    """The actions that turn `actual` into `plan` (pure)."""
    ns = namespace_name(network_id)
    out: list[act.Action] = []
    if plan is None:
        if actual.proxy_configured:
            out.append(act.StopProxy(network_id))
        # Our end of the veth first: the bridge side goes at once (a namespace's devices
        # otherwise vanish asynchronously and keep the names taken).
        out += [act.DeleteLink(ns, x.name) for x in actual.links if x.name != "lo"]
        if actual.namespace_exists:
            out.append(act.DeleteNamespace(ns))
        return out
    if not actual.namespace_exists:
        out.append(act.EnsureNamespace(ns))
    out += [act.DeleteLink(ns, x.name) for x in actual.links
            if x.name not in ("lo", plan.interface)]
    port = port_link_state(actual.links, actual.fabric_links, network_id=network_id,
                           port_id=plan.port_id, ifname=plan.interface,
                           mac=plan.mac_address, mtu=plan.mtu)
    if not port.ok:
        out.append(act.EnsurePortLink(settings.fabric, network_id, plan.port_id, ns,
                                      plan.interface, plan.mac_address, plan.mtu))
    if not port.paired or not addresses_match(actual.addresses, plan.interface,
                                              plan.addresses):
        out.append(act.SyncAddresses(ns, plan.interface, plan.addresses))
    rules = render_iptables_restore(plan.rules, actual.iptables, CHAIN_PREFIX)
    if rules:
        out.append(act.RestoreIptables(ns, rules))
    # Always: idempotent and cheap; adopts after a restart, restarts a dead haproxy.
    out.append(act.EnsureProxy(meta_proxy_spec(plan, settings), ns))
    return out


class MetaApplier:
    """observe → diff → execute for one network's qmeta- namespace, then its localport table."""

    def __init__(self, settings: MetaSettings, proxy: Any) -> None:
        self.settings = settings
        self.proxy = proxy  # HaproxySupervisor over settings.state_path
        self.executor = Executor(proxy)

    def observe(self, network_id: str, plan: MetaPlan | None) -> MetaActual:
        ns = namespace_name(network_id)
        exists = netns_exists(ns)
        wanted = {bridge_name(network_id)}
        if plan is not None:
            wanted.add(fabric_port_name(plan.port_id))
        return MetaActual(
            namespace_exists=exists,
            links=tuple(links(ns)) if exists else (),
            addresses=tuple(addresses(ns)) if exists else (),
            fabric_links=tuple(x for x in links(self.settings.fabric) if x.name in wanted)
            if plan is not None else (),
            proxy_configured=network_id in set(self.proxy_ids()),
            iptables=(ipt.save(ns, tables=("mangle",)) if exists and plan is not None
                      else ipt.IptablesState()),
        )

    def apply(self, network_id: str, plan: MetaPlan | None,
              log: logging.LoggerAdapter[Any] | logging.Logger = LOG) -> list[act.Action]:
        actions = diff_meta(network_id, plan, self.observe(network_id, plan), self.settings)
        changes = [a for a in actions if not isinstance(a, act.EnsureProxy)]
        if changes:
            log.info("qmeta: %d actions: %s", len(changes),
                     ", ".join(type(a).__name__ for a in changes))
        # The localport table before the port is plugged, so not one frame of it leaves.
        if plan is not None:
            apply_ruleset(self.settings.fabric, localport_rules(network_id, plan.localport))
        self.executor.run(actions)
        if plan is None:
            apply_ruleset(self.settings.fabric, localport_rules(network_id, None))
        return actions

    def proxy_ids(self) -> list[str]:
        return owned_proxy_ids(self.settings.state_path, "network")

    def owned_networks(self) -> set[str]:
        """Networks with a qmeta- namespace or a proxy of ours on this host (adoption and
        orphan removal after a restart)."""
        found = {n.removeprefix(NAMESPACE_PREFIX) for n in list_netns(NAMESPACE_PREFIX)}
        return found | set(self.proxy_ids())

    def children(self, network_id: str) -> list[int]:
        pid = self.proxy.pid(network_id)
        return [pid] if pid is not None else []


def meta_state_path(state_path: str) -> str:
    """The l2-agent's own proxy folder, apart from a DHCP agent's on the same host (both key
    their proxies by network id)."""
    return os.path.join(state_path, "qmeta")
