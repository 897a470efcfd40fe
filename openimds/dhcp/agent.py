"""`openimds dhcp-agent`: one reconcile key per network id.

Which rows a network depends on: the network, its subnets, its ports, and (through their
interface ports) the routers attached to it, because router attachment changes the opts
(spec neutron-metadata.md 3.4) and the proxy decision (3.2). Everything else is in
`openimds.reconcile.InventoryAgent`; the wiring from a ConfigOpts is `build_dhcp_agent`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
from collections.abc import Sequence
from collections.abc import Set as AbstractSet
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from openimds.dhcp.apply import DhcpApplier
from openimds.dhcp.model import NetworkInfo, networks_from_neutron
from openimds.dhcp.plan import DhcpOptions, desired_dhcp_state
from openimds.dhcp.settings import settings_from_conf
from openimds.feed import NETWORK_KINDS, ChangeFeed, Kind, ListSpec
from openimds.linux.fabric import bridge_name, ensure_fabric
from openimds.linux.links import delete_link
from openimds.linux.nftables import apply_ruleset
from openimds.linux.observe import Link, links
from openimds.portsec import port_security_from_neutron, port_security_rules
from openimds.proxy.haproxy import InvalidProxySpec
from openimds.reconcile import InventoryAgent, Owners, Snapshot
from openimds.rows import compact_row
from openimds.wire import (
    DHCP_OWNER,
    ROUTER_INTERFACE_OWNERS,
    is_router_interface,
    serving_dhcp_device_id,
)

if TYPE_CHECKING:
    from oslo_config.cfg import ConfigOpts

__all__ = ["DhcpAgent", "build_dhcp_agent"]

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")

# The port attributes the DHCP agent reads (dhcp/model.port_from_neutron, the scheduling
# check, portsec.port_security_from_neutron): all its snapshot keeps of a port. A whole port
# has ~26; at 100k ports the others were tens of MB (issue 14: agent RSS).
DHCP_PORT_FIELDS = ("id", "network_id", "mac_address", "fixed_ips", "device_owner",
                    "device_id", "created_at", "binding:profile", "port_security_enabled",
                    "allowed_address_pairs")
DHCP_LISTING = {kind: ListSpec(fields=DHCP_PORT_FIELDS if kind is Kind.PORT else None,
                               each=compact_row) for kind in NETWORK_KINDS}
# Router interface ports by router id: which networks a router change touches.
_ROUTER_PORTS = ("device_owner", frozenset(ROUTER_INTERFACE_OWNERS))


class DhcpAgent(InventoryAgent):
    name = "dhcp-agent"
    listing = DHCP_LISTING
    incremental_owners = True

    def __init__(
        self,
        reader: ChangeFeed,
        applier: DhcpApplier,
        options: DhcpOptions,
        *,
        fabric_namespace: str,
        host: str = "",
        **kwargs: Any,
    ) -> None:
        super().__init__(reader, **kwargs)
        self.applier = applier
        self.options = options
        self.fabric_namespace = fabric_namespace
        # [DEFAULT] host: with several DHCP agents, each serves only the networks scheduled to
        # it (a DHCP port with its device_id); "" = every network (round 1's one agent).
        self.host = host
        self._networks: tuple[int, dict[str, NetworkInfo | None]] | None = None
        # Networks this agent has seen in its inventory: the only ones whose bridges it may
        # sweep (the fabric namespace can be shared with other nodes on the host).
        self._seen_networks: set[str] = set()

    def prepare(self) -> None:
        ensure_fabric(self.fabric_namespace)

    def keys(self, snap: Snapshot) -> set[str]:
        return {n for n in snap.ids("networks") if self.scheduled_port(snap, n) is not False}

    def scheduled_port(self, snap: Snapshot, network_id: str) -> str | None | bool:
        """Our DHCP port's device_id on `network_id`; None when the network is not scheduled
        per agent (round 1: any agent serves it); False when it is scheduled to others."""
        if not self.host:
            return None
        return serving_dhcp_device_id(self.host, network_id, [
            str(p.get("device_id") or "")
            for p in snap.grouped("ports", "network_id").get(network_id, ())
            if p.get("device_owner") == DHCP_OWNER])

    def owners(self, snap: Snapshot) -> Owners:
        # Every known row has an entry (maybe empty): a change to a row that touches no
        # network must not widen to "every network". One shared set per network: 100k
        # ports pointing at 100 networks need 100 sets, not 100k (issue 14, agent RSS).
        none: frozenset[str] = frozenset()
        by_network: dict[str, frozenset[str]] = {}

        def of(network_id: str) -> frozenset[str]:
            found = by_network.get(network_id)
            if found is None:
                found = by_network[network_id] = frozenset((network_id,))
            return found

        routers: dict[str, set[str]] = {}
        out: dict[tuple[str, str], AbstractSet[str]] = {(Kind.ROUTER, r["id"]): none
                                                        for r in snap.routers}
        for n in snap.networks:
            out[(Kind.NETWORK, n["id"])] = of(n["id"])
        for s in snap.subnets:
            out[(Kind.SUBNET, s["id"])] = of(s["network_id"]) if s.get("network_id") else none
        for p in snap.ports:
            if p.get("network_id"):
                out[(Kind.PORT, p["id"])] = of(p["network_id"])
                if p.get("device_id") and is_router_interface(p.get("device_owner")):
                    routers.setdefault(p["device_id"], set()).add(p["network_id"])
        for router_id, networks in routers.items():
            out[(Kind.ROUTER, router_id)] = frozenset(networks)
        return out

    def row_owners(self, snap: Snapshot, resource: str, rid: str) -> AbstractSet[str] | None:
        """What `owners` says of one row, from that row (and, for a router, its interface
        ports): a change re-plans the networks it touches without a pass over the others."""
        if resource == Kind.ROUTER:
            ports = snap.grouped("ports", "device_id", _ROUTER_PORTS).get(rid, ())
            if not ports and snap.find("routers", rid) is None:
                return None
            return frozenset(str(p["network_id"]) for p in ports if p.get("network_id"))
        if resource not in (Kind.NETWORK, Kind.SUBNET, Kind.PORT):
            return None
        row = snap.find(Kind(resource).collection, rid)
        if row is None:
            return None
        if resource == Kind.NETWORK:
            return frozenset((rid,))
        network_id = row.get("network_id")
        return frozenset((str(network_id),)) if network_id else frozenset()

    def orphan_keys(self) -> set[str]:
        # Only what our own state directory says we created: never the host's namespace list,
        # which may hold another node's qdhcp-* namespaces (see reconcile/claims.py).
        found = set(self.applier.claims.ids())
        confs = self.applier.settings.dhcp_confs
        with contextlib.suppress(FileNotFoundError):
            found |= {
                d
                for d in os.listdir(confs)
                if _ID.match(d) and os.path.isdir(os.path.join(confs, d))
            }
        found |= set(self.applier.proxy_ids())
        found |= set(self.applier.keepalived_ids())
        return {k for k in found if self.owns(k)}

    def children(self, key: str) -> list[int]:
        return self.applier.children(key)

    def _model(self, snap: Snapshot, network_id: str) -> NetworkInfo | None:
        """The DHCP model of one network, made from that network's rows only (a change to one
        port re-plans its network without a pass over the other networks' ports)."""
        if self._networks is None or self._networks[0] != snap.revision:
            self._networks = (snap.revision, {})
        made = self._networks[1]
        if network_id not in made:
            row = snap.find("networks", network_id)
            made[network_id] = networks_from_neutron(
                () if row is None else (row,), snap.grouped("subnets", "network_id").get(network_id, ()),
                snap.grouped("ports", "network_id").get(network_id, ()),
            ).get(network_id)
        return made[network_id]

    def reconcile_key(
        self, key: str, snap: Snapshot, now: datetime, log: logging.LoggerAdapter[Any]
    ) -> datetime | None:
        network = self._model(snap, key)
        ours = self.scheduled_port(snap, key)
        options = self.options
        if isinstance(ours, str):
            options = replace(options, dhcp_port_device_id=ours)
        plan = desired_dhcp_state(network, options, now) if network and ours is not False \
            else None
        self.applier.apply(key, plan, network_exists=network is not None, log=log)
        self.apply_port_security(key, snap)
        return plan.next_change_at if plan else None

    def vrrp_states(self) -> dict[str, str]:
        """network id -> `active`/`standby` for the networks whose metadata next hop this
        agent's keepalived takes part in (dhcp/vrrp.py), as the namespaces show them now
        (reported as configurations.metadata_next_hops)."""
        snap = self.snapshot
        if snap is None:
            return {}
        out: dict[str, str] = {}
        for nid in snap.row_ids("networks"):
            network = self._model(snap, nid)
            ours = self.scheduled_port(snap, nid)
            if network is None or ours is False:
                continue
            options = replace(self.options, dhcp_port_device_id=ours) \
                if isinstance(ours, str) else self.options
            try:
                plan = desired_dhcp_state(network, options, datetime.now(UTC))
            except InvalidProxySpec:
                # The plan carries its proxy's spec; one that cannot be rendered fails that
                # network's reconcile (and is logged there), never the agent's state report.
                continue
            state = self.applier.vrrp_state(nid, plan)
            if state is not None:
                out[nid] = state
        return out

    def apply_port_security(self, network_id: str, snap: Snapshot) -> None:
        """The network bridge's port-security table, recomputed from the snapshot's ports and
        loaded whole (a gone network, or one without protected ports, loses its table)."""
        ports = snap.grouped("ports", "network_id").get(network_id, ())
        protected = [ps for ps in map(port_security_from_neutron, ports) if ps is not None]
        # Always loaded, even empty (then it only deletes the table): what an earlier run or
        # agent left behind is replaced without any memory of it (one nft call per reconcile).
        apply_ruleset(self.applier.settings.fabric, port_security_rules(network_id, protected))

    async def full_sync(self) -> None:
        await super().full_sync()
        snap = self.snapshot
        if snap is not None:
            await asyncio.to_thread(self.sweep_bridges, snap)

    def sweep_bridges(self, snap: Snapshot) -> list[str]:
        """Delete empty `brq*` bridges of networks this agent has seen and that are gone."""
        current = snap.ids("networks")
        self._seen_networks |= current
        fabric = self.applier.settings.fabric
        doomed = orphan_bridges(links(fabric), self._seen_networks - current)
        for name in doomed:
            delete_link(fabric, name)
        # Forget gone networks whose bridge is gone; keep those still in use, to retry.
        remaining = {x.name for x in links(fabric)}
        self._seen_networks = current | {
            n for n in self._seen_networks - current if bridge_name(n) in remaining
        }
        if doomed:
            self.log.info("removed orphan bridges %s", doomed)
        return doomed


def orphan_bridges(all_links: Sequence[Link], gone_networks: set[str]) -> list[str]:
    """Bridges to delete: those of networks known to be gone, and only while nothing is
    plugged into them (a port still on it belongs to someone: the platform or a guest)."""
    wanted = {bridge_name(n) for n in gone_networks}
    return sorted(
        link.name
        for link in all_links
        if link.kind == "bridge"
        and link.name in wanted
        and not any(x.master == link.name for x in all_links)
    )


def build_dhcp_agent(conf: ConfigOpts, reader: ChangeFeed, **kwargs: Any) -> DhcpAgent:
    """The agent for a loaded `dhcp-agent` ConfigOpts over `reader`."""
    from openimds.proxy import HaproxySupervisor
    from openimds.proxy.options import DEV_LOG

    settings = settings_from_conf(conf)
    ensure_fabric(settings.fabric_namespace)
    applier = DhcpApplier(settings, HaproxySupervisor(settings.options.proxy.state_path))
    agent = DhcpAgent(
        reader,
        applier,
        settings.options,
        fabric_namespace=settings.fabric_namespace,
        host=settings.host,
        **kwargs,
    )
    log_target = settings.options.proxy.log_target
    if log_target not in (None, DEV_LOG):
        agent.log_sink_path = log_target
    return agent
