"""`/v2.0/agents`: the agent registry in Neutron's shape, plus the agents' state reports.

* `GET /v2.0/agents[/{id}]` (admin and service role): `alive` is derived from
  `heartbeat_timestamp` and `[DEFAULT] agent_down_time` (scheduling.is_alive);
* `PUT /v2.0/agents/{id}` (admin): `admin_state_up`, `description`;
* `DELETE /v2.0/agents/{id}` (admin): only a dead agent (409 while it still reports, since it
  would register again at its next report);
* `POST /v2.0/agents` (service role or admin): an agent's state report. Neutron receives
  these over RPC; openimds agents speak only HTTP, so the report is an upsert keyed by
  (agent_type, host): it creates the row, refreshes `heartbeat_timestamp` and
  `configurations`, and sets `started_at` when the body carries `start_flag`.

Heartbeats do not enter the change feed (agents are not tracked rows): a report every
`report_interval` per agent would wake every watcher for nothing.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import selectinload

from openimds.control.call import Call, Reply, get_bool, get_str, resource_body
from openimds.control.dhcp_scheduling import wanted_dhcp_hosts
from openimds.control.errors import BadRequest, Conflict, Forbidden, NotFound
from openimds.control.l3_scheduling import router_hosts
from openimds.control.resources import ListSpec, list_collection, parse_filters
from openimds.control.scheduling import AGENT_KINDS, DHCP_AGENT, L3_AGENT, is_alive
from openimds.control.serializers import network_dict, router_dict, select_fields
from openimds.control.subnets import sync_dhcp_port
from openimds.inventory import errors as inv
from openimds.inventory.models import Agent, Network, Port, Router, Subnet, utcnow
from openimds.wire import DHCP_OWNER, HA_OWNER, ROUTER_INTERFACE

LIST_SPEC = ListSpec(
    model=Agent,
    columns={"id": Agent.id, "agent_type": Agent.agent_type, "binary": Agent.binary,
             "host": Agent.host, "topic": Agent.topic, "admin_state_up": Agent.admin_state_up,
             "availability_zone": Agent.availability_zone},
    bool_columns=frozenset({"admin_state_up"}),
    attributes=frozenset({"alive", "description", "heartbeat_timestamp", "started_at",
                          "created_at", "configurations"}),
)

REPORT_FIELDS = ("agent_type", "binary", "topic", "host", "availability_zone",
                 "configurations", "start_flag", "description")
UPDATE_FIELDS = ("admin_state_up", "description")


def neutron_time(ts: datetime | None) -> str | None:
    """Neutron's agent timestamps: `2024-01-01 12:00:00` (UTC, no zone suffix)."""
    return None if ts is None else ts.strftime("%Y-%m-%d %H:%M:%S")


def agent_dict(agent: Agent, now: datetime, agent_down_time: float) -> dict[str, Any]:
    return {
        "id": agent.id,
        "agent_type": agent.agent_type,
        "binary": agent.binary,
        "topic": agent.topic,
        "host": agent.host,
        "availability_zone": agent.availability_zone,
        "admin_state_up": agent.admin_state_up,
        "alive": is_alive(agent.heartbeat_timestamp, now, agent_down_time),
        "description": agent.description or None,
        "configurations": dict(agent.configurations or {}),
        "heartbeat_timestamp": neutron_time(agent.heartbeat_timestamp),
        "started_at": neutron_time(agent.started_at),
        "created_at": neutron_time(agent.created_at),
        "resources_synced": None,
        "ha_state": None,
    }


def _reader(call: Call) -> None:
    if not call.context.reads_all:
        raise Forbidden("Only an admin or a service user may list agents.")


def _admin(call: Call) -> None:
    if not call.context.is_admin:
        raise Forbidden("Only an admin may change or delete agents.")


def _get(s: Any, aid: str) -> Agent:
    agent = s.get(Agent, aid)
    if agent is None:
        raise NotFound(f"Agent {aid} could not be found.", type="AgentNotFound")
    return agent  # type: ignore[no-any-return]


def list_agents(call: Call) -> Reply:
    _reader(call)
    filters = parse_filters(call, LIST_SPEC)
    stmt = select(Agent)
    for cond in filters.sql.values():
        stmt = stmt.where(cond)
    now, down = utcnow(), call.settings.agent_down_time
    with call.store.read() as s:
        return Reply(200, list_collection(
            call, s, stmt, model=Agent, order=(Agent.host, Agent.agent_type, Agent.id),
            serialize=lambda a: agent_dict(a, now, down), filters=filters,
            collection="agents", path="/v2.0/agents", kind="Agent"))


def show_agent(call: Call) -> Reply:
    _reader(call)
    with call.store.read() as s:
        agent = _get(s, call.params["id"])
        body = agent_dict(agent, utcnow(), call.settings.agent_down_time)
    return Reply(200, {"agent": select_fields([body], call.query_values("fields"))[0]})


def update_agent(call: Call) -> Reply:
    _admin(call)
    obj = resource_body(call.body, "agent", UPDATE_FIELDS)
    with call.store.session() as s:
        agent = _get(s, call.params["id"])
        if "admin_state_up" in obj:
            agent.admin_state_up = get_bool(obj, "admin_state_up", True)
        if "description" in obj:
            agent.description = get_str(obj, "description", max_len=1024, nullable=True)
        s.flush()
        return Reply(200, {"agent": agent_dict(agent, utcnow(), call.settings.agent_down_time)})


def delete_agent(call: Call) -> Reply:
    _admin(call)
    with call.store.session() as s:
        agent = _get(s, call.params["id"])
        if is_alive(agent.heartbeat_timestamp, utcnow(), call.settings.agent_down_time):
            raise Conflict(f"Agent {agent.id} ({agent.agent_type} on {agent.host}) is alive; "
                           "stop it (and wait agent_down_time) before deleting it, or it "
                           "registers again at its next report.", type="AgentInUse")
        s.delete(agent)
    return Reply(204)


def report_state(call: Call) -> Reply:
    """An agent's state report (see the module docstring): 201 on first registration."""
    ctx = call.context
    if not (ctx.is_admin or "service" in ctx.roles):
        raise Forbidden("Only a service user (an agent) may report agent state.")
    obj = resource_body(call.body, "agent", REPORT_FIELDS, required=("agent_type", "host"))
    agent_type = get_str(obj, "agent_type")
    if agent_type not in AGENT_KINDS:
        raise BadRequest(f"Invalid input for agent_type: '{agent_type}' is not one of "
                         f"{', '.join(sorted(AGENT_KINDS))}", type="InvalidInput")
    host = get_str(obj, "host")
    if not host.strip():
        raise BadRequest("Invalid input for host: must not be empty", type="InvalidInput")
    binary_default, topic_default = AGENT_KINDS[agent_type]
    binary = get_str(obj, "binary", binary_default) or binary_default
    topic = get_str(obj, "topic", topic_default) or topic_default
    zone = get_str(obj, "availability_zone", "", nullable=True) or None
    configurations = obj.get("configurations", {})
    if not isinstance(configurations, dict):
        raise BadRequest("Invalid input for configurations: expected an object",
                         type="InvalidInput")
    start = get_bool(obj, "start_flag", False)

    def attempt() -> Reply:
        now = utcnow()
        with call.store.session() as s:
            agent = s.scalars(select(Agent).where(Agent.agent_type == agent_type,
                                                  Agent.host == host)).first()
            status = 200
            if agent is None:
                status = 201
                agent = Agent(agent_type=agent_type, host=host, created_at=now, started_at=now)
                s.add(agent)
            elif start:
                agent.started_at = now
            agent.binary, agent.topic = binary, topic
            agent.availability_zone = zone
            agent.configurations = configurations
            agent.heartbeat_timestamp = now
            s.flush()
            return Reply(status, {"agent": agent_dict(agent, now,
                                                      call.settings.agent_down_time)})

    try:
        reply = attempt()
    except inv.Conflict:  # two first reports raced on (agent_type, host): the row exists now
        reply = attempt()
    if agent_type == DHCP_AGENT and (start or reply.status == 201):
        schedule_networks(call)
    return reply


def schedule_networks(call: Call) -> int:
    """Give every DHCP network its `dhcp_agents_per_network` agents (Neutron's network
    auto-scheduling when a DHCP agent starts); returns how many networks changed. One
    transaction per network, so one failure costs one network, not the report."""
    with call.store.read() as s:
        ids = list(s.scalars(select(Subnet.network_id).where(Subnet.enable_dhcp.is_(True))
                             .distinct()))
    changed = 0
    for network_id in ids:
        with call.store.session() as s:
            network = s.get(Network, network_id)
            if network is None:
                continue
            hosts = wanted_dhcp_hosts(s, network_id, call.settings)
            if hosts is None:
                continue
            before = _dhcp_hosts(s, network_id)
            if set(hosts) != before:
                sync_dhcp_port(s, network, hosts)
                changed += 1
    return changed


def _dhcp_hosts(s: Any, network_id: str) -> set[str]:
    return set(s.scalars(select(Port.binding_host_id).where(
        Port.network_id == network_id, Port.device_owner == DHCP_OWNER)))


def _dhcp_agent(s: Any, aid: str) -> Agent:
    agent = _get(s, aid)
    if agent.agent_type != DHCP_AGENT:
        raise BadRequest(f"Agent {aid} is a {agent.agent_type}, not a DHCP agent.",
                         type="InvalidInput")
    return agent


def network_dhcp_agents(call: Call) -> Reply:
    """`GET /v2.0/networks/{id}/dhcp-agents`."""
    _reader(call)
    now, down = utcnow(), call.settings.agent_down_time
    with call.store.read() as s:
        net = s.get(Network, call.params["id"])
        if net is None:
            raise NotFound(f"Network {call.params['id']} could not be found.",
                           type="NetworkNotFound")
        hosts = _dhcp_hosts(s, net.id)
        agents = s.scalars(select(Agent).where(Agent.agent_type == DHCP_AGENT,
                                               Agent.host.in_(hosts)).order_by(Agent.host))
        return Reply(200, {"agents": [agent_dict(a, now, down) for a in agents]})


def agent_dhcp_networks(call: Call) -> Reply:
    """`GET /v2.0/agents/{id}/dhcp-networks`."""
    _reader(call)
    with call.store.read() as s:
        agent = _dhcp_agent(s, call.params["id"])
        ids = set(s.scalars(select(Port.network_id).where(
            Port.device_owner == DHCP_OWNER, Port.binding_host_id == agent.host)))
        nets = s.scalars(select(Network).where(Network.id.in_(ids))
                         .options(selectinload(Network.subnets)).order_by(Network.created_at))
        return Reply(200, {"networks": [network_dict(n, provider=True) for n in nets]})


def add_dhcp_network(call: Call) -> Reply:
    """`POST /v2.0/agents/{id}/dhcp-networks` {"network_id": N}: N gets a DHCP port on the
    agent's host (also beyond dhcp_agents_per_network)."""
    _admin(call)
    body = call.body
    if not isinstance(body, dict) or not isinstance(body.get("network_id"), str):
        raise BadRequest('request body must be {"network_id": "<network id>"}')
    network_id = body["network_id"]
    with call.store.session() as s:
        agent = _dhcp_agent(s, call.params["id"])
        network = s.get(Network, network_id)
        if network is None:
            raise NotFound(f"Network {network_id} could not be found.", type="NetworkNotFound")
        hosts = _dhcp_hosts(s, network_id) - {""}
        if agent.host in hosts:
            raise Conflict(f"The network {network_id} has been already hosted by the DHCP "
                           f"Agent {agent.id}.", type="NetworkHostedByDHCPAgent")
        if s.scalar(select(Subnet.id).where(Subnet.network_id == network_id,
                                            Subnet.enable_dhcp.is_(True))) is None:
            raise BadRequest(f"Network {network_id} has no DHCP-enabled subnet: there is "
                             "nothing for a DHCP agent to serve.", type="InvalidInput")
        sync_dhcp_port(s, network, sorted(hosts | {agent.host}))
    return Reply(201)


def remove_dhcp_network(call: Call) -> Reply:
    """`DELETE /v2.0/agents/{id}/dhcp-networks/{network_id}`: the agent's DHCP port goes."""
    _admin(call)
    network_id = call.params["network_id"]
    with call.store.session() as s:
        agent = _dhcp_agent(s, call.params["id"])
        network = s.get(Network, network_id)
        hosts = _dhcp_hosts(s, network_id) if network is not None else set()
        if network is None or agent.host not in hosts:
            raise Conflict(f"The network {network_id} is not hosted by the DHCP agent "
                           f"{agent.id}.", type="NetworkNotHostedByDhcpAgent")
        sync_dhcp_port(s, network, sorted(hosts - {agent.host, ""}))
    return Reply(204)


def router_l3_agents(call: Call) -> Reply:
    """`GET /v2.0/routers/{id}/l3-agents`: the agents on the hosts the router is scheduled to
    (l3_scheduling.router_hosts). For an HA router each carries `ha_state`, `active` or
    `standby`, as its agent last reported it (`configurations.ha_routers`); an agent that has
    not reported the router yet shows `standby`, as Neutron's do until keepalived says more."""
    _reader(call)
    now, down = utcnow(), call.settings.agent_down_time
    with call.store.read() as s:
        router = s.get(Router, call.params["id"])
        if router is None:
            raise NotFound(f"Router {call.params['id']} could not be found.",
                           type="RouterNotFound")
        hosts = router_hosts(s, router.id)
        agents = s.scalars(select(Agent).where(Agent.agent_type == L3_AGENT,
                                               Agent.host.in_(hosts)).order_by(Agent.host))
        out = []
        for a in agents:
            body = agent_dict(a, now, down)
            if router.ha:
                states = (a.configurations or {}).get("ha_routers") or {}
                body["ha_state"] = "active" if states.get(router.id) == "active" \
                    else "standby"
            out.append(body)
        return Reply(200, {"agents": out})


def agent_l3_routers(call: Call) -> Reply:
    """`GET /v2.0/agents/{id}/l3-routers`."""
    _reader(call)
    with call.store.read() as s:
        agent = _get(s, call.params["id"])
        if agent.agent_type != L3_AGENT:
            raise BadRequest(f"Agent {agent.id} is a {agent.agent_type}, not an L3 agent.",
                             type="InvalidInput")
        ids = set(s.scalars(select(Port.device_id).where(
            Port.device_owner.in_((ROUTER_INTERFACE, HA_OWNER)),
            Port.binding_host_id == agent.host)))
        routers = s.scalars(select(Router).where(Router.id.in_(ids))
                            .order_by(Router.created_at))
        return Reply(200, {"routers": [router_dict(r, admin=True) for r in routers]})
