"""Which DHCP agents serve a network, kept as the network's DHCP ports themselves.

Neutron keeps a network↔agent binding table next to one DHCP port per agent. openimds keeps
only the ports: an agent on host H serves network N exactly when N has a `network:dhcp` port
with Neutron's device_id `dhcp<uuid5(H)>-<N>` and `binding:host_id` H. So a binding can never
disagree with the port the agent plugs, and the DHCP agent needs nothing but its port list.

* No DHCP agent registered (the one-host all-in-one before its agents report, or tests): one
  unbound port `dhcp-<N>` as in round 1.
* Otherwise `dhcp_agents_per_network` agents on distinct hosts (`scheduling.pick_agents`):
  eligible agents already serving N stay (also beyond the count, when an admin added them),
  dead or disabled ones are replaced, the rest is filled with the least loaded.
"""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from openimds.control.call import Settings
from openimds.control.scheduling import DHCP_AGENT, AgentView, is_alive, pick_agents
from openimds.inventory.models import Agent, Port, utcnow
from openimds.wire import DHCP_OWNER, dhcp_device_id, unscheduled_dhcp_device_id

__all__ = ["dhcp_agent_views", "dhcp_device_id", "wanted_dhcp_hosts"]



def dhcp_agent_views(s: Session, agent_down_time: float) -> list[AgentView]:
    """Every DHCP agent with its load (DHCP ports bound to its host)."""
    now = utcnow()
    loads: dict[str, int] = {host: int(n) for host, n in s.execute(
        select(Port.binding_host_id, func.count()).where(Port.device_owner == DHCP_OWNER)
        .group_by(Port.binding_host_id))}
    return [AgentView(a.id, a.host, is_alive(a.heartbeat_timestamp, now, agent_down_time),
                      a.admin_state_up, loads.get(a.host, 0))
            for a in s.scalars(select(Agent).where(Agent.agent_type == DHCP_AGENT))]


def wanted_dhcp_hosts(s: Session, network_id: str, settings: Settings) -> list[str] | None:
    """Hosts whose DHCP agent should serve `network_id`; None = no DHCP agent registered
    (round 1's single unbound port)."""
    views = dhcp_agent_views(s, settings.agent_down_time)
    legacy = s.scalar(select(Port.id).where(Port.network_id == network_id,
                                            Port.device_owner == DHCP_OWNER,
                                            Port.device_id == unscheduled_dhcp_device_id(network_id)))
    if not views or legacy is not None:
        # No agent yet, or a network born before any agent registered: round 1's single
        # port stays (replacing it would change the DHCP server's address under guests).
        return None
    serving = set(s.scalars(select(Port.binding_host_id).where(
        Port.network_id == network_id, Port.device_owner == DHCP_OWNER,
        Port.binding_host_id != "")))
    current = [v for v in views if v.host in serving]
    keep = sum(1 for v in current if v.eligible)
    chosen = pick_agents(views, [v.id for v in current],
                         max(settings.dhcp_agents_per_network, keep))
    if not chosen:
        # Every agent is dead or disabled: keep what exists rather than tear DHCP down.
        return sorted(serving)
    by_id = {v.id: v.host for v in views}
    return [by_id[aid] for aid in chosen]
