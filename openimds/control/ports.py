"""`/v2.0/ports`: list, show, create, update, delete; and `build_port`, which the subnet (DHCP
port), router (interface) and server (compute port) operations use to make their ports."""

from __future__ import annotations

import ipaddress
import secrets
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.orm import Session, selectinload

from openimds.control import ipam
from openimds.control.call import Call, Reply, get_bool, get_list, get_str, resource_body
from openimds.control.context import RequestContext, scoped
from openimds.control.errors import BadRequest, Conflict, Forbidden
from openimds.control.resources import (
    Filters,
    ListSpec,
    get_visible,
    not_found,
    owner_project,
    parse_filters,
    post_filter,
    retry_on_race,
)
from openimds.control.serializers import port_dict, select_fields
from openimds.inventory.models import FixedIP, Network, Port, Subnet
from openimds.inventory.validate import normalize_mac

ROUTER_OWNERS = ("network:router_interface", "network:router_interface_distributed",
                 "network:ha_router_replicated_interface")
DHCP_OWNER = "network:dhcp"

LIST_SPEC = ListSpec(
    model=Port,
    columns={
        "id": Port.id, "name": Port.name, "network_id": Port.network_id,
        "tenant_id": Port.project_id, "project_id": Port.project_id,
        "mac_address": Port.mac_address, "device_id": Port.device_id,
        "device_owner": Port.device_owner, "admin_state_up": Port.admin_state_up,
        "status": Port.status,
    },
    bool_columns=frozenset({"admin_state_up"}),
    attributes=frozenset({"description", "created_at", "updated_at"}),
)

CREATE_FIELDS = ("network_id", "name", "fixed_ips", "mac_address", "device_id", "device_owner",
                 "admin_state_up", "tenant_id", "project_id", "description")
UPDATE_FIELDS = ("name", "fixed_ips", "mac_address", "device_id", "device_owner",
                 "admin_state_up", "description")


def shared_network() -> Any:
    return Network.shared.is_(True)


def random_mac(session: Session, network_id: str) -> str:
    """A fresh fa:16:3e:xx:xx:xx (OpenStack's prefix) unused on the network."""
    used = set(session.scalars(select(Port.mac_address).where(Port.network_id == network_id)))
    used |= {p.mac_address for p in session.new if isinstance(p, Port)}
    while True:
        mac = "fa:16:3e:" + ":".join(f"{b:02x}" for b in secrets.token_bytes(3))
        if mac not in used:
            return mac


def _subnets_of(session: Session, network_id: str) -> list[Subnet]:
    return list(session.scalars(
        select(Subnet).where(Subnet.network_id == network_id).order_by(Subnet.created_at,
                                                                        Subnet.id)))


def resolve_fixed_ips(session: Session, network_id: str, requested: Sequence[Any] | None, *,
                      router: bool = False) -> list[tuple[Subnet, str]]:
    """Turn a Neutron `fixed_ips` request into (subnet, address) pairs, allocating where only a
    subnet is named. None = Neutron's default: one address per IP version, from the first
    subnet of that version with a free one."""
    subnets = _subnets_of(session, network_id)
    out: list[tuple[Subnet, str]] = []
    if requested is None:
        for version in (4, 6):
            of_version = [s for s in subnets if s.ip_version == version]
            for subnet in of_version:
                try:
                    out.append((subnet, ipam.allocate_ip(session, subnet)))
                    break
                except Conflict:
                    if subnet is of_version[-1]:
                        raise
        return out
    by_id = {s.id: s for s in subnets}
    taken: set[tuple[str, str]] = set()
    for entry in requested:
        if not isinstance(entry, dict) or not set(entry) <= {"subnet_id", "ip_address"}:
            raise BadRequest("Invalid input for fixed_ips: each entry is "
                             '{"subnet_id": ..., "ip_address": ...}', type="InvalidInput")
        subnet_id, ip = entry.get("subnet_id"), entry.get("ip_address")
        if subnet_id is not None and not isinstance(subnet_id, str):
            raise BadRequest("Invalid input for fixed_ips: subnet_id must be a string")
        if ip is not None and not isinstance(ip, str):
            raise BadRequest("Invalid input for fixed_ips: ip_address must be a string")
        if subnet_id is None and ip is None:
            raise BadRequest("Invalid input for fixed_ips: give a subnet_id, an ip_address "
                             "or both", type="InvalidInput")
        if subnet_id is not None:
            found = by_id.get(subnet_id)
            if found is None:
                raise BadRequest(f"Invalid input for operation: subnet {subnet_id} is not on "
                                 f"network {network_id}.", type="InvalidInput")
            subnet = found
        else:
            assert ip is not None
            subnet = _subnet_for_ip(subnets, ip, network_id)
        if ip is None:
            # Addresses picked earlier in this same request are not in the table yet.
            used = ipam.used_addresses(session, subnet.id) | {a for s, a in taken
                                                              if s == subnet.id}
            free = ipam.first_free(ipam.parse_pools(subnet.allocation_pools or []), used,
                                   subnet.gateway_ip)
            if free is None:
                raise Conflict(f"No more IP addresses available for subnet {subnet.id}.",
                               type="IpAddressGenerationFailure")
            addr = free
        else:
            addr = ipam.reserve_ip(session, subnet, ip, router=router)
        if (subnet.id, addr) in taken:
            raise BadRequest(f"Duplicate IP address {addr} in fixed_ips", type="InvalidInput")
        taken.add((subnet.id, addr))
        out.append((subnet, addr))
    return out


def _subnet_for_ip(subnets: Sequence[Subnet], ip: str, network_id: str) -> Subnet:
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        raise BadRequest(f"Invalid input for fixed_ips: '{ip}' is not a valid IP address",
                         type="InvalidInput") from None
    for subnet in subnets:
        if addr in ipaddress.ip_network(subnet.cidr):
            return subnet
    raise BadRequest(f"IP address {addr} does not belong to any subnet of network "
                     f"{network_id}.", type="InvalidIpForNetwork")


def build_port(session: Session, network: Network, project_id: str, *,
               fixed_ips: Sequence[Any] | None = None, name: str = "", device_id: str = "",
               device_owner: str = "", mac: str | None = None,
               admin_state_up: bool = True) -> Port:
    router = device_owner in ROUTER_OWNERS
    pairs = resolve_fixed_ips(session, network.id, fixed_ips, router=router)
    port = Port(network_id=network.id, project_id=project_id, name=name,
                mac_address=normalize_mac(mac) if mac else random_mac(session, network.id),
                device_id=device_id, device_owner=device_owner, admin_state_up=admin_state_up,
                status="ACTIVE")
    port.fixed_ips = [FixedIP(subnet_id=s.id, network_id=network.id, ip_address=a)
                      for s, a in pairs]
    session.add(port)
    session.flush()
    return port


# ---- operations ---------------------------------------------------------------------------


def list_statement(call: Call, filters: Filters) -> Select[Any]:
    """The SQL of a port listing (bench/bench_port_lookup.py EXPLAINs this very statement)."""
    stmt = scoped(select(Port), Port, call.context).options(selectinload(Port.fixed_ips))
    fip = _fixed_ip_filter(call)
    sql = dict(filters.sql)
    if fip is not None:
        stmt = stmt.where(Port.id.in_(fip))
        # The subquery already filters on FixedIP.network_id (always the port's network).
        # Repeating it on ports would lead SQLite to walk every port of the network via
        # ix_ports_network_id instead of probing ix_fixed_ips_ip_network then primary keys.
        sql.pop("network_id", None)
    for cond in sql.values():
        stmt = stmt.where(cond)
    return stmt.order_by(Port.created_at, Port.id)


def list_ports(call: Call) -> Reply:
    filters = parse_filters(call, LIST_SPEC, special=("fixed_ips",))
    stmt = list_statement(call, filters)
    with call.store.read() as s:
        items = [port_dict(p) for p in s.scalars(stmt)]
    items = post_filter(items, filters.post)
    return Reply(200, {"ports": select_fields(items, filters.fields)})


def _fixed_ip_filter(call: Call) -> Any:
    """`?fixed_ips=ip_address=X&fixed_ips=subnet_id=Y` as a subquery of port ids on FixedIP.

    With `network_id` in the same query the subquery filters on (ip_address, network_id), the
    exact shape of ix_fixed_ips_ip_network, so the lookup is one index probe."""
    values = call.query_values("fixed_ips")
    if not values:
        return None
    ips: list[str] = []
    subnets: list[str] = []
    for value in values:
        key, sep, wanted = value.partition("=")
        if not sep or key not in ("ip_address", "subnet_id"):
            raise BadRequest(f"Invalid fixed_ips filter {value!r}: use ip_address=IP or "
                             "subnet_id=ID", type="InvalidInput")
        (ips if key == "ip_address" else subnets).append(wanted)
    sub = select(FixedIP.port_id)
    if ips:
        normal = []
        for ip in ips:
            try:
                normal.append(str(ipaddress.ip_address(ip)))
            except ValueError:
                normal.append(ip)  # matches nothing, as Neutron answers an empty list
        sub = sub.where(FixedIP.ip_address.in_(normal))
    if subnets:
        sub = sub.where(FixedIP.subnet_id.in_(subnets))
    networks = call.query_values("network_id")
    if networks:
        sub = sub.where(FixedIP.network_id.in_(networks))
    return sub


def show_port(call: Call) -> Reply:
    with call.store.read() as s:
        port = get_visible(s, Port, call.params["id"], call.context, "Port")
        return Reply(200, {"port": select_fields([port_dict(port)],
                                                 call.query_values("fields"))[0]})


def create_port(call: Call) -> Reply:
    obj = resource_body(call.body, "port", CREATE_FIELDS, required=("network_id",))
    ctx = call.context
    network_id = get_str(obj, "network_id", max_len=64)
    name = get_str(obj, "name")
    device_id = get_str(obj, "device_id")
    device_owner = get_str(obj, "device_owner")
    admin_up = get_bool(obj, "admin_state_up", True)
    description = get_str(obj, "description", max_len=1024)
    fixed = get_list(obj, "fixed_ips") if "fixed_ips" in obj else None
    mac = get_str(obj, "mac_address", max_len=32) if "mac_address" in obj else None
    _check_owner_allowed(ctx, device_owner)

    def write() -> Reply:
        with call.store.session() as s:
            network = get_visible(s, Network, network_id, ctx, "Network",
                                  shared=shared_network())
            project_id = owner_project(s, ctx, obj)
            port = build_port(s, network, project_id, fixed_ips=fixed, name=name,
                              device_id=device_id, device_owner=device_owner, mac=mac,
                              admin_state_up=admin_up)
            port.description = description
            return Reply(201, {"port": port_dict(port)})

    return retry_on_race(write)


def _check_owner_allowed(ctx: RequestContext, device_owner: str) -> None:
    # Network-owned ports are the control plane's to make (as Neutron's policy says).
    if device_owner.startswith("network:") and not ctx.is_admin:
        raise Forbidden(f"Only an admin may create or change ports owned by {device_owner}; "
                        "use add_router_interface for router ports.")


def update_port(call: Call) -> Reply:
    obj = resource_body(call.body, "port", UPDATE_FIELDS)
    ctx = call.context
    with call.store.session() as s:
        port = get_visible(s, Port, call.params["id"], ctx, "Port", write=True)
        if "name" in obj:
            port.name = get_str(obj, "name")
        if "admin_state_up" in obj:
            port.admin_state_up = get_bool(obj, "admin_state_up", True)
        if "device_id" in obj:
            port.device_id = get_str(obj, "device_id")
        if "device_owner" in obj:
            owner = get_str(obj, "device_owner")
            _check_owner_allowed(ctx, owner)
            port.device_owner = owner
        if "description" in obj:
            port.description = get_str(obj, "description", max_len=1024)
        if "mac_address" in obj:
            port.mac_address = normalize_mac(get_str(obj, "mac_address", max_len=32))
        if "fixed_ips" in obj:
            requested = get_list(obj, "fixed_ips")
            # Free the old addresses first so re-requesting one of them is not a clash.
            port.fixed_ips.clear()
            s.flush()
            pairs = resolve_fixed_ips(s, port.network_id, requested,
                                      router=port.device_owner in ROUTER_OWNERS)
            port.fixed_ips = [FixedIP(subnet_id=sub.id, network_id=port.network_id,
                                      ip_address=a) for sub, a in pairs]
        s.flush()
        return Reply(200, {"port": port_dict(port)})


def delete_port(call: Call) -> Reply:
    with call.store.session() as s:
        port = get_visible(s, Port, call.params["id"], call.context, "Port", write=True)
        if port.device_owner in ROUTER_OWNERS:
            raise Conflict(f"Port {port.id} cannot be deleted directly via the port API: has "
                           f"device owner {port.device_owner}; use remove_router_interface.",
                           type="L3PortInUse")
        s.delete(port)
    return Reply(204)


def get_port_for_write(s: Session, ctx: RequestContext, port_id: str) -> Port:
    port = s.scalars(scoped(select(Port).where(Port.id == port_id), Port, ctx,
                            write=True)).first()
    if port is None:
        raise not_found("Port", port_id)
    return port
