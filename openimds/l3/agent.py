"""`openimds l3-agent`: one reconcile key per router id.

A router's desired state depends on the router row, its interface ports (device_id = router
id), and the subnets and networks of those ports (prefix lengths, MTU). Everything else is in
`openimds.reconcile.InventoryAgent`; the wiring from a ConfigOpts is `build_l3_agent`.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import TYPE_CHECKING, Any

from openimds.feed import ChangeFeed, Kind
from openimds.l3.apply import RouterApplier
from openimds.l3.model import HA_OWNER, ROUTER_INTERFACE_OWNERS, RouterInfo, routers_from_neutron
from openimds.l3.plan import L3Options, desired_router_state
from openimds.l3.settings import settings_from_conf
from openimds.linux.fabric import ensure_fabric
from openimds.reconcile import InventoryAgent, Owners, Snapshot

if TYPE_CHECKING:
    from oslo_config.cfg import ConfigOpts

__all__ = ["L3Agent", "build_l3_agent"]


class L3Agent(InventoryAgent):
    name = "l3-agent"

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
        self._routers: tuple[int, dict[str, RouterInfo]] | None = None

    def prepare(self) -> None:
        ensure_fabric(self.fabric_namespace)

    def keys(self, snap: Snapshot) -> set[str]:
        return {r for r in snap.ids("routers") if self.hosts_router(snap, r)}

    def hosts_router(self, snap: Snapshot, router_id: str) -> bool:
        # An HA router lives where its ha- ports are bound (its interfaces are unbound).
        ha = [str(p.get("binding:host_id") or "") for p in snap.ports
              if p.get("device_id") == router_id and p.get("device_owner") == HA_OWNER]
        if ha and self.host:
            return self.host in ha
        return hosted_here(self.host, [
            str(p.get("binding:host_id") or "") for p in snap.ports
            if p.get("device_id") == router_id
            and p.get("device_owner") in ROUTER_INTERFACE_OWNERS])

    def ha_states(self) -> dict[str, str]:
        """router id -> `active`/`standby` for the HA routers built here, as the namespaces
        show them now (reported as configurations.ha_routers; the control plane stores it)."""
        snap = self.snapshot
        if snap is None:
            return {}
        out: dict[str, str] = {}
        for rid, router in self._model(snap).items():
            if router.ha is None or not self.hosts_router(snap, rid):
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

    def orphan_keys(self) -> set[str]:
        # Only what our own state directory says we created (see reconcile/claims.py).
        found = (self.applier.claims.ids() | set(self.applier.proxy_ids())
                 | set(self.applier.keepalived.owned_ids()))
        return {k for k in found if self.owns(k)}

    def children(self, key: str) -> list[int]:
        return self.applier.children(key)

    def _model(self, snap: Snapshot) -> dict[str, RouterInfo]:
        if self._routers is None or self._routers[0] != snap.revision:
            self._routers = (
                snap.revision,
                routers_from_neutron(snap.routers, snap.ports, snap.subnets, snap.networks,
                                     self.host),
            )
        return self._routers[1]

    def reconcile_key(
        self, key: str, snap: Snapshot, now: datetime, log: logging.LoggerAdapter[Any]
    ) -> datetime | None:
        router = self._model(snap).get(key)
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
