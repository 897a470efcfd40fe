"""Agent liveness and placement decisions: pure functions over plain values, no I/O, no clock.

* `is_alive`: an agent is alive while its last heartbeat is at most `agent_down_time`
  seconds old (Neutron's `is_agent_down`, with the server's clock on both sides).
* `pick_host`: where a server without `--host` goes: the alive, enabled compute host with the
  fewest bound ports, ties broken by host name (deterministic).
* `pick_agents`: `count` alive, enabled agents on distinct hosts for a network or router,
  keeping the ones already chosen while they stay eligible, then the least loaded.

HA routers (issue 11) and distributed metadata (issue 12) reuse `AgentView` and these pickers.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

# Neutron's agent_type strings, shown by `openstack network agent list`.
DHCP_AGENT = "DHCP agent"
L3_AGENT = "L3 agent"
METADATA_AGENT = "Metadata agent"
LINUXBRIDGE_AGENT = "Linux bridge agent"

# agent_type -> (binary, topic), as Neutron reports them.
AGENT_KINDS: dict[str, tuple[str, str]] = {
    DHCP_AGENT: ("neutron-dhcp-agent", "dhcp_agent"),
    L3_AGENT: ("neutron-l3-agent", "l3_agent"),
    METADATA_AGENT: ("neutron-metadata-agent", "N/A"),
    LINUXBRIDGE_AGENT: ("neutron-linuxbridge-agent", "N/A"),
}


def _utc(ts: datetime) -> datetime:
    # SQLite hands back naive datetimes; they are UTC.
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts


def is_alive(heartbeat: datetime, now: datetime, agent_down_time: float) -> bool:
    return (_utc(now) - _utc(heartbeat)).total_seconds() <= agent_down_time


@dataclass(frozen=True)
class AgentView:
    """What the pickers need to know about one agent."""

    id: str
    host: str
    alive: bool
    admin_state_up: bool
    load: int = 0  # ports bound to the host, or networks/routers already hosted

    @property
    def eligible(self) -> bool:
        return self.alive and self.admin_state_up


def pick_host(compute_agents: Iterable[AgentView]) -> str | None:
    """The host for a new server: eligible, fewest ports, then by name. None: no host."""
    eligible = sorted((a for a in compute_agents if a.eligible), key=lambda a: (a.load, a.host))
    return eligible[0].host if eligible else None


def pick_agents(candidates: Sequence[AgentView], current: Iterable[str],
                count: int) -> list[str]:
    """Agent ids to serve one network (or router): up to `count` on distinct hosts.

    Current eligible agents stay (no needless moves); the rest are filled with the least
    loaded eligible agents on hosts not yet used; dead or disabled agents drop out.
    """
    by_id = {a.id: a for a in candidates}
    chosen: list[AgentView] = []
    hosts: set[str] = set()
    for aid in current:
        agent = by_id.get(aid)
        if agent is not None and agent.eligible and agent.host not in hosts \
                and len(chosen) < count:
            chosen.append(agent)
            hosts.add(agent.host)
    for agent in sorted(candidates, key=lambda a: (a.load, a.host, a.id)):
        if len(chosen) >= count:
            break
        if agent.eligible and agent.host not in hosts and agent not in chosen:
            chosen.append(agent)
            hosts.add(agent.host)
    return [a.id for a in chosen]
