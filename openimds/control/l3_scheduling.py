"""Which L3 agents host a router, kept on ports (`binding:host_id`).

As with DHCP (dhcp_scheduling.py) the binding is the port itself:

* a legacy router is hosted on H when its interface ports are bound to H, so the L3 agent on H
  builds it and the l2-agent on H builds the bridges its qr- ports join. It is placed when its
  first interface is added (Neutron schedules at create time; without an interface there is
  nothing to build), on one alive, enabled L3 agent with the fewest routers;
* an HA router (control/l3_ha.py) is hosted on every host one of its `ha-` ports is bound to;
  its interface ports stay unbound. It is placed at the same moment, on up to
  `max_l3_agents_per_router` agents.

No L3 agent registered: unbound (round 1).
"""

from __future__ import annotations

import ipaddress
from functools import partial

from sqlalchemy import distinct, func, select
from sqlalchemy.orm import Session

from openimds.control import l3_ha, segments
from openimds.control.call import Settings
from openimds.control.errors import Conflict
from openimds.control.ports import build_port
from openimds.control.scheduling import L3_AGENT, AgentView, is_alive, pick_agents
from openimds.inventory.models import Agent, Network, Port, RevisionCounter, Router, Subnet, utcnow
from openimds.wire import HA_OWNER, ROUTER_INTERFACE

__all__ = ["delete_ha_ports", "ha_network", "l3_agent_views",
           "place_router", "router_host", "router_hosts"]

VXLAN_MTU = 1450


def l3_agent_views(s: Session, settings: Settings) -> list[AgentView]:
    """Every L3 agent with its liveness and load (routers hosted: bound interface or ha-
    ports)."""
    now = utcnow()
    loads: dict[str, int] = {host: int(n) for host, n in s.execute(
        select(Port.binding_host_id, func.count(distinct(Port.device_id)))
        .where(Port.device_owner.in_((ROUTER_INTERFACE, HA_OWNER)))
        .group_by(Port.binding_host_id))}
    return [AgentView(a.id, a.host, is_alive(a.heartbeat_timestamp, now,
                                             settings.agent_down_time),
                      a.admin_state_up, loads.get(a.host, 0))
            for a in s.scalars(select(Agent).where(Agent.agent_type == L3_AGENT))]


def router_host(s: Session, router_id: str, settings: Settings) -> str:
    """The host a legacy router's interface ports are (to be) bound to; "" = unbound."""
    current = s.scalar(select(Port.binding_host_id).where(
        Port.device_id == router_id, Port.device_owner == ROUTER_INTERFACE,
        Port.binding_host_id != ""))
    if current:
        return str(current)
    views = l3_agent_views(s, settings)
    chosen = pick_agents(views, [], 1)
    by_id = {v.id: v.host for v in views}
    return by_id[chosen[0]] if chosen else ""


def router_hosts(s: Session, router_id: str) -> list[str]:
    """The hosts a router is scheduled to: its ha- ports' hosts, else its interfaces'."""
    for owner in (HA_OWNER, ROUTER_INTERFACE):
        hosts = sorted(set(s.scalars(select(Port.binding_host_id).where(
            Port.device_id == router_id, Port.device_owner == owner,
            Port.binding_host_id != ""))))
        if hosts:
            return hosts
    return []


def place_router(s: Session, router: Router, settings: Settings) -> None:
    """Make the router's ports say where it runs, after an interface was added or `ha`
    changed: a legacy router's interfaces bound to one host and no ha- port; an HA router's
    interfaces unbound and ha- ports on up to max_l3_agents_per_router hosts."""
    interfaces = list(s.scalars(select(Port).where(Port.device_id == router.id,
                                                   Port.device_owner == ROUTER_INTERFACE)))
    ha_ports = list(s.scalars(select(Port).where(Port.device_id == router.id,
                                                 Port.device_owner == HA_OWNER)))
    if not router.ha:
        for port in ha_ports:
            s.delete(port)
        s.flush()
        host = router_host(s, router.id, settings) if interfaces else ""
        for port in interfaces:
            port.binding_host_id = host
        router.ha_vr_id = None
        s.flush()
        return
    for port in interfaces:
        port.binding_host_id = ""
    if router.ha_vr_id is None:
        used = s.scalars(select(Router.ha_vr_id).where(Router.project_id == router.project_id,
                                                       Router.id != router.id))
        vr_id = l3_ha.allocate_vr_id(used)
        if vr_id is None:
            raise Conflict("No more Virtual Router Identifier (VRID) available when creating "
                           f"router {router.id}. The limit of number of HA Routers per tenant "
                           "is 254.", type="NoVRIDAvailable")
        router.ha_vr_id = vr_id
    if not interfaces:
        s.flush()
        return
    current = [p.binding_host_id for p in ha_ports]
    new_hosts = l3_ha.pick_ha_hosts(l3_agent_views(s, settings), current,
                                    settings.max_l3_agents_per_router)
    if new_hosts:
        network, subnet = ha_network(s, router.project_id, settings)
        for host in new_hosts:
            port = build_port(s, network, router.project_id,
                              fixed_ips=[{"subnet_id": subnet.id}],
                              name=l3_ha.ha_port_name(router.project_id),
                              device_id=router.id, device_owner=HA_OWNER)
            port.binding_host_id = host
    s.flush()


def ha_network(s: Session, project_id: str, settings: Settings) -> tuple[Network, Subnet]:
    """The project's HA network and subnet, created on first use (a tenant network: its
    segment comes from [ml2] tenant_network_types like any other)."""
    name = l3_ha.ha_network_name(project_id)
    network = s.scalars(select(Network).where(Network.project_id == project_id,
                                              Network.name == name)).first()
    if network is None:
        # The revision counter's row lock first, as create_network does: concurrent creates
        # on PostgreSQL then pick segment ids one after the other.
        s.execute(select(RevisionCounter.value).where(RevisionCounter.id == 1)
                  .with_for_update())
        seg = segments.allocate(None, settings.segments, partial(_used_ids, s))
        network = Network(project_id=project_id, name=name,
                          mtu=VXLAN_MTU if seg.network_type == "vxlan" else 1500,
                          network_type=seg.network_type, physical_network=seg.physical_network,
                          segmentation_id=seg.segmentation_id, segment_key=seg.key)
        s.add(network)
        s.flush()
    subnet = s.scalars(select(Subnet).where(Subnet.network_id == network.id)).first()
    if subnet is None:
        cidr = ipaddress.IPv4Network(settings.l3_ha_net_cidr)
        subnet = Subnet(network_id=network.id, project_id=project_id,
                        name=l3_ha.ha_subnet_name(project_id), ip_version=4, cidr=str(cidr),
                        gateway_ip=None, enable_dhcp=False,
                        allocation_pools=[{"start": str(cidr[1]), "end": str(cidr[-2])}],
                        host_routes=[], dns_nameservers=[])
        s.add(subnet)
        s.flush()
    return network, subnet


def delete_ha_ports(s: Session, router: Router) -> None:
    """A deleted router's ha- ports, and the project's HA network once no HA router of the
    project has a port on it (Neutron deletes it with the last HA router)."""
    for port in s.scalars(select(Port).where(Port.device_id == router.id,
                                             Port.device_owner == HA_OWNER)):
        s.delete(port)
    s.flush()
    name = l3_ha.ha_network_name(router.project_id)
    network = s.scalars(select(Network).where(Network.project_id == router.project_id,
                                              Network.name == name)).first()
    if network is None or s.scalar(select(Port.id).where(Port.network_id == network.id)):
        return
    for subnet in s.scalars(select(Subnet).where(Subnet.network_id == network.id)):
        s.delete(subnet)
    s.flush()
    s.delete(network)
    s.flush()


def _used_ids(s: Session, network_type: str, physical_network: str | None) -> list[int]:
    stmt = select(Network.segmentation_id).where(Network.network_type == network_type,
                                                 Network.segmentation_id.is_not(None))
    if physical_network is not None:
        stmt = stmt.where(Network.physical_network == physical_network)
    return [v for v in s.scalars(stmt) if v is not None]
