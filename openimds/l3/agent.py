"""`openimds l3-agent`: one reconcile key per router id.

A router's desired state depends on the router row, its interface ports (device_id = router
id), and the subnets and networks of those ports (prefix lengths, MTU). Everything else is in
`openimds.reconcile.InventoryAgent`; the wiring from a ConfigOpts is `build_l3_agent`.
"""

from __future__ import annotations

import logging
import os
from datetime import datetime
from typing import Any

from openimds.l3.apply import RouterApplier, RouterSettings
from openimds.l3.model import ROUTER_INTERFACE_OWNERS, RouterInfo, routers_from_neutron
from openimds.l3.plan import L3Options, desired_router_state
from openimds.linux.fabric import ensure_fabric
from openimds.reconcile import InventoryAgent, InventoryReader, Snapshot

__all__ = ["L3Agent", "build_l3_agent", "l3_options_from_conf"]


class L3Agent(InventoryAgent):
    name = "l3-agent"

    def __init__(
        self,
        reader: InventoryReader,
        applier: RouterApplier,
        options: L3Options,
        *,
        fabric_namespace: str,
        **kwargs: Any,
    ) -> None:
        super().__init__(reader, **kwargs)
        self.applier = applier
        self.options = options
        self.fabric_namespace = fabric_namespace
        self._routers: tuple[int, dict[str, RouterInfo]] | None = None

    def prepare(self) -> None:
        ensure_fabric(self.fabric_namespace)

    def keys(self, snap: Snapshot) -> set[str]:
        return snap.ids("routers")

    def owners(self, snap: Snapshot) -> dict[tuple[str, str], set[str]]:
        out: dict[tuple[str, str], set[str]] = {("router", r["id"]): {r["id"]} for r in snap.routers}
        routers = snap.ids("routers")
        for p in snap.ports:
            rid = p.get("device_id")
            if p.get("device_owner") in ROUTER_INTERFACE_OWNERS and rid:
                out[("port", p["id"])] = {rid}
                if rid in routers:
                    out.setdefault(("network", p["network_id"]), set()).add(rid)
                    for f in p.get("fixed_ips") or ():
                        out.setdefault(("subnet", f["subnet_id"]), set()).add(rid)
            else:
                # Known, and not ours: an instance port's change never touches a router.
                out[("port", p["id"])] = set()
        for n in snap.networks:
            out.setdefault(("network", n["id"]), set())
        for s in snap.subnets:
            out.setdefault(("subnet", s["id"]), set())
        return out

    def orphan_keys(self) -> set[str]:
        # Only what our own state directory says we created (see linux/claims.py).
        found = self.applier.claims.ids() | set(self.applier.proxy_ids())
        return {k for k in found if self.owns(k)}

    def _model(self, snap: Snapshot) -> dict[str, RouterInfo]:
        if self._routers is None or self._routers[0] != snap.revision:
            self._routers = (
                snap.revision,
                routers_from_neutron(snap.routers, snap.ports, snap.subnets, snap.networks),
            )
        return self._routers[1]

    def reconcile_key(
        self, key: str, snap: Snapshot, now: datetime, log: logging.LoggerAdapter[Any]
    ) -> datetime | None:
        router = self._model(snap).get(key)
        plan = desired_router_state(router, self.options) if router else None
        self.applier.apply(key, plan, log=log)
        return None


def l3_options_from_conf(conf: Any) -> L3Options:
    return L3Options(
        enable_metadata_proxy=bool(conf.enable_metadata_proxy),
        metadata_port=int(conf.metadata_port),
        metadata_access_mark=conf.metadata_access_mark,
        ipv6_enabled=os.path.exists("/proc/net/if_inet6"),
        extra_ipv6_addresses=tuple(str(a) for a in conf.metadata_ipv6_addresses or ()),
    )


def build_l3_agent(conf: Any, reader: InventoryReader, **kwargs: Any) -> L3Agent:
    """The agent for a loaded `l3-agent` ConfigOpts over `reader`."""
    from openimds.proxy import HaproxySupervisor
    from openimds.proxy.options import proxy_settings_from_conf

    fabric = ensure_fabric(conf.fabric_namespace or "")
    settings = RouterSettings(
        fabric=fabric,
        state_path=conf.state_path,
        **proxy_settings_from_conf(conf),
    )
    applier = RouterApplier(settings, HaproxySupervisor(conf.state_path))
    return L3Agent(
        reader,
        applier,
        l3_options_from_conf(conf),
        fabric_namespace=conf.fabric_namespace or "",
        **kwargs,
    )
