"""Where a server runs: Nova's forced host (`host`, or `availability_zone` "nova:H") or the
scheduler's pick among alive compute hosts (scheduling.pick_host), bound on its ports as
`binding:host_id`.

Compute hosts are the hosts of registered "Linux bridge agent"s (the l2-agent runs on every
host that holds guests). With no l2-agent registered at all (the one-host all-in-one), ports
stay unbound and everything behaves as in round 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from openimds.control.context import RequestContext
from openimds.control.errors import BadRequest, Conflict, Forbidden
from openimds.control.scheduling import LINUXBRIDGE_AGENT, AgentView, is_alive, pick_host
from openimds.inventory.models import Agent, Port, utcnow


def requested_host(az: str, host: str | None, ctx: RequestContext) -> tuple[str, str | None]:
    """(availability zone, forced host) from the create body: `host` or `az:host` (Nova)."""
    zone, sep, az_host = az.partition(":")
    if sep and az_host:
        if host is not None and host != az_host:
            raise BadRequest(f"host {host!r} contradicts availability_zone {az!r}.")
        host = az_host
    if host is not None and not ctx.is_admin:
        raise Forbidden("Only an admin may choose the host of a server (host, or "
                        "availability_zone zone:host).")
    return zone or "nova", host


def compute_hosts(s: Session, agent_down_time: float) -> list[AgentView]:
    """Every registered l2-agent's host with its load (ports of servers bound there)."""
    now = utcnow()
    loads: dict[str, int] = {host: int(n) for host, n in s.execute(
        select(Port.binding_host_id, func.count()).where(Port.device_owner.like("compute:%"))
        .group_by(Port.binding_host_id))}
    return [AgentView(a.id, a.host, is_alive(a.heartbeat_timestamp, now, agent_down_time),
                      a.admin_state_up, int(loads.get(a.host, 0)))
            for a in s.scalars(select(Agent).where(Agent.agent_type == LINUXBRIDGE_AGENT))]


def choose_host(s: Session, forced: str | None, agent_down_time: float) -> str | None:
    hosts = compute_hosts(s, agent_down_time)
    if forced is not None:
        if forced not in {h.host for h in hosts}:
            raise BadRequest(f"Compute host {forced} could not be found (no l2-agent "
                             "registered on it).")
        return forced
    if not hosts:
        return None
    chosen = pick_host(hosts)
    if chosen is None:
        raise Conflict("No valid host was found. There are not enough hosts available "
                       "(every compute host's l2-agent is dead or disabled).",
                       type="NoValidHost")
    return chosen


def with_host(body: dict[str, Any], ports: Sequence[Port], ctx: RequestContext) -> dict[str, Any]:
    """Nova's admin-only `OS-EXT-SRV-ATTR:host` / `hypervisor_hostname`: the host the server's
    ports are bound to."""
    if ctx.is_admin:
        host = next((p.binding_host_id for p in ports if p.binding_host_id), None)
        body["OS-EXT-SRV-ATTR:host"] = host
        body["OS-EXT-SRV-ATTR:hypervisor_hostname"] = host
    return body
