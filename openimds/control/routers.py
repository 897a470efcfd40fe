"""`/v2.0/routers` and its interface actions.

A router interface is a port with device_owner ``network:router_interface`` and device_id = the
router id, exactly as in Neutron (the L3 agent reads them that way). Attaching by subnet gives
the new port the subnet's gateway address; a subnet without a gateway cannot be attached.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from openimds.control.call import Call, Reply, get_bool, get_str, resource_body
from openimds.control.context import scoped
from openimds.control.errors import BadRequest, Conflict, Forbidden, NotFound
from openimds.control.l3_ha import ha_by_default, not_enough_agents
from openimds.control.l3_scheduling import delete_ha_ports, l3_agent_views, place_router
from openimds.control.ports import build_port, get_port_for_write
from openimds.control.resources import (
    ListSpec,
    get_visible,
    list_collection,
    owner_project,
    parse_filters,
)
from openimds.control.serializers import router_dict, select_fields
from openimds.inventory.models import Network, Port, Router, Subnet
from openimds.wire import ROUTER_INTERFACE, ROUTER_INTERFACE_OWNERS

LIST_SPEC = ListSpec(
    model=Router,
    columns={
        "id": Router.id, "name": Router.name, "tenant_id": Router.project_id,
        "project_id": Router.project_id, "admin_state_up": Router.admin_state_up,
    },
    bool_columns=frozenset({"admin_state_up"}),
    attributes=frozenset({"status", "description", "created_at", "updated_at"}),
)

CREATE_FIELDS = ("name", "admin_state_up", "tenant_id", "project_id", "description",
                 "external_gateway_info", "ha")
UPDATE_FIELDS = ("name", "admin_state_up", "description", "ha")


def _admin_view(call: Call) -> bool:
    return call.context.reads_all


def list_routers(call: Call) -> Reply:
    filters = parse_filters(call, LIST_SPEC)
    stmt = scoped(select(Router), Router, call.context)
    for cond in filters.sql.values():
        stmt = stmt.where(cond)
    with call.store.read() as s:
        return Reply(200, list_collection(
            call, s, stmt, model=Router, order=(Router.created_at, Router.id),
            serialize=lambda r: router_dict(r, admin=_admin_view(call)), filters=filters,
            collection="routers", path="/v2.0/routers", kind="Router"))


def show_router(call: Call) -> Reply:
    with call.store.read() as s:
        router = get_visible(s, Router, call.params["id"], call.context, "Router")
        return Reply(200, {"router": select_fields([router_dict(router,
                                                                admin=_admin_view(call))],
                                                   call.query_values("fields"))[0]})


def create_router(call: Call) -> Reply:
    obj = resource_body(call.body, "router", CREATE_FIELDS)
    name = get_str(obj, "name")
    admin_up = get_bool(obj, "admin_state_up", True)
    description = get_str(obj, "description", max_len=1024)
    if obj.get("external_gateway_info") not in (None, {}):
        raise BadRequest("External gateways are not supported by openimds.",
                         type="InvalidInput")
    ha = _requested_ha(call, obj)
    with call.store.session() as s:
        agents = l3_agent_views(s, call.settings)
        if ha is None:
            ha = ha_by_default(call.settings.l3_ha, agents)
        elif ha and (message := not_enough_agents(agents,
                                                  call.settings.min_l3_agents_per_router)):
            raise Conflict(message, type="HANotEnoughAvailableAgents")
        router = Router(project_id=owner_project(s, call.context, obj), name=name,
                        admin_state_up=admin_up, description=description, ha=ha)
        s.add(router)
        s.flush()
        place_router(s, router, call.settings)
        return Reply(201, {"router": router_dict(router, admin=_admin_view(call))})


def _requested_ha(call: Call, obj: dict[str, Any]) -> bool | None:
    """`ha` from the body; only an admin may set it (Neutron's policy), None = not given."""
    if "ha" not in obj:
        return None
    if not call.context.is_admin:
        raise Forbidden("Only an admin may set the ha attribute of a router.")
    return get_bool(obj, "ha", False)


def update_router(call: Call) -> Reply:
    obj = resource_body(call.body, "router", UPDATE_FIELDS)
    ha = _requested_ha(call, obj)
    with call.store.session() as s:
        router = get_visible(s, Router, call.params["id"], call.context, "Router", write=True)
        if ha is not None and ha != router.ha:
            # Neutron: the router must be down (admin_state_up false) while ha changes.
            if router.admin_state_up and get_bool(obj, "admin_state_up", True):
                raise BadRequest("Cannot change HA attribute of active routers. Please set router "
                               "admin_state_up to False prior to upgrade",
                               type="BadRequest")
            router.ha = ha
            place_router(s, router, call.settings)
        if "name" in obj:
            router.name = get_str(obj, "name")
        if "admin_state_up" in obj:
            router.admin_state_up = get_bool(obj, "admin_state_up", True)
        if "description" in obj:
            router.description = get_str(obj, "description", max_len=1024)
        s.flush()
        return Reply(200, {"router": router_dict(router, admin=_admin_view(call))})


def _interfaces(s: Session, router_id: str) -> list[Port]:
    return list(s.scalars(select(Port).where(Port.device_id == router_id,
                                             Port.device_owner.in_(ROUTER_INTERFACE_OWNERS))))


def delete_router(call: Call) -> Reply:
    with call.store.session() as s:
        router = get_visible(s, Router, call.params["id"], call.context, "Router", write=True)
        ports = _interfaces(s, router.id)
        if ports:
            raise Conflict(f"Router {router.id} still has ports "
                           f"({', '.join(p.id for p in ports)}); remove its interfaces first.",
                           type="RouterInUse")
        delete_ha_ports(s, router)
        s.delete(router)
    return Reply(204)


def _interface_body(body: Any) -> tuple[str | None, str | None]:
    if not isinstance(body, dict):
        raise BadRequest('request body must be {"subnet_id": ...} or {"port_id": ...}')
    unknown = set(body) - {"subnet_id", "port_id"}
    if unknown:
        raise BadRequest(f"Unrecognized attribute(s) '{', '.join(sorted(unknown))}'")
    subnet_id = get_str(body, "subnet_id", max_len=64) if "subnet_id" in body else None
    port_id = get_str(body, "port_id", max_len=64) if "port_id" in body else None
    if (subnet_id is None) == (port_id is None):
        raise BadRequest("Bad router request: specify exactly one of subnet_id or port_id.",
                         type="BadRequest")
    return subnet_id, port_id


def _interface_info(router: Router, port: Port) -> dict[str, Any]:
    subnet_ids = [f.subnet_id for f in port.fixed_ips]
    return {"id": router.id, "tenant_id": router.project_id, "project_id": router.project_id,
            "port_id": port.id, "network_id": port.network_id,
            "subnet_id": subnet_ids[0] if subnet_ids else None, "subnet_ids": subnet_ids}


def add_router_interface(call: Call) -> Reply:
    subnet_id, port_id = _interface_body(call.body)
    ctx = call.context
    with call.store.session() as s:
        router = get_visible(s, Router, call.params["id"], ctx, "Router", write=True)
        attached = _interfaces(s, router.id)
        if subnet_id is not None:
            subnet = get_visible(s, Subnet, subnet_id, ctx, "Subnet", write=True)
            if not subnet.gateway_ip:
                raise BadRequest(f"Bad router request: Subnet for router interface must have a "
                                 f"gateway IP (subnet {subnet.id} was created without one).",
                                 type="BadRequest")
            _refuse_second_interface(attached, subnet, router)
            network = s.get(Network, subnet.network_id)
            assert network is not None
            port = build_port(s, network, router.project_id,
                              fixed_ips=[{"subnet_id": subnet.id,
                                          "ip_address": subnet.gateway_ip}],
                              device_id=router.id, device_owner=ROUTER_INTERFACE)
        else:
            assert port_id is not None
            port = get_port_for_write(s, ctx, port_id)
            if port.device_id:
                raise Conflict(f"Port {port.id} is already in use by {port.device_owner or 'a device'} "
                               f"{port.device_id}.", type="PortInUse")
            if not port.fixed_ips:
                raise BadRequest(f"Bad router request: Router port {port.id} must have at least "
                                 "one fixed IP.", type="BadRequest")
            for fip in port.fixed_ips:
                subnet = s.get(Subnet, fip.subnet_id)
                assert subnet is not None
                _refuse_second_interface(attached, subnet, router)
            port.device_id = router.id
            port.device_owner = ROUTER_INTERFACE
            s.flush()
        # Several hosts: the router lives where its L3 agents are (l3_scheduling.py).
        place_router(s, router, call.settings)
        return Reply(200, _interface_info(router, port))


def _refuse_second_interface(attached: list[Port], subnet: Subnet, router: Router) -> None:
    for other in attached:
        if any(f.subnet_id == subnet.id for f in other.fixed_ips):
            raise BadRequest(f"Bad router request: Router {router.id} already has a port on "
                             f"subnet {subnet.id}.", type="BadRequest")


def remove_router_interface(call: Call) -> Reply:
    subnet_id, port_id = _interface_body(call.body)
    ctx = call.context
    with call.store.session() as s:
        router = get_visible(s, Router, call.params["id"], ctx, "Router", write=True)
        attached = _interfaces(s, router.id)
        if port_id is not None:
            port = next((p for p in attached if p.id == port_id), None)
            if port is None:
                raise NotFound(f"Router {router.id} does not have an interface with id "
                               f"{port_id}", type="RouterInterfaceNotFound")
        else:
            port = next((p for p in attached
                         if any(f.subnet_id == subnet_id for f in p.fixed_ips)), None)
            if port is None:
                raise NotFound(f"Router {router.id} has no interface on subnet {subnet_id}",
                               type="RouterInterfaceNotFoundForSubnet")
        info = _interface_info(router, port)
        # Neutron deletes the interface port in both cases (by subnet and by port).
        s.delete(port)
    return Reply(200, info)

