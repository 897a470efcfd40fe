"""`openimds l3-agent`: one reconcile key per router id.

A router's desired state depends on the router row, its interface ports (device_id = router
id), and the subnets and networks of those ports (prefix lengths, MTU). Everything else is in
`openimds.reconcile.InventoryAgent`; the wiring from a ConfigOpts is `build_l3_agent`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from collections.abc import Set as AbstractSet
from datetime import datetime
from typing import TYPE_CHECKING, Any

from openimds.feed import NETWORK_KINDS, ChangeFeed, Kind, ListSpec
from openimds.l3.apply import RouterApplier
from openimds.l3.model import HA_OWNER, ROUTER_INTERFACE_OWNERS, RouterInfo, router_from_neutron
from openimds.l3.plan import L3Options, desired_router_state
from openimds.l3.settings import settings_from_conf
from openimds.linux.fabric import ensure_fabric
from openimds.reconcile import InventoryAgent, Owners, Snapshot
from openimds.rows import compact_row

if TYPE_CHECKING:
    from oslo_config.cfg import ConfigOpts

__all__ = ["L3Agent", "build_l3_agent"]

# The port attributes the L3 agent reads (l3/model.router_from_neutron, hosts_router): all its
# snapshot keeps of a port (issue 14: agent RSS at 100k ports).
L3_PORT_FIELDS = ("id", "network_id", "mac_address", "fixed_ips", "device_owner", "device_id",
                  "binding:host_id")
L3_LISTING = {kind: ListSpec(fields=L3_PORT_FIELDS if kind is Kind.PORT else None,
                             each=compact_row) for kind in NETWORK_KINDS}
# A router's own ports (interfaces and HA ports) by router id: all a router's model and
# scheduling read of the ports, so a change re-plans a router from its ports only.
_ROUTER_PORTS = ("device_owner", frozenset((*ROUTER_INTERFACE_OWNERS, HA_OWNER)))


class L3Agent(InventoryAgent):
    name = "l3-agent"
    listing = L3_LISTING
    incremental_owners = True

    def __init__(
        self,
        reader: ChangeFeed,
        applier: RouterApplier,
        options: L3Options,
        *,
        fabric_namespace: str,
        host: str = "",
        **kwargs: Any,
    ) -> None:
        super().__init__(reader, **kwargs)
        self.applier = applier
        self.options = options
        self.fabric_namespace = fabric_namespace
        # [DEFAULT] host: a router whose interface ports are bound to another host is that
        # host's L3 agent's; unbound routers are everyone's (round 1's one agent).
        self.host = host
        self._routers: tuple[int, dict[str, RouterInfo | None]] | None = None

    def prepare(self) -> None:
        ensure_fabric(self.fabric_namespace)

    def keys(self, snap: Snapshot) -> set[str]:
        return {r for r in snap.ids("routers") if self.hosts_router(snap, r)}

    @staticmethod
    def _router_ports(snap: Snapshot, router_id: str) -> tuple[Mapping[str, Any], ...]:
        return snap.grouped("ports", "device_id", _ROUTER_PORTS).get(router_id, ())

    def hosts_router(self, snap: Snapshot, router_id: str) -> bool:
        # An HA router lives where its ha- ports are bound (its interfaces are unbound).
        ports = self._router_ports(snap, router_id)
        ha = [str(p.get("binding:host_id") or "") for p in ports
              if p.get("device_owner") == HA_OWNER]
        if ha and self.host:
            return self.host in ha
        return hosted_here(self.host, [
            str(p.get("binding:host_id") or "") for p in ports
            if p.get("device_owner") in ROUTER_INTERFACE_OWNERS])

    def ha_states(self) -> dict[str, str]:
        """router id -> `active`/`standby` for the HA routers built here, as the namespaces
        show them now (reported as configurations.ha_routers; the control plane stores it)."""
        snap = self.snapshot
        if snap is None:
            return {}
        out: dict[str, str] = {}
        for rid in snap.row_ids("routers"):
            router = self._model(snap, rid)
            if router is None or router.ha is None or not self.hosts_router(snap, rid):
                continue
            state = self.applier.ha_state(rid, desired_router_state(router, self.options))
            if state is not None:
                out[rid] = state
        return out

    def owners(self, snap: Snapshot) -> Owners:
        out: dict[tuple[str, str], set[str]] = {(Kind.ROUTER, r["id"]): {r["id"]} for r in snap.routers}
        routers = snap.ids("routers")
        for p in snap.ports:
            rid = p.get("device_id")
            if (p.get("device_owner") in ROUTER_INTERFACE_OWNERS
                    or p.get("device_owner") == HA_OWNER) and rid:
                out[(Kind.PORT, p["id"])] = {rid}
                if rid in routers:
                    out.setdefault((Kind.NETWORK, p["network_id"]), set()).add(rid)
                    for f in p.get("fixed_ips") or ():
                        out.setdefault((Kind.SUBNET, f["subnet_id"]), set()).add(rid)
            else:
                # Known, and not ours: an instance port's change never touches a router.
                out[(Kind.PORT, p["id"])] = set()
        for n in snap.networks:
            out.setdefault((Kind.NETWORK, n["id"]), set())
        for s in snap.subnets:
            out.setdefault((Kind.SUBNET, s["id"]), set())
        return out

    def row_owners(self, snap: Snapshot, resource: str, rid: str) -> AbstractSet[str] | None:
        """What `owners` says of one row, from that row and the router ports of its network
        (a network's or subnet's routers): a change re-plans its routers only."""
        if resource == Kind.ROUTER:
            return frozenset((rid,)) if snap.find("routers", rid) is not None else None
        if resource == Kind.PORT:
            port = snap.find("ports", rid)
            if port is None:
                return None
            owner, router_id = port.get("device_owner"), port.get("device_id")
            if (owner in ROUTER_INTERFACE_OWNERS or owner == HA_OWNER) and router_id:
                return frozenset((str(router_id),))
            return frozenset()
        if resource not in (Kind.NETWORK, Kind.SUBNET):
            return None
        row = snap.find(Kind(resource).collection, rid)
        network_id = rid if resource == Kind.NETWORK else (row or {}).get("network_id")
        found: set[str] = set()
        if network_id:
            for p in snap.grouped("ports", "network_id").get(str(network_id), ()):
                router_id = p.get("device_id")
                owner = p.get("device_owner")
                if not router_id or snap.find("routers", str(router_id)) is None or not (
                        owner in ROUTER_INTERFACE_OWNERS or owner == HA_OWNER):
                    continue
                if resource == Kind.NETWORK or any(
                        f.get("subnet_id") == rid for f in p.get("fixed_ips") or ()):
                    found.add(str(router_id))
        if row is None and not found:
            return None
        return frozenset(found)

    def orphan_keys(self) -> set[str]:
        # Only what our own state directory says we created (see reconcile/claims.py).
        found = (self.applier.claims.ids() | set(self.applier.proxy_ids())
                 | set(self.applier.keepalived.owned_ids()))
        return {k for k in found if self.owns(k)}

    def children(self, key: str) -> list[int]:
        return self.applier.children(key)

    def _model(self, snap: Snapshot, router_id: str) -> RouterInfo | None:
        """One router's model, from its own ports and their subnets and networks (a change
        re-plans the routers it touches without a pass over the other ports)."""
        if self._routers is None or self._routers[0] != snap.revision:
            self._routers = (snap.revision, {})
        made = self._routers[1]
        if router_id not in made:
            router = snap.find("routers", router_id)
            if router is None:
                made[router_id] = None
            else:
                ports = self._router_ports(snap, router_id)
                subnet_ids = {str(f["subnet_id"]) for p in ports for f in p.get("fixed_ips") or ()
                              if f.get("subnet_id")}
                network_ids = {str(p["network_id"]) for p in ports if p.get("network_id")}
                subnets = [s for s in (snap.find("subnets", i) for i in subnet_ids) if s]
                networks = [n for n in (snap.find("networks", i) for i in network_ids) if n]
                made[router_id] = router_from_neutron(router, ports, subnets, networks, self.host)
        return made[router_id]

    def reconcile_key(
        self, key: str, snap: Snapshot, now: datetime, log: logging.LoggerAdapter[Any]
    ) -> datetime | None:
        router = self._model(snap, key)
        if not self.hosts_router(snap, key):
            router = None  # scheduled to another host's L3 agent: converge to nothing here
        plan = desired_router_state(router, self.options) if router else None
        self.applier.apply(key, plan, log=log)
        return None


def hosted_here(host: str, interface_hosts: list[str]) -> bool:
    """Pure: does the L3 agent on `host` build a router whose interface ports are bound to
    `interface_hosts`? Unbound interfaces (or no host configured) mean yes, as in round 1."""
    bound = {h for h in interface_hosts if h}
    return not host or not bound or host in bound


def build_l3_agent(conf: ConfigOpts, reader: ChangeFeed, **kwargs: Any) -> L3Agent:
    """The agent for a loaded `l3-agent` ConfigOpts over `reader`."""
    from openimds.proxy import HaproxySupervisor
    from openimds.proxy.options import DEV_LOG

    settings = settings_from_conf(conf)
    ensure_fabric(settings.fabric_namespace)
    applier = RouterApplier(settings.router,
                            HaproxySupervisor(settings.router.proxy.state_path))
    agent = L3Agent(
        reader,
        applier,
        settings.options,
        fabric_namespace=settings.fabric_namespace,
        host=settings.host,
        **kwargs,
    )
    log_target = settings.router.proxy.log_target
    if log_target not in (None, DEV_LOG):
        agent.log_sink_path = log_target
    return agent
