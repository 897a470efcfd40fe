"""`/v2.0/subnets`, and the network's DHCP port that follows its DHCP-enabled subnets.

One DHCP port per network (device_owner ``network:dhcp``, device_id ``dhcp-<network id>``)
holds one address on every subnet with enable_dhcp, allocated like any other port: the first
free pool address. Neutron with several DHCP agents makes one port per agent (seed 2's .2/.3/.4);
openimds runs one DHCP service per network, so there is one port.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from openimds.control import ipam
from openimds.control.call import (
    Call,
    Reply,
    check_ip,
    get_bool,
    get_list,
    get_str,
    resource_body,
)
from openimds.control.context import scoped
from openimds.control.dhcp_scheduling import wanted_dhcp_hosts
from openimds.control.distributed_metadata import sync_metadata_port
from openimds.control.errors import BadRequest, Conflict
from openimds.control.metadata_vip import sync_metadata_vip_port
from openimds.control.ports import build_port, shared_network
from openimds.control.resources import (
    ListSpec,
    get_visible,
    list_collection,
    owner_project,
    parse_filters,
    retry_on_race,
)
from openimds.control.serializers import select_fields, subnet_dict
from openimds.inventory.models import FixedIP, Network, Port, Subnet
from openimds.wire import (
    DHCP_OWNER,
    DISTRIBUTED_OWNER,
    METADATA_OWNER,
    ROUTER_INTERFACE_OWNERS,
    dhcp_device_id,
    unscheduled_dhcp_device_id,
)

LIST_SPEC = ListSpec(
    model=Subnet,
    columns={
        "id": Subnet.id, "name": Subnet.name, "network_id": Subnet.network_id,
        "tenant_id": Subnet.project_id, "project_id": Subnet.project_id,
        "cidr": Subnet.cidr, "gateway_ip": Subnet.gateway_ip,
        "enable_dhcp": Subnet.enable_dhcp,
        "ipv6_ra_mode": Subnet.ipv6_ra_mode, "ipv6_address_mode": Subnet.ipv6_address_mode,
    },
    bool_columns=frozenset({"enable_dhcp"}),
    attributes=frozenset({"ip_version", "description", "created_at", "updated_at",
                          "subnetpool_id", "dns_nameservers"}),
)

CREATE_FIELDS = ("network_id", "cidr", "ip_version", "name", "gateway_ip", "enable_dhcp",
                 "allocation_pools", "host_routes", "dns_nameservers", "ipv6_ra_mode",
                 "ipv6_address_mode", "tenant_id", "project_id", "description")
UPDATE_FIELDS = ("name", "gateway_ip", "enable_dhcp", "allocation_pools", "host_routes",
                 "dns_nameservers", "description")
# Ports the network keeps for itself: they let go of a deleted subnet's address on their own.
NETWORK_OWNED = (DHCP_OWNER, DISTRIBUTED_OWNER, METADATA_OWNER)
IPV6_MODES = (None, "slaac", "dhcpv6-stateful", "dhcpv6-stateless")


def sync_dhcp_port(session: Session, network: Network,
                   hosts: Sequence[str] | None = None) -> None:
    """Make the network's DHCP ports hold one address on each DHCP-enabled subnet (and exist
    only while there is one). Idempotent: existing addresses are kept.

    `hosts` None: one unbound port `dhcp-<network>` (round 1). Otherwise one port per host,
    Neutron's `dhcp<uuid5(host)>-<network>` bound to that host (control/dhcp_scheduling.py);
    ports of hosts no longer wanted go.
    """
    session.flush()
    wanted = list(session.scalars(
        select(Subnet).where(Subnet.network_id == network.id, Subnet.enable_dhcp.is_(True))
        .order_by(Subnet.created_at, Subnet.id)))
    ports = list(session.scalars(select(Port).where(Port.network_id == network.id,
                                                    Port.device_owner == DHCP_OWNER)
                                 .order_by(Port.created_at, Port.id)))
    if not wanted:
        for port in ports:
            session.delete(port)
        session.flush()
        sync_metadata_vip_port(session, network)
        return
    if hosts is None:
        targets = {unscheduled_dhcp_device_id(network.id): ""}
        if ports and not any(p.device_id in targets for p in ports):
            targets = {ports[0].device_id: ports[0].binding_host_id}  # keep round 1's port
    else:
        targets = {dhcp_device_id(h, network.id): h for h in hosts}
    for stale in ports:
        if stale.device_id not in targets:
            session.delete(stale)
    session.flush()
    by_device = {p.device_id: p for p in ports if p.device_id in targets}
    for device_id, host in targets.items():
        existing = by_device.get(device_id)
        if existing is not None:
            _sync_addresses(session, network, existing, wanted)
            continue
        created = build_port(session, network, network.project_id,
                             fixed_ips=[{"subnet_id": s.id} for s in wanted],
                             device_id=device_id, device_owner=DHCP_OWNER)
        created.binding_host_id = host
        session.flush()
    # The metadata next hop follows the DHCP ports (control/metadata_vip.py).
    sync_metadata_vip_port(session, network)


def _sync_addresses(session: Session, network: Network, port: Port,
                    wanted: Sequence[Subnet]) -> None:
    wanted_ids = {s.id for s in wanted}
    for fip in list(port.fixed_ips):
        if fip.subnet_id not in wanted_ids:
            port.fixed_ips.remove(fip)
    session.flush()
    have = {f.subnet_id for f in port.fixed_ips}
    for subnet in wanted:
        if subnet.id not in have:
            port.fixed_ips.append(FixedIP(subnet_id=subnet.id, network_id=network.id,
                                          ip_address=ipam.allocate_ip(session, subnet,
                                                                     port.mac_address)))
            session.flush()


def _routes(value: list[Any]) -> list[dict[str, str]]:
    out = []
    for route in value:
        if not isinstance(route, dict) or set(route) != {"destination", "nexthop"}:
            raise BadRequest('Invalid input for host_routes: each entry is {"destination": '
                             'CIDR, "nexthop": IP}', type="InvalidInput")
        dest = route["destination"]
        try:
            net = ipaddress.ip_network(dest, strict=True) if isinstance(dest, str) else None
        except ValueError:
            net = None
        if net is None:
            raise BadRequest(f"Invalid input for host_routes: '{dest}' is not a valid CIDR",
                             type="InvalidInput")
        out.append({"destination": str(net), "nexthop": check_ip(route["nexthop"],
                                                                  "host_routes nexthop")})
    return out


def _nameservers(value: list[Any]) -> list[str]:
    out = [check_ip(v, "dns_nameservers") for v in value]
    if len(set(out)) != len(out):
        raise BadRequest("Duplicate nameserver in dns_nameservers", type="InvalidInput")
    return out


def _pools(value: list[Any]) -> list[dict[str, str]]:
    out = []
    for pool in value:
        if not isinstance(pool, dict) or set(pool) != {"start", "end"}:
            raise BadRequest('Invalid input for allocation_pools: each entry is {"start": IP, '
                             '"end": IP}', type="InvalidInput")
        out.append({"start": check_ip(pool["start"], "allocation_pools start"),
                    "end": check_ip(pool["end"], "allocation_pools end")})
    return out


def _gateway(value: Any, net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> str | None:
    if value is None:
        return None
    addr = ipaddress.ip_address(check_ip(value, "gateway_ip"))
    if addr not in net:
        raise BadRequest(f"Gateway IP {addr} is not inside subnet {net}.", type="InvalidInput")
    if net.prefixlen < net.max_prefixlen - 1 and (
        addr == net.network_address or (net.version == 4 and addr == net.broadcast_address)
    ):
        raise BadRequest(f"Gateway IP {addr} is the network or broadcast address of {net}.",
                         type="InvalidInput")
    return str(addr)


def _parse_cidr(obj: dict[str, Any]) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    cidr = get_str(obj, "cidr", max_len=64)
    try:
        net = ipaddress.ip_network(cidr.strip(), strict=True)
    except ValueError:
        try:
            loose = ipaddress.ip_network(cidr.strip(), strict=False)
        except ValueError:
            raise BadRequest(f"Invalid input for cidr: '{cidr}' is not a valid CIDR",
                             type="InvalidInput") from None
        raise BadRequest(f"Invalid input for cidr: '{cidr}' isn't a recommended CIDR; did you "
                         f"mean {loose}?", type="InvalidInput") from None
    version = obj.get("ip_version", net.version)
    if version not in (4, 6) or isinstance(version, bool):
        raise BadRequest(f"Invalid input for ip_version: '{version}' is not 4 or 6",
                         type="InvalidInput")
    if version != net.version:
        raise BadRequest(f"Invalid input for operation: cidr {cidr} is not an IPv{version} "
                         "network.", type="InvalidInput")
    return net


def list_subnets(call: Call) -> Reply:
    filters = parse_filters(call, LIST_SPEC)
    stmt = scoped(select(Subnet).join(Network, Subnet.network_id == Network.id), Subnet,
                  call.context, shared=shared_network())
    for cond in filters.sql.values():
        stmt = stmt.where(cond)
    with call.store.read() as s:
        return Reply(200, list_collection(
            call, s, stmt, model=Subnet, order=(Subnet.created_at, Subnet.id),
            serialize=subnet_dict, filters=filters, collection="subnets",
            path="/v2.0/subnets", kind="Subnet"))


def _visible_subnet(s: Session, call: Call, *, write: bool = False) -> Subnet:
    subnet: Subnet = get_visible(
        s, Subnet, call.params["id"], call.context, "Subnet", write=write,
        shared=None if write else Subnet.network_id.in_(
            select(Network.id).where(shared_network())))
    return subnet


def show_subnet(call: Call) -> Reply:
    with call.store.read() as s:
        subnet = _visible_subnet(s, call)
        return Reply(200, {"subnet": select_fields([subnet_dict(subnet)],
                                                   call.query_values("fields"))[0]})


def create_subnet(call: Call) -> Reply:
    obj = resource_body(call.body, "subnet", CREATE_FIELDS, required=("network_id", "cidr"))
    ctx = call.context
    network_id = get_str(obj, "network_id", max_len=64)
    net = _parse_cidr(obj)
    if "gateway_ip" in obj:
        gateway = _gateway(obj["gateway_ip"], net)
    else:
        # Neutron's default: the first address after the network address.
        gateway = str(net.network_address + 1) if net.prefixlen < net.max_prefixlen else None
    if "allocation_pools" in obj and obj["allocation_pools"] is not None:
        pools = _pools(get_list(obj, "allocation_pools"))
        ipam.check_pools(str(net), gateway, pools)
    else:
        pools = ipam.default_pools(str(net), gateway)
    routes = _routes(get_list(obj, "host_routes"))
    dns = _nameservers(get_list(obj, "dns_nameservers"))
    enable_dhcp = get_bool(obj, "enable_dhcp", True)
    name = get_str(obj, "name")
    description = get_str(obj, "description", max_len=1024)
    ra_mode = obj.get("ipv6_ra_mode")
    addr_mode = obj.get("ipv6_address_mode")
    if ra_mode not in IPV6_MODES or addr_mode not in IPV6_MODES:
        raise BadRequest("Invalid input for ipv6 modes: use slaac, dhcpv6-stateful or "
                         "dhcpv6-stateless", type="InvalidInput")
    if net.version == 4 and (ra_mode or addr_mode):
        raise BadRequest("ipv6_ra_mode and ipv6_address_mode apply to IPv6 subnets only",
                         type="InvalidInput")
    if ipam.is_auto_address(net.version, addr_mode) and net.prefixlen != 64:
        # Neutron's rule: SLAAC's EUI-64 interface id fills exactly the last 64 bits.
        raise BadRequest(f"Invalid CIDR {net} for IPv6 address mode {addr_mode}: the EUI-64 "
                         "address format requires a /64 prefix", type="InvalidInput")
    if ra_mode and addr_mode and ra_mode != addr_mode:
        raise BadRequest(f"ipv6_ra_mode {ra_mode} and ipv6_address_mode {addr_mode} differ: "
                         "set them equal, or only ipv6_address_mode when an external router "
                         "sends the advertisements", type="InvalidInput")

    def write() -> Reply:
        with call.store.session() as s:
            network = get_visible(s, Network, network_id, ctx, "Network", write=True)
            subnet = Subnet(network_id=network.id, project_id=owner_project(s, ctx, obj),
                            name=name, ip_version=net.version, cidr=str(net),
                            gateway_ip=gateway, enable_dhcp=enable_dhcp,
                            allocation_pools=pools, host_routes=routes, dns_nameservers=dns,
                            ipv6_ra_mode=ra_mode, ipv6_address_mode=addr_mode,
                            description=description)
            s.add(subnet)
            s.flush()
            sync_dhcp_port(s, network, wanted_dhcp_hosts(s, network.id, call.settings))
            sync_metadata_port(s, network, call.settings.metadata_mode,
                               lease_seconds=call.settings.dhcp_lease_duration)
            return Reply(201, {"subnet": subnet_dict(subnet)})

    return retry_on_race(write)


def update_subnet(call: Call) -> Reply:
    obj = resource_body(call.body, "subnet", UPDATE_FIELDS)

    def write() -> Reply:
        with call.store.session() as s:
            subnet = _visible_subnet(s, call, write=True)
            net = ipaddress.ip_network(subnet.cidr)
            if "name" in obj:
                subnet.name = get_str(obj, "name")
            if "description" in obj:
                subnet.description = get_str(obj, "description", max_len=1024)
            if "gateway_ip" in obj:
                new_gw = _gateway(obj["gateway_ip"], net)
                if new_gw != subnet.gateway_ip:
                    _check_gateway_change(s, subnet, new_gw)
                    subnet.gateway_ip = new_gw
            if "allocation_pools" in obj:
                subnet.allocation_pools = _pools(get_list(obj, "allocation_pools"))
            ipam.check_pools(subnet.cidr, subnet.gateway_ip, subnet.allocation_pools or [])
            if "host_routes" in obj:
                subnet.host_routes = _routes(get_list(obj, "host_routes"))
            if "dns_nameservers" in obj:
                subnet.dns_nameservers = _nameservers(get_list(obj, "dns_nameservers"))
            if "enable_dhcp" in obj:
                subnet.enable_dhcp = get_bool(obj, "enable_dhcp", True)
            s.flush()
            sync_dhcp_port(s, subnet.network,
                           wanted_dhcp_hosts(s, subnet.network_id, call.settings))
            sync_metadata_port(s, subnet.network, call.settings.metadata_mode,
                               lease_seconds=call.settings.dhcp_lease_duration)
            return Reply(200, {"subnet": subnet_dict(subnet)})

    return retry_on_race(write)


def _check_gateway_change(s: Session, subnet: Subnet, new_gw: str | None) -> None:
    router_on_old = s.scalars(
        select(Port.id).join(FixedIP).where(FixedIP.subnet_id == subnet.id,
                                            FixedIP.ip_address == subnet.gateway_ip,
                                            Port.device_owner.in_(ROUTER_INTERFACE_OWNERS))).first()
    if router_on_old is not None:
        raise Conflict(f"Gateway {subnet.gateway_ip} of subnet {subnet.id} is in use by router "
                       f"port {router_on_old}; remove the router interface first.",
                       type="GatewayIpInUse")
    if new_gw is not None:
        holder = s.scalars(select(FixedIP.port_id).where(
            FixedIP.subnet_id == subnet.id, FixedIP.ip_address == new_gw)).first()
        if holder is not None:
            raise Conflict(f"Gateway IP {new_gw} is already in use by port {holder}.",
                           type="IpAddressInUse")


def delete_subnet(call: Call) -> Reply:
    with call.store.session() as s:
        subnet = _visible_subnet(s, call, write=True)
        users = list(s.scalars(
            select(Port).join(FixedIP).where(FixedIP.subnet_id == subnet.id,
                                             Port.device_owner.not_in(NETWORK_OWNED))
            .distinct()))
        if users:
            raise Conflict(f"Unable to complete operation on subnet {subnet.id}: one or more "
                           f"ports have an IP allocation from this subnet "
                           f"({', '.join(p.id for p in users[:5])}).", type="SubnetInUse")
        network = subnet.network
        # The DHCP port lets go of its address here first; the subnet row goes after.
        subnet.enable_dhcp = False
        sync_dhcp_port(s, network, wanted_dhcp_hosts(s, network.id, call.settings))
        sync_metadata_port(s, network, call.settings.metadata_mode,
                           lease_seconds=call.settings.dhcp_lease_duration)
        s.delete(subnet)
    return Reply(204)
