"""The control plane's periodic failover pass: reads agents and bindings, applies
`failover.plan_failover`'s moves (issue 11 item 3).

Every `failover_interval(agent_down_time)` seconds each control-api process runs one pass in one
write transaction. Several replicas on PostgreSQL: the pass first takes a transaction-scoped
advisory lock (`pg_try_advisory_xact_lock`) and skips when another replica holds it, so one
replica at a time decides and a second pass right after finds nothing left to move (the
decision is idempotent). SQLite has one writer at a time anyway (BEGIN IMMEDIATE).

A move rebinds the dead agent's own ports, as Neutron hands a removed agent's DHCP port on as
`reserved_dhcp_port`: the DHCP port keeps its MAC and addresses and gets the new agent's
device_id (`dhcp<uuid5(host)>-<network>`) and `binding:host_id`, so a guest's
169.254.169.254 route via that address stays right; a router's interface ports move to the
new L3 agent's host with their gateway MAC and address. The moved ports enter the change feed:
the new agent builds, and the old one, when it comes back, finds them bound elsewhere and
removes its copy (its reconcile converges to nothing for what is not scheduled to it).
"""

from __future__ import annotations

import asyncio
import logging
import time

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from openimds.control.call import Settings
from openimds.control.failover import Binding, Move, may_act, plan_failover
from openimds.control.scheduling import DHCP_AGENT, L3_AGENT, AgentView, is_alive
from openimds.inventory.errors import InventoryError
from openimds.inventory.models import Agent, Port, utcnow
from openimds.inventory.store import Store
from openimds.wire import DHCP_OWNER, HA_OWNER, ROUTER_INTERFACE, dhcp_device_id

__all__ = ["failover_forever", "failover_interval", "failover_pass"]

LOG = logging.getLogger(__name__)

# Any constant: the key of the advisory lock the replicas take for a pass.
LOCK_KEY = 0x6F696D64_0011


def failover_interval(agent_down_time: float) -> float:
    """How often a pass runs: a quarter of agent_down_time (at least 1 s), so a dead agent's
    resources move at most agent_down_time * 1.25 after its last heartbeat."""
    return max(1.0, agent_down_time / 4)


def _views(s: Session, agent_type: str, agent_down_time: float) -> list[AgentView]:
    now = utcnow()
    return [AgentView(a.id, a.host, is_alive(a.heartbeat_timestamp, now, agent_down_time),
                      a.admin_state_up)
            for a in s.scalars(select(Agent).where(Agent.agent_type == agent_type))]


def _bindings(s: Session, owners: tuple[str, ...], key: str) -> list[Binding]:
    column = Port.network_id if key == "network" else Port.device_id
    hosts: dict[str, set[str]] = {}
    for rid, host in s.execute(select(column, Port.binding_host_id).where(
            Port.device_owner.in_(owners), Port.binding_host_id != "")):
        hosts.setdefault(str(rid), set()).add(str(host))
    return [Binding(rid, tuple(sorted(h))) for rid, h in hosts.items()]


def _move_dhcp(s: Session, move: Move) -> None:
    for port in s.scalars(select(Port).where(Port.network_id == move.resource_id,
                                             Port.device_owner == DHCP_OWNER,
                                             Port.binding_host_id == move.from_host)):
        port.device_id = dhcp_device_id(move.to_host, move.resource_id)
        port.binding_host_id = move.to_host


def _move_router(s: Session, move: Move) -> None:
    # A legacy router's interface ports, or the HA router's ha- port of the dead host (its
    # interface ports are unbound): the new host builds the router as one more VRRP instance.
    for port in s.scalars(select(Port).where(Port.device_id == move.resource_id,
                                             Port.device_owner.in_((ROUTER_INTERFACE,
                                                                    HA_OWNER)),
                                             Port.binding_host_id == move.from_host)):
        port.binding_host_id = move.to_host


def _locked(s: Session, backend: str) -> bool:
    if backend != "postgresql":
        return True
    return bool(s.execute(text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": LOCK_KEY})
                .scalar())


def failover_pass(store: Store, settings: Settings) -> list[tuple[str, Move]]:
    """One pass (the caller checked `may_act`): the moves made, as (agent type, move)."""
    made: list[tuple[str, Move]] = []
    with store.session() as s:
        if not _locked(s, store.backend):
            return made
        down = settings.agent_down_time
        if settings.allow_automatic_dhcp_failover:
            for move in plan_failover(_views(s, DHCP_AGENT, down),
                                      _bindings(s, (DHCP_OWNER,), "network")):
                _move_dhcp(s, move)
                made.append((DHCP_AGENT, move))
        if settings.allow_automatic_l3agent_failover:
            for move in plan_failover(_views(s, L3_AGENT, down),
                                      _bindings(s, (ROUTER_INTERFACE, HA_OWNER), "router")):
                _move_router(s, move)
                made.append((L3_AGENT, move))
        s.flush()
    return made


async def failover_forever(store: Store, settings: Settings) -> None:
    """Run passes until cancelled. A pass waits for `may_act`: one agent_down_time of
    continuous database access since this process started or the database came back."""
    interval = failover_interval(settings.agent_down_time)
    observed_since: float | None = None  # start of the current run of successful checks
    while True:
        try:
            now = time.monotonic()
            if observed_since is not None and may_act(now - observed_since,
                                                      settings.agent_down_time):
                made = await asyncio.to_thread(failover_pass, store, settings)
            else:
                await asyncio.to_thread(_ping, store)
                made = []
                if observed_since is None:
                    observed_since = now
        except InventoryError as exc:
            if observed_since is not None:
                LOG.warning("agent failover paused: %s", exc.message)
            observed_since = None
        else:
            for kind, move in made:
                what = "network" if kind == DHCP_AGENT else "router"
                LOG.warning("%s %s moved from the dead %s on %s to %s", what,
                            move.resource_id, kind, move.from_host, move.to_host)
        await asyncio.sleep(interval)


def _ping(store: Store) -> None:
    with store.read() as s:
        s.execute(select(Agent.id).limit(1)).all()
