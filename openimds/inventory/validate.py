"""Checks SQL cannot express, run on every flush (see store.py) so no write path skips them.

The pure helpers at the top take plain values; `validate_flush` applies them to the objects a
session is about to write, reading sibling rows where a rule needs them.
"""

from __future__ import annotations

import ipaddress
import re

from sqlalchemy import select
from sqlalchemy.orm import Session

from openimds.inventory.errors import (
    InvalidValue,
    IpAddressInUse,
    MacAddressInUse,
    NotFound,
    SubnetOverlap,
)
from openimds.inventory.models import FixedIP, Port, Subnet

_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def normalize_mac(mac: str) -> str:
    value = mac.strip().lower().replace("-", ":")
    if not _MAC.match(value):
        raise InvalidValue(f"invalid MAC address {mac!r}: expected six hex pairs like fa:16:3e:00:00:01")
    return value


def parse_cidr(cidr: str, ip_version: int | None = None) -> IpNetwork:
    try:
        net = ipaddress.ip_network(cidr.strip(), strict=True)
    except ValueError as exc:
        raise InvalidValue(f"invalid CIDR {cidr!r}: {exc}") from exc
    if ip_version is not None and net.version != ip_version:
        raise InvalidValue(f"CIDR {cidr} is not an IPv{ip_version} network")
    return net


def ip_in_network(ip: str, net: IpNetwork, what: str = "address") -> str:
    try:
        addr = ipaddress.ip_address(ip.strip())
    except ValueError as exc:
        raise InvalidValue(f"invalid IP {what} {ip!r}") from exc
    if addr not in net:
        raise InvalidValue(f"IP {what} {addr} is not inside subnet {net}")
    return str(addr)


def check_subnet_fields(subnet: Subnet) -> None:
    net = parse_cidr(subnet.cidr, subnet.ip_version)
    subnet.cidr = str(net)
    if subnet.gateway_ip:
        subnet.gateway_ip = ip_in_network(subnet.gateway_ip, net, "gateway")
    for pool in subnet.allocation_pools or []:
        start = ip_in_network(pool.get("start", ""), net, "pool start")
        end = ip_in_network(pool.get("end", ""), net, "pool end")
        # Both ends are inside `net`, hence of one IP version: comparing as ints is exact.
        if int(ipaddress.ip_address(start)) > int(ipaddress.ip_address(end)):
            raise InvalidValue(f"allocation pool {start}-{end} ends before it starts")
    for route in subnet.host_routes or []:
        try:
            ipaddress.ip_network(route.get("destination", ""), strict=False)
            ipaddress.ip_address(route.get("nexthop", ""))
        except ValueError as exc:
            raise InvalidValue(f"invalid host route {route!r}: {exc}") from exc
    for dns in subnet.dns_nameservers or []:
        try:
            ipaddress.ip_address(dns)
        except ValueError as exc:
            raise InvalidValue(f"invalid DNS nameserver {dns!r}") from exc


def _check_overlap(session: Session, subnet: Subnet) -> None:
    net = parse_cidr(subnet.cidr)
    siblings = session.scalars(
        select(Subnet).where(Subnet.network_id == subnet.network_id, Subnet.id != subnet.id)
    )
    for other in siblings:
        if other.ip_version == subnet.ip_version and parse_cidr(other.cidr).overlaps(net):
            raise SubnetOverlap(
                f"subnet {net} overlaps subnet {other.id} ({other.cidr}) on network "
                f"{subnet.network_id}"
            )


def _check_fixed_ip(session: Session, fip: FixedIP) -> None:
    subnet = session.get(Subnet, fip.subnet_id)
    if subnet is None:
        raise NotFound(f"subnet {fip.subnet_id} not found")
    fip.ip_address = ip_in_network(fip.ip_address, parse_cidr(subnet.cidr), "address")
    port_network = fip.port.network_id if fip.port is not None else None
    if port_network is not None and port_network != subnet.network_id:
        raise InvalidValue(
            f"subnet {subnet.id} is on network {subnet.network_id}, not on the port's "
            f"network {port_network}"
        )
    fip.network_id = subnet.network_id
    clash = session.scalars(
        select(FixedIP).where(
            FixedIP.subnet_id == fip.subnet_id,
            FixedIP.ip_address == fip.ip_address,
            FixedIP.id != fip.id if fip.id is not None else FixedIP.id.is_not(None),
        )
    ).first()
    if clash is not None and clash not in session.deleted and clash.port not in session.deleted:
        raise IpAddressInUse(
            f"IP address {fip.ip_address} is already in use on subnet {fip.subnet_id} "
            f"(port {clash.port_id})"
        )


def _check_port(session: Session, port: Port) -> None:
    port.mac_address = normalize_mac(port.mac_address)
    clash = session.scalars(
        select(Port).where(
            Port.network_id == port.network_id,
            Port.mac_address == port.mac_address,
            Port.id != port.id,
        )
    ).first()
    if clash is not None and clash not in session.deleted:
        raise MacAddressInUse(
            f"MAC address {port.mac_address} is already in use on network {port.network_id}"
        )


def validate_flush(session: Session) -> None:
    """Check every new or changed Subnet, Port and FixedIP in `session` before it is written."""
    with session.no_autoflush:
        pending = [o for o in list(session.new) + list(session.dirty) if o not in session.deleted]
        for obj in pending:
            if isinstance(obj, Subnet):
                check_subnet_fields(obj)
                _check_overlap(session, obj)
        for obj in pending:
            if isinstance(obj, Port):
                _check_port(session, obj)
                for fip in obj.fixed_ips:
                    _check_fixed_ip(session, fip)
            elif isinstance(obj, FixedIP) and obj.port not in pending:
                _check_fixed_ip(session, obj)
