"""Input values for the DHCP plan, declared by their consumer (this package).

The DHCP agent gets Neutron-shaped JSON from the control-plane API (`{"networks": [...]}`,
`{"subnets": [...]}`, `{"ports": [...]}`); `networks_from_neutron` turns it into these frozen
values so that `plan.desired_dhcp_state` never sees a dict, a client or a clock.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from openimds.metadata_retirement import retiring_until

__all__ = [
    "NetworkInfo",
    "PortInfo",
    "SubnetInfo",
    "network_from_neutron",
    "networks_from_neutron",
    "parse_timestamp",
    "port_from_neutron",
    "subnet_from_neutron",
]

@dataclass(frozen=True)
class SubnetInfo:
    id: str
    cidr: str
    ip_version: int
    gateway_ip: str | None
    enable_dhcp: bool
    host_routes: tuple[tuple[str, str], ...] = ()  # (destination, nexthop)
    dns_nameservers: tuple[str, ...] = ()
    allocation_pools: tuple[tuple[str, str], ...] = ()  # (start, end)
    ipv6_address_mode: str | None = None  # None | slaac | dhcpv6-stateful | dhcpv6-stateless
    # Set: OpenStack sends the router advertisements (None: an external router does).
    ipv6_ra_mode: str | None = None


@dataclass(frozen=True)
class PortInfo:
    id: str
    mac_address: str
    fixed_ips: tuple[tuple[str, str], ...]  # (subnet_id, ip_address)
    device_owner: str
    device_id: str
    created_at: datetime
    # A distributed metadata port retiring after a switch back to network_node
    # (openimds.metadata_retirement): no longer the network's metadata route.
    retiring: bool = False


@dataclass(frozen=True)
class NetworkInfo:
    id: str
    name: str
    project_id: str
    mtu: int
    subnets: tuple[SubnetInfo, ...]
    ports: tuple[PortInfo, ...]


def parse_timestamp(value: str | None) -> datetime:
    """Neutron's `created_at` ("2026-01-02T03:04:05Z", or without zone = UTC) as an aware datetime.

    A missing timestamp becomes the epoch: the lease-window rule then treats the port as old,
    which is the safe side (no lingering proxy based on a made-up date).
    """
    if not value:
        return datetime(1970, 1, 1, tzinfo=UTC)
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def subnet_from_neutron(d: Mapping[str, Any]) -> SubnetInfo:
    return SubnetInfo(
        id=d["id"],
        cidr=d["cidr"],
        ip_version=int(d.get("ip_version", 4)),
        gateway_ip=d.get("gateway_ip") or None,
        enable_dhcp=bool(d.get("enable_dhcp", True)),
        host_routes=tuple((r["destination"], r["nexthop"]) for r in d.get("host_routes") or ()),
        dns_nameservers=tuple(d.get("dns_nameservers") or ()),
        allocation_pools=tuple((p["start"], p["end"]) for p in d.get("allocation_pools") or ()),
        ipv6_address_mode=d.get("ipv6_address_mode") or None,
        ipv6_ra_mode=d.get("ipv6_ra_mode") or None,
    )


def port_from_neutron(d: Mapping[str, Any]) -> PortInfo:
    return PortInfo(
        id=d["id"],
        mac_address=d["mac_address"].lower(),
        fixed_ips=tuple((f["subnet_id"], f["ip_address"]) for f in d.get("fixed_ips") or ()),
        device_owner=d.get("device_owner") or "",
        device_id=d.get("device_id") or "",
        created_at=parse_timestamp(d.get("created_at")),
        retiring=retiring_until(d.get("binding:profile")) is not None,
    )


def network_from_neutron(
    network: Mapping[str, Any],
    subnets: Iterable[Mapping[str, Any]],
    ports: Iterable[Mapping[str, Any]],
) -> NetworkInfo:
    """One network from its Neutron dict plus the subnet and port dicts (other networks' ignored).

    Subnet order follows the network's own `subnets` id list when present (that is Neutron's
    order, and opts tags and on-link routes depend on it); unknown ids are skipped.
    """
    net_id = network["id"]
    mine = [s for s in subnets if s.get("network_id", net_id) == net_id]
    order = list(network.get("subnets") or ())
    if order:
        rank = {sid: i for i, sid in enumerate(order)}
        mine = sorted(mine, key=lambda s: rank.get(s["id"], len(rank)))
    return NetworkInfo(
        id=net_id,
        name=network.get("name") or "",
        project_id=network.get("project_id") or network.get("tenant_id") or "",
        mtu=int(network.get("mtu") or 1500),
        subnets=tuple(subnet_from_neutron(s) for s in mine),
        ports=tuple(port_from_neutron(p) for p in ports if p.get("network_id") == net_id),
    )


def networks_from_neutron(
    networks: Mapping[str, Any] | Iterable[Mapping[str, Any]],
    subnets: Mapping[str, Any] | Iterable[Mapping[str, Any]],
    ports: Mapping[str, Any] | Iterable[Mapping[str, Any]],
) -> dict[str, NetworkInfo]:
    """All networks by id; accepts either the API bodies (`{"networks": [...]}`) or the lists."""
    net_list = _unwrap(networks, "networks")
    # Grouped by network once: filtering every list per network is networks x rows.
    anywhere = []  # a subnet that names no network counts for each (network_from_neutron)
    subnets_of: dict[str, list[Mapping[str, Any]]] = {}
    for sub in _unwrap(subnets, "subnets"):
        if "network_id" in sub:
            subnets_of.setdefault(sub["network_id"], []).append(sub)
        else:
            anywhere.append(sub)
    ports_of: dict[str, list[Mapping[str, Any]]] = {}
    for port in _unwrap(ports, "ports"):
        ports_of.setdefault(port.get("network_id"), []).append(port)  # type: ignore[arg-type]
    out = {}
    for n in net_list:
        mine = subnets_of.get(n["id"], [])
        if anywhere:  # keep the listing's order among them
            mine = [s for s in _unwrap(subnets, "subnets")
                    if s.get("network_id", n["id"]) == n["id"]]
        out[n["id"]] = network_from_neutron(n, mine, ports_of.get(n["id"], ()))
    return out


def _unwrap(
    body: Mapping[str, Any] | Iterable[Mapping[str, Any]], key: str
) -> list[Mapping[str, Any]]:
    if isinstance(body, Mapping):
        return list(body.get(key) or ())
    return list(body)
