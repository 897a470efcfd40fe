"""HA routers (issue 11 item 1): the pure decisions, no I/O, no clock.

An HA router runs in a `qrouter-` namespace on each of up to `max_l3_agents_per_router` L3
agents; keepalived elects one master by VRRP over the project's HA network, and only the
master holds the router's gateway addresses. As in Neutron (l3_hamode_db):

* one HA network per project, named `HA network tenant <project id>`, with one subnet from
  `l3_ha_net_cidr` (169.254.192.0/18, no gateway, no DHCP);
* one `ha-` port per chosen agent on it, device_owner `network:router_ha_interface`,
  device_id = the router id, bound to the agent's host: the binding *is* the scheduling;
* a VRRP id (1..255, keepalived's range) per router, unique among the project's HA routers,
  since they share the HA network's broadcast domain.

The router's interface ports stay unbound for an HA router: they exist on every chosen host
(same MAC, same address) and the VRRP state says which copy holds the address.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from openimds.control.scheduling import AgentView, pick_agents
from openimds.wire import HA_OWNER

__all__ = [
    "HA_OWNER",
    "MAX_VR_ID",
    "allocate_vr_id",
    "ha_by_default",
    "ha_network_name",
    "ha_port_name",
    "ha_subnet_name",
    "not_enough_agents",
    "pick_ha_hosts",
]

MAX_VR_ID = 255  # keepalived's virtual_router_id range is 1..255


def ha_network_name(project_id: str) -> str:
    """Neutron's name for a project's HA network."""
    return f"HA network tenant {project_id}"


def ha_subnet_name(project_id: str) -> str:
    return f"HA subnet tenant {project_id}"


def ha_port_name(project_id: str) -> str:
    """Neutron's name for an HA port (the same for all of the project's)."""
    return f"HA port tenant {project_id}"


def alive_count(agents: Iterable[AgentView]) -> int:
    return sum(1 for a in agents if a.eligible)


def ha_by_default(l3_ha: bool | None, agents: Iterable[AgentView]) -> bool:
    """Whether a router created without `ha` is HA: `l3_ha` when set, else at least 2 alive
    (and enabled) L3 agents, since VRRP with one instance buys nothing."""
    if l3_ha is not None:
        return l3_ha
    return alive_count(agents) >= 2


def not_enough_agents(agents: Iterable[AgentView], minimum: int) -> str | None:
    """Neutron's HANotEnoughAvailableAgents message when fewer than `minimum` L3 agents are
    alive, else None."""
    n = alive_count(agents)
    if n >= minimum:
        return None
    return (f"Not enough l3 agents available to ensure HA. Minimum required {minimum}, "
            f"available {n}.")


def allocate_vr_id(used: Iterable[int | None]) -> int | None:
    """The lowest VRRP id not used by another HA router of the project; None when all 255
    are taken (Neutron: NoVRIDAvailable)."""
    taken = {v for v in used if v is not None}
    return next((v for v in range(1, MAX_VR_ID + 1) if v not in taken), None)


def pick_ha_hosts(agents: Sequence[AgentView], current_hosts: Iterable[str],
                  max_agents: int) -> list[str]:
    """Hosts to add for a router that already has ha- ports on `current_hosts`: up to
    `max_agents` in all (0 = every eligible agent), the least loaded eligible agents on hosts
    not used yet. Existing ports are never taken away here (a dead agent's slot is replaced by
    the failover pass, control/failover.py), so the answer only ever adds."""
    current = set(current_hosts)
    limit = max_agents if max_agents > 0 else len(agents) + len(current)
    keep = [a.id for a in agents if a.host in current]
    wanted = pick_agents([a for a in agents if a.host not in current], [],
                         max(0, limit - len(current)))
    by_id = {a.id: a.host for a in agents}
    return [by_id[i] for i in wanted if i not in keep]
