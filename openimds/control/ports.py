"""`/v2.0/ports`: list, show, create, update, delete; and `build_port`, which the subnet (DHCP
port), router (interface) and server (compute port) operations use to make their ports."""

from __future__ import annotations

import ipaddress
import secrets
from collections.abc import Mapping, Sequence
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
    list_collection,
    not_found,
    owner_project,
    parse_filters,
    retry_on_race,
)
from openimds.control.serializers import port_dict, select_fields
from openimds.inventory.errors import InvalidValue
from openimds.inventory.models import FixedIP, Instance, Network, Port, Subnet
from openimds.inventory.validate import normalize_mac
from openimds.wire import ROUTER_INTERFACE_OWNERS

COMPUTE_PREFIX = "compute:"

LIST_SPEC = ListSpec(
    model=Port,
    columns={
        "id": Port.id, "name": Port.name, "network_id": Port.network_id,
        "tenant_id": Port.project_id, "project_id": Port.project_id,
        "mac_address": Port.mac_address, "device_id": Port.device_id,
        "device_owner": Port.device_owner, "admin_state_up": Port.admin_state_up,
        "status": Port.status, "binding:host_id": Port.binding_host_id,
    },
    bool_columns=frozenset({"admin_state_up"}),
    attributes=frozenset({"description", "created_at", "updated_at"}),
)

BINDING_FIELDS = ("binding:host_id", "binding:profile", "binding:vnic_type")
CREATE_FIELDS = ("network_id", "name", "fixed_ips", "mac_address", "device_id", "device_owner",
                 "admin_state_up", "tenant_id", "project_id", "description",
                 "port_security_enabled", "allowed_address_pairs", *BINDING_FIELDS)
UPDATE_FIELDS = ("name", "fixed_ips", "mac_address", "device_id", "device_owner",
                 "admin_state_up", "description", "port_security_enabled",
                 "allowed_address_pairs", *BINDING_FIELDS)


def allowed_address_pairs(value: Any) -> list[dict[str, str]]:
    """Validate Neutron's `allowed_address_pairs`: a list of {"ip_address": IP or CIDR,
    optional "mac_address"}; normalised (CIDR of one address -> the address, MAC lower case)."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise BadRequest("Invalid input for allowed_address_pairs: expected a list of "
                         '{"ip_address": ..., "mac_address": ...}', type="InvalidInput")
    out: list[dict[str, str]] = []
    for entry in value:
        if not isinstance(entry, dict) or "ip_address" not in entry or \
                not set(entry) <= {"ip_address", "mac_address"}:
            raise BadRequest("Invalid input for allowed_address_pairs: each entry is "
                             '{"ip_address": ..., "mac_address": ...} with ip_address required',
                             type="InvalidInput")
        ip = entry["ip_address"]
        try:
            net = ipaddress.ip_network(ip, strict=False) if isinstance(ip, str) else None
        except ValueError:
            net = None
        if net is None:
            raise BadRequest(f"Invalid input for allowed_address_pairs: '{ip}' is not an IP "
                             "address or CIDR", type="InvalidInput")
        pair = {"ip_address": str(net.network_address) if net.num_addresses == 1 else str(net)}
        if entry.get("mac_address") is not None:
            mac = entry["mac_address"]
            try:
                pair["mac_address"] = normalize_mac(mac if isinstance(mac, str) else "")
            except InvalidValue:
                raise BadRequest(f"Invalid input for allowed_address_pairs: '{mac}' is not a "
                                 "MAC address", type="InvalidInput") from None
        if pair in out:
            raise BadRequest(f"Duplicate address pair {pair} in allowed_address_pairs",
                             type="InvalidInput")
        out.append(pair)
    return out


def _check_pairs_need_security(enabled: bool, pairs: list[dict[str, str]]) -> None:
    if pairs and not enabled:
        raise Conflict("Port Security must be enabled in order to have allowed address pairs "
                       "on a port.", type="AddressPairAndPortSecurityRequired")


def parse_binding(obj: Mapping[str, Any], ctx: RequestContext) -> dict[str, Any]:
    """The binding attributes of a port body as model columns (admin or service role only,
    as Neutron's policy has it); {} when the body names none."""
    if not any(k in obj for k in BINDING_FIELDS):
        return {}
    vnic = obj.get("binding:vnic_type", "normal")
    if vnic != "normal":
        raise BadRequest(f"Invalid input for binding:vnic_type: '{vnic}' is not supported "
                         "(openimds binds ports to Linux bridges: normal only).",
                         type="InvalidInput")
    out: dict[str, Any] = {}
    if ("binding:host_id" in obj or "binding:profile" in obj) and not ctx.reads_all:
        raise Forbidden("Only an admin or a service user may set binding:host_id or "
                        "binding:profile.")
    if "binding:host_id" in obj:
        out["binding_host_id"] = get_str(obj, "binding:host_id", nullable=True)
    if "binding:profile" in obj:
        profile = obj["binding:profile"]
        if profile is None:
            profile = {}
        if not isinstance(profile, dict):
            raise BadRequest("Invalid input for binding:profile: expected an object",
                             type="InvalidInput")
        out["binding_profile"] = profile
    return out


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
                      router: bool = False, mac: str | None = None) -> list[tuple[Subnet, str]]:
    """Turn a Neutron `fixed_ips` request into (subnet, address) pairs, allocating where only a
    subnet is named. None = Neutron's default: one address per IP version, from the first
    subnet of that version with a free one. `mac` is the port's: an auto-address IPv6 subnet
    (SLAAC) gives the EUI-64 address it encodes (ipam.eui64_address)."""
    subnets = _subnets_of(session, network_id)
    out: list[tuple[Subnet, str]] = []
    if requested is None:
        for version in (4, 6):
            of_version = [s for s in subnets if s.ip_version == version]
            for subnet in of_version:
                try:
                    out.append((subnet, ipam.allocate_ip(session, subnet, mac,
                                                         router=router)))
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
        if ip is None and mac and not router and ipam.is_auto_address(
                subnet.ip_version, subnet.ipv6_address_mode):
            addr = ipam.reserve_ip(session, subnet, ipam.eui64_address(subnet.cidr, mac))
        elif ip is None:
            # Addresses picked earlier in this same request are not in the table yet.
            used = ipam.used_addresses(session, subnet.id) | {a for s, a in taken
                                                              if s == subnet.id}
            free = ipam.free_address(ipam.parse_pools(subnet.allocation_pools or []), used,
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
    router = device_owner in ROUTER_INTERFACE_OWNERS
    mac = normalize_mac(mac) if mac else random_mac(session, network.id)
    pairs = resolve_fixed_ips(session, network.id, fixed_ips, router=router, mac=mac)
    port = Port(network_id=network.id, project_id=project_id, name=name, mac_address=mac,
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
        return Reply(200, list_collection(
            call, s, stmt, model=Port, order=(Port.created_at, Port.id),
            serialize=lambda p: port_dict(p, binding=call.context.reads_all),
            filters=filters, collection="ports", path="/v2.0/ports", kind="Port"))


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
        return Reply(200, {"port": select_fields([port_dict(port, binding=call.context.reads_all)],
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
    security = get_bool(obj, "port_security_enabled", True)
    pairs = allowed_address_pairs(obj.get("allowed_address_pairs"))
    _check_pairs_need_security(security, pairs)
    _check_owner_allowed(ctx, device_owner)
    binding = parse_binding(obj, ctx)

    def write() -> Reply:
        with call.store.session() as s:
            network = get_visible(s, Network, network_id, ctx, "Network",
                                  shared=shared_network())
            project_id = owner_project(s, ctx, obj)
            check_instance_binding(s, ctx, project_id, device_id, device_owner)
            port = build_port(s, network, project_id, fixed_ips=fixed, name=name,
                              device_id=device_id, device_owner=device_owner, mac=mac,
                              admin_state_up=admin_up)
            port.port_security_enabled = security
            port.allowed_address_pairs = pairs
            for column, value in binding.items():
                setattr(port, column, value)
            port.description = description
            s.flush()
            return Reply(201, {"port": port_dict(port, binding=ctx.reads_all)})

    return retry_on_race(write)


def _check_owner_allowed(ctx: RequestContext, device_owner: str) -> None:
    # Network-owned ports are the control plane's to make (as Neutron's policy says).
    if device_owner.startswith("network:") and not ctx.is_admin:
        raise Forbidden(f"Only an admin may create or change ports owned by {device_owner}; "
                        "use add_router_interface for router ports.")


def check_instance_binding(session: Session, ctx: RequestContext, project_id: str,
                           device_id: str, device_owner: str) -> None:
    """A `compute:` port may name an instance as its device only within that instance's
    project (admins excepted).

    Otherwise a member could bind a port of its own network to another tenant's server and
    inject links, routes and DNS servers into that server's network_data.json. A device id
    that names no instance is allowed (Neutron does not know Nova's servers either); the
    metadata API shows only ports of the instance's own project in any case.
    """
    if ctx.is_admin or not device_id or not device_owner.startswith(COMPUTE_PREFIX):
        return
    owner = session.scalar(select(Instance.project_id).where(Instance.uuid == device_id))
    if owner is not None and owner != project_id:
        # Neutron's wording and type for a device id of another tenant (409).
        raise Conflict(f"The following device_id {device_id} is not owned by your tenant: a "
                       "port can be bound to an instance only within the instance's project.",
                       type="DeviceIDNotOwnedByTenant")


def update_port(call: Call) -> Reply:
    obj = resource_body(call.body, "port", UPDATE_FIELDS)
    ctx = call.context
    binding = parse_binding(obj, ctx)
    with call.store.session() as s:
        # The service role binds ports (Nova's and the agents' part) without owning them.
        port = get_visible(s, Port, call.params["id"], ctx, "Port",
                           write=not (binding and ctx.reads_all))
        for column, value in binding.items():
            setattr(port, column, value)
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
        if "device_id" in obj or "device_owner" in obj:
            check_instance_binding(s, ctx, port.project_id, port.device_id, port.device_owner)
        if "port_security_enabled" in obj:
            port.port_security_enabled = get_bool(obj, "port_security_enabled", True)
        if "allowed_address_pairs" in obj:
            port.allowed_address_pairs = allowed_address_pairs(obj["allowed_address_pairs"])
        _check_pairs_need_security(port.port_security_enabled, port.allowed_address_pairs)
        if "fixed_ips" in obj:
            requested = get_list(obj, "fixed_ips")
            # Free the old addresses first so re-requesting one of them is not a clash.
            port.fixed_ips.clear()
            s.flush()
            pairs = resolve_fixed_ips(s, port.network_id, requested,
                                      router=port.device_owner in ROUTER_INTERFACE_OWNERS,
                                      mac=port.mac_address)
            port.fixed_ips = [FixedIP(subnet_id=sub.id, network_id=port.network_id,
                                      ip_address=a) for sub, a in pairs]
        s.flush()
        return Reply(200, {"port": port_dict(port, binding=ctx.reads_all)})


def delete_port(call: Call) -> Reply:
    with call.store.session() as s:
        port = get_visible(s, Port, call.params["id"], call.context, "Port", write=True)
        if port.device_owner in ROUTER_INTERFACE_OWNERS:
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
