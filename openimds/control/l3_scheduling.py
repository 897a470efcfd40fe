"""Which L3 agent hosts a router, kept on the router's interface ports (`binding:host_id`).

As with DHCP (dhcp_scheduling.py) the binding is the port itself: a router is hosted on H
when its interface ports are bound to H, so the L3 agent on H builds it and the l2-agent on H
builds the bridges its qr- ports join. A router is placed when its first interface is added
(Neutron schedules at create time; without an interface there is nothing to build), on one
alive, enabled L3 agent with the fewest routers. No L3 agent registered: unbound (round 1).
"""

from __future__ import annotations

from sqlalchemy import distinct, func, select
from sqlalchemy.orm import Session

from openimds.control.call import Settings
from openimds.control.scheduling import L3_AGENT, AgentView, is_alive, pick_agents
from openimds.inventory.models import Agent, Port, utcnow

__all__ = ["router_host"]

ROUTER_INTERFACE = "network:router_interface"


def router_host(s: Session, router_id: str, settings: Settings) -> str:
    """The host the router's interface ports are (to be) bound to; "" = unbound."""
    current = s.scalar(select(Port.binding_host_id).where(
        Port.device_id == router_id, Port.device_owner == ROUTER_INTERFACE,
        Port.binding_host_id != ""))
    if current:
        return str(current)
    now = utcnow()
    loads: dict[str, int] = {host: int(n) for host, n in s.execute(
        select(Port.binding_host_id, func.count(distinct(Port.device_id)))
        .where(Port.device_owner == ROUTER_INTERFACE).group_by(Port.binding_host_id))}
    views = [AgentView(a.id, a.host, is_alive(a.heartbeat_timestamp, now,
                                              settings.agent_down_time),
                       a.admin_state_up, loads.get(a.host, 0))
             for a in s.scalars(select(Agent).where(Agent.agent_type == L3_AGENT))]
    chosen = pick_agents(views, [], 1)
    by_id = {v.id: v.host for v in views}
    return by_id[chosen[0]] if chosen else ""
