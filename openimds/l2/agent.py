"""`openimds l2-agent`: one reconcile key per network id, on the host it runs on.

Which rows a network's bridge depends on: the network (its segment) and its ports (their
`binding:host_id`: this host needs the bridge when one of them is bound here, and every other
host with a port is a VXLAN flood peer). Peers' tunnel addresses come from the agent registry
(`Linux bridge agent` rows, `configurations.tunneling_ip`), polled every `peer_interval`
seconds; a change of that map re-queues every network. Everything else is
`openimds.reconcile.InventoryAgent`; the wiring from a ConfigOpts is `build_l2_agent`.

The l2-agent also keeps each network's `qmeta-<network>` namespace of metadata_mode =
distributed (`openimds.l2.metadata`): it already runs on every host, knows which ports are
bound here and owns the bridge and uplink that the namespace plugs into and the localport
rules name, so the namespace comes and goes in the same pass as the bridge.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from collections.abc import Set as AbstractSet
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from openimds.control.scheduling import LINUXBRIDGE_AGENT
from openimds.feed import ChangeFeed, ControlFeed, Kind
from openimds.l2.apply import L2Applier
from openimds.l2.metadata import MetaApplier, desired_meta_state
from openimds.l2.plan import HA_OWNER, L2Options, PlanError, desired_l2_state, ha_router_hosts
from openimds.l2.settings import parse_mappings, settings_from_conf
from openimds.reconcile import InventoryAgent, Owners, Snapshot, TerminalError
from openimds.wire import ROUTER_INTERFACE_OWNERS

if TYPE_CHECKING:
    from oslo_config.cfg import ConfigOpts

# parse_mappings lives in l2/settings.py; re-exported for its callers.
__all__ = ["ControlPeers", "L2Agent", "PeerSource", "build_l2_agent", "parse_mappings"]

# A router's ports by router id (interfaces, ha- ports, gateway): which networks an ha- port's
# host needs, read from its router's ports instead of a pass over every port.
_ROUTER_PORTS = ("device_owner", frozenset((*ROUTER_INTERFACE_OWNERS, HA_OWNER,
                                            "network:router_gateway")))


class PeerSource(Protocol):
    async def tunnel_peers(self) -> Mapping[str, str]:
        """host -> tunnel address of every registered l2-agent."""
        ...


class ControlPeers:
    """PeerSource over the control-plane client (`GET /v2.0/agents`)."""

    def __init__(self, client: Any) -> None:
        self.client = client

    async def tunnel_peers(self) -> Mapping[str, str]:
        agents = await self.client.list("agents", agent_type=LINUXBRIDGE_AGENT)
        return {str(a["host"]): str(a["configurations"]["tunneling_ip"]) for a in agents
                if (a.get("configurations") or {}).get("tunneling_ip")}


class L2Agent(InventoryAgent):
    name = "l2-agent"
    incremental_owners = True

    def __init__(self, reader: ChangeFeed, applier: L2Applier, options: L2Options,
                 peers: PeerSource, *, peer_interval: float = 2.0,
                 meta: MetaApplier | None = None, **kwargs: Any) -> None:
        super().__init__(reader, **kwargs)
        self.applier = applier
        self.meta = meta
        self.options = options
        self.peer_source = peers
        self.peer_interval = peer_interval
        self.peers: Mapping[str, str] = {}

    def keys(self, snap: Snapshot) -> set[str]:
        return {str(n["id"]) for n in snap.networks
                if (n.get("provider:network_type") or "local") != "local"}

    def owners(self, snap: Snapshot) -> Owners:
        out: dict[tuple[str, str], set[str]] = {(Kind.ROUTER, r["id"]): set()
                                                for r in snap.routers}
        # A subnet's prefix is part of the qmeta- namespace's addresses.
        out.update({(Kind.SUBNET, s["id"]): {s["network_id"]} if s.get("network_id") else set()
                    for s in snap.subnets})
        for n in snap.networks:
            out[(Kind.NETWORK, n["id"])] = {n["id"]}
        for p in snap.ports:
            out[(Kind.PORT, p["id"])] = {p["network_id"]} if p.get("network_id") else set()
        # An ha- port's host needs the bridges of every network its router is attached to.
        interfaces: dict[str, set[str]] = {}
        for p in snap.ports:
            if p.get("device_id") and p.get("network_id"):
                interfaces.setdefault(str(p["device_id"]), set()).add(str(p["network_id"]))
        for p in snap.ports:
            if p.get("device_owner") == HA_OWNER:
                out[(Kind.PORT, p["id"])] |= interfaces.get(str(p.get("device_id")), set())
        return out

    def row_owners(self, snap: Snapshot, resource: str, rid: str) -> AbstractSet[str] | None:
        """What `owners` says of one row, from that row (and, for an ha- port, its router's
        ports): a change re-plans the networks it touches without a pass over the others."""
        if resource not in (Kind.NETWORK, Kind.SUBNET, Kind.PORT, Kind.ROUTER):
            return None
        row = snap.find(Kind(resource).collection, rid)
        if row is None:
            return None
        if resource == Kind.ROUTER:
            return frozenset()
        if resource == Kind.NETWORK:
            return frozenset((rid,))
        found = {str(row["network_id"])} if row.get("network_id") else set()
        if resource == Kind.PORT and row.get("device_owner") == HA_OWNER:
            found |= {str(p["network_id"]) for p in self._router_ports(
                snap, str(row.get("device_id"))) if p.get("network_id")}
        return frozenset(found)

    @staticmethod
    def _router_ports(snap: Snapshot, router_id: str) -> tuple[Mapping[str, Any], ...]:
        return snap.grouped("ports", "device_id", _ROUTER_PORTS).get(router_id, ())

    def _ha_hosts(self, snap: Snapshot, network_id: str,
                  ports: tuple[Mapping[str, Any], ...]) -> set[str]:
        """`ha_router_hosts(...)[network_id]` from the network's own ports and the ha- ports
        of the routers attached to it (not a pass over every port of the cloud)."""
        routers = {str(p.get("device_id")) for p in ports
                   if p.get("device_owner") in ROUTER_INTERFACE_OWNERS}
        ha = [p for r in sorted(routers) for p in self._router_ports(snap, r)
              if p.get("device_owner") == HA_OWNER]
        return ha_router_hosts([*ports, *ha]).get(network_id, set())

    def orphan_keys(self) -> set[str]:
        found = self.applier.owned_networks()
        if self.meta is not None:
            found |= self.meta.owned_networks()
        return {k for k in found if self.owns(k)}

    def children(self, key: str) -> list[int]:
        return self.meta.children(key) if self.meta is not None else []

    def reconcile_key(self, key: str, snap: Snapshot, now: datetime,
                      log: logging.LoggerAdapter[Any]) -> datetime | None:
        network = snap.find("networks", key)
        ports = snap.grouped("ports", "network_id").get(key, ())
        try:
            plan = desired_l2_state(network, ports, self.options, self.peers,
                                    self._ha_hosts(snap, key, ports))
        except PlanError as exc:
            if self.meta is not None:
                self.meta.apply(key, None, log)
            raise TerminalError(str(exc)) from exc
        if self.meta is None:
            self.applier.apply(key, plan, log)
            return None
        meta = desired_meta_state(network, snap.subnets, ports, self.options.host,
                                  plan.uplink.name if plan is not None else None, now)
        if meta is None:
            self.meta.apply(key, None, log)  # before the bridge, which its veth would keep
            self.applier.apply(key, plan, log)
            return None
        self.applier.apply(key, plan, log)
        self.meta.apply(key, meta, log)
        # A retiring metadata port: look again at its deadline, when its namespace goes.
        return meta.retiring_until

    async def refresh_peers(self) -> bool:
        """Read the registry; re-queue every network when the peer map changed."""
        peers = dict(await self.peer_source.tunnel_peers())
        if peers == self.peers:
            return False
        self.peers = peers
        snap = self.snapshot
        if snap is not None:
            for key in sorted(self.keys(snap)):
                self.queue.add(key)
        return True

    async def _peer_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                await self.refresh_peers()
            except Exception as exc:  # the registry is away: keep the last map, retry
                self.log.warning("reading the agent registry failed: %s", exc)
            await self._sleep(self.peer_interval)

    async def full_sync(self) -> None:
        # Peers first, so the first pass already has the flood lists.
        try:
            await self.refresh_peers()
        except Exception as exc:
            self.log.warning("reading the agent registry failed: %s", exc)
        await super().full_sync()

    async def run(self) -> None:
        task = asyncio.create_task(self._peer_loop(), name="l2-peers")
        try:
            await super().run()
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


def build_l2_agent(conf: ConfigOpts, reader: ChangeFeed, *,
                   peers: PeerSource | None = None, **kwargs: Any) -> L2Agent:
    """The agent for a loaded `l2-agent` ConfigOpts over `reader` (the control client's
    registry is the peer source unless one is given)."""
    from openimds.linux.fabric import ensure_fabric
    from openimds.proxy import HaproxySupervisor
    from openimds.proxy.options import DEV_LOG

    settings = settings_from_conf(conf)
    netns = ensure_fabric(settings.fabric_namespace)
    if peers is None:
        if not isinstance(reader, ControlFeed):
            raise TypeError("without a control-plane inventory, pass the peer source")
        peers = ControlPeers(reader.client)
    meta = MetaApplier(settings.meta, HaproxySupervisor(settings.meta.state_path))
    agent = L2Agent(reader, L2Applier(netns), settings.options, peers, meta=meta, **kwargs)
    log_target = settings.meta.proxy.log_target
    if log_target not in (None, DEV_LOG):
        agent.log_sink_path = log_target
    return agent
