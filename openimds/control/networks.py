"""`/v2.0/networks`: list, show, create, update, delete."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import selectinload

from openimds.control.call import Call, Reply, get_bool, get_str, resource_body
from openimds.control.context import scoped
from openimds.control.errors import BadRequest, Conflict, Forbidden
from openimds.control.ports import DHCP_OWNER, shared_network
from openimds.control.resources import (
    ListSpec,
    get_visible,
    owner_project,
    parse_filters,
    post_filter,
)
from openimds.control.serializers import network_dict, select_fields
from openimds.inventory.models import Network, Port, Subnet

LIST_SPEC = ListSpec(
    model=Network,
    columns={
        "id": Network.id, "name": Network.name, "tenant_id": Network.project_id,
        "project_id": Network.project_id, "admin_state_up": Network.admin_state_up,
        "shared": Network.shared,
    },
    bool_columns=frozenset({"admin_state_up", "shared"}),
    attributes=frozenset({"mtu", "status", "subnets", "router:external", "description",
                          "availability_zones",
                          "created_at", "updated_at"}),
)

CREATE_FIELDS = ("name", "admin_state_up", "shared", "mtu", "tenant_id", "project_id",
                 "description", "router:external", "port_security_enabled")
UPDATE_FIELDS = ("name", "admin_state_up", "shared", "mtu", "description")


def _mtu(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 68 <= value <= 65535:
        raise BadRequest(f"Invalid input for mtu: '{value!r}' is not an integer in 68..65535",
                         type="InvalidInput")
    return value


def list_networks(call: Call) -> Reply:
    filters = parse_filters(call, LIST_SPEC)
    stmt = scoped(select(Network), Network, call.context, shared=shared_network())
    for cond in filters.sql.values():
        stmt = stmt.where(cond)
    stmt = stmt.options(selectinload(Network.subnets)).order_by(Network.created_at, Network.id)
    with call.store.read() as s:
        items = [network_dict(n) for n in s.scalars(stmt)]
    items = post_filter(items, filters.post)
    return Reply(200, {"networks": select_fields(items, filters.fields)})


def show_network(call: Call) -> Reply:
    with call.store.read() as s:
        net = get_visible(s, Network, call.params["id"], call.context, "Network",
                          shared=shared_network())
        return Reply(200, {"network": select_fields([network_dict(net)],
                                                    call.query_values("fields"))[0]})


def create_network(call: Call) -> Reply:
    obj = resource_body(call.body, "network", CREATE_FIELDS)
    ctx = call.context
    name = get_str(obj, "name")
    admin_up = get_bool(obj, "admin_state_up", True)
    shared = get_bool(obj, "shared", False)
    mtu = _mtu(obj.get("mtu", 1500))
    description = get_str(obj, "description", max_len=1024)
    get_bool(obj, "port_security_enabled", True)
    if get_bool(obj, "router:external", False):
        raise BadRequest("External networks are not supported by openimds.",
                         type="InvalidInput")
    if shared and not ctx.is_admin:
        raise Forbidden("Only an admin may create a shared network.")
    with call.store.session() as s:
        net = Network(project_id=owner_project(s, ctx, obj), name=name, admin_state_up=admin_up,
                      shared=shared, mtu=mtu, description=description)
        s.add(net)
        s.flush()
        return Reply(201, {"network": network_dict(net)})


def update_network(call: Call) -> Reply:
    obj = resource_body(call.body, "network", UPDATE_FIELDS)
    ctx = call.context
    with call.store.session() as s:
        net = get_visible(s, Network, call.params["id"], ctx, "Network", write=True)
        if "name" in obj:
            net.name = get_str(obj, "name")
        if "admin_state_up" in obj:
            net.admin_state_up = get_bool(obj, "admin_state_up", True)
        if "shared" in obj:
            shared = get_bool(obj, "shared", False)
            if shared != net.shared and not ctx.is_admin:
                raise Forbidden("Only an admin may share or unshare a network.")
            net.shared = shared
        if "mtu" in obj:
            net.mtu = _mtu(obj["mtu"])
        if "description" in obj:
            net.description = get_str(obj, "description", max_len=1024)
        s.flush()
        return Reply(200, {"network": network_dict(net)})


def delete_network(call: Call) -> Reply:
    with call.store.session() as s:
        net = get_visible(s, Network, call.params["id"], call.context, "Network", write=True)
        ports = list(s.scalars(select(Port).where(Port.network_id == net.id)))
        busy = [p for p in ports if p.device_owner != DHCP_OWNER]
        if busy:
            raise Conflict(f"Unable to complete operation on network {net.id}. There are one "
                           f"or more ports still in use on the network "
                           f"({', '.join(p.id for p in busy[:5])}).", type="NetworkInUse")
        # What the network owns itself (its DHCP port, then its subnets) goes with it.
        for port in ports:
            s.delete(port)
        s.flush()
        for subnet in s.scalars(select(Subnet).where(Subnet.network_id == net.id)):
            s.delete(subnet)
        s.flush()
        s.delete(net)
    return Reply(204)
