"""Automatic failover of scheduling (issue 11 item 3): pure decisions, no I/O, no clock.

    plan_failover(agents, bindings) -> [Move(resource_id, from_host, to_host), ...]

`agents` are the agents of one kind (DHCP or L3) with their liveness; `bindings` say which
hosts serve each resource (a DHCP network: the hosts of its DHCP ports; a router: the hosts of
its interface ports, one or several for HA). A resource held by an agent that is dead (no
heartbeat for `agent_down_time`) while administratively up moves to the least loaded eligible
agent on a host that does not already serve it, the lightest first, ties broken by host name,
resources taken in id order (deterministic: two replicas would decide the same).

What does not move, on purpose:
* a resource of a dead agent when no eligible agent is left to take it (moving it nowhere would
  only tear down what may come back; the returning agent then simply resumes);
* a resource of an alive agent that an admin disabled (Neutron: admin_state_up false keeps
  what the agent serves, it only takes nothing new);
* bindings to hosts without a registered agent of that kind (round 1's unbound ports).

`may_act` is the second guard against flapping: a control plane that could not see the
heartbeats for a while (its own start, a database outage) waits one `agent_down_time` of
continuous observation before it trusts "dead", so agents that were reporting into a void are
not mistaken for dead ones. A heartbeat back within the window therefore changes nothing.

The HA work (several L3 agents per router) reuses this unchanged: a binding lists every host
of the router and a move replaces one dead slot.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from openimds.control.scheduling import AgentView

__all__ = ["Binding", "Move", "may_act", "plan_failover"]


@dataclass(frozen=True)
class Binding:
    """One network (or router) and the hosts serving it."""

    resource_id: str
    hosts: tuple[str, ...]


@dataclass(frozen=True)
class Move:
    resource_id: str
    from_host: str
    to_host: str


def may_act(observed_for: float, agent_down_time: float) -> bool:
    """Whether the heartbeats have been visible long enough to call an agent dead: for at
    least `agent_down_time` seconds of continuous, successful observation."""
    return observed_for >= agent_down_time


def plan_failover(agents: Sequence[AgentView], bindings: Iterable[Binding]) -> list[Move]:
    """The moves that take every resource off dead agents (see the module docstring)."""
    by_host = {a.host: a for a in agents}
    ordered = sorted(bindings, key=lambda b: b.resource_id)
    load = {a.host: 0 for a in agents}
    for b in ordered:
        for host in set(b.hosts):
            if host in load:
                load[host] += 1
    moves: list[Move] = []
    for b in ordered:
        hosts = set(b.hosts)
        for host in sorted(hosts):
            agent = by_host.get(host)
            if agent is None or agent.alive or not agent.admin_state_up:
                continue
            targets = [a for a in agents if a.eligible and a.host not in hosts]
            if not targets:
                continue
            target = min(targets, key=lambda a: (load[a.host], a.host))
            moves.append(Move(b.resource_id, host, target.host))
            hosts.discard(host)
            hosts.add(target.host)
            load[host] -= 1
            load[target.host] += 1
    return moves
