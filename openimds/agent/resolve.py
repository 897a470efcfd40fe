"""Which instance is asking: a pure function of the proxy's headers and the port index.

    resolve(AgentRequest, PortIndex) -> Resolution      or raises an errors.AgentError

Rules (spec 1.6, with the re-implementation choices of spec 7):

* Exactly one of `X-Neutron-Network-ID` / `X-Neutron-Router-ID`, sent once; else 400.
* The guest address is the LAST `X-Forwarded-For` hop: our haproxy appends it after anything the
  guest sent (`option forwardfor` does not strip), so earlier hops are the guest's and never
  trusted. `::ffff:a.b.c.d` (haproxy bound on `::`) becomes `a.b.c.d`; an IPv6 link-local
  address is looked up by the MAC its EUI-64 interface id encodes.
* Router -> its interface networks; none -> 404 (never a search of all networks).
* Exactly one port with that address on those networks, and it must be an instance's port
  (device_owner compute:* / baremetal:*); 0, >1 or a DHCP/router port -> 404.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import NamedTuple

from openimds.agent.errors import (
    AmbiguousAddress,
    BadAddress,
    ConflictingIds,
    MissingId,
    NoPort,
    NotAnInstance,
    RouterWithoutNetworks,
)
from openimds.agent.index import PortEntry, PortIndex
from openimds.wire import FORWARDED_FOR, NETWORK_ID, ROUTER_ID

__all__ = [
    "FORWARDED_FOR",
    "NETWORK_ID",
    "ROUTER_ID",
    "AgentRequest",
    "Resolution",
    "guest_address",
    "mac_from_link_local",
    "resolve",
]


IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_LINK_LOCAL = ipaddress.ip_network("fe80::/10")


# Built per request on the hot path: a NamedTuple is as immutable as a frozen dataclass and
# about four times cheaper to construct.
class AgentRequest(NamedTuple):
    """The identity headers exactly as received, every value of each, in order."""

    forwarded_for: Sequence[str] = ()
    network_ids: Sequence[str] = ()
    router_ids: Sequence[str] = ()


class Resolution(NamedTuple):
    instance_id: str
    project_id: str
    address: str  # normalised guest address (sent upstream as X-Forwarded-For)
    port_id: str
    network_id: str


def guest_address(forwarded_for: Sequence[str]) -> IpAddress:
    """The last hop of all `X-Forwarded-For` values, IPv4-mapped IPv6 unwrapped."""
    hops = [h.strip() for value in forwarded_for for h in value.split(",")]
    hops = [h for h in hops if h]
    if not hops:
        raise BadAddress("Missing X-Forwarded-For: the request did not come through the "
                         "metadata proxy.")
    last = hops[-1]
    try:
        addr = ipaddress.ip_address(last.split("%", 1)[0])
    except ValueError:
        raise BadAddress(f"X-Forwarded-For hop {last!r} is not an IP address.") from None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def mac_from_link_local(addr: ipaddress.IPv6Address) -> str:
    """The MAC a modified EUI-64 interface id encodes (flip the U/L bit, drop the middle
    ff:fe bytes), as Neutron does: fe80::5054:ff:fede:5bbf -> 52:54:00:de:5b:bf."""
    iid = addr.packed[8:]
    octets = (iid[0] ^ 0x02, iid[1], iid[2], iid[5], iid[6], iid[7])
    return ":".join(f"{o:02x}" for o in octets)


def _where(request_ids: tuple[str, str]) -> str:
    kind, ident = request_ids
    return f"{kind} {ident}"


def resolve(req: AgentRequest, index: PortIndex) -> Resolution:
    networks_hdr = [v.strip() for v in req.network_ids if v.strip()]
    routers_hdr = [v.strip() for v in req.router_ids if v.strip()]
    if networks_hdr and routers_hdr:
        raise ConflictingIds(
            f"Both network {networks_hdr[0]} and router {routers_hdr[0]} defined.")
    if len(networks_hdr) > 1 or len(routers_hdr) > 1:
        raise ConflictingIds("X-Neutron-Network-ID / X-Neutron-Router-ID sent more than once.")
    if not networks_hdr and not routers_hdr:
        raise MissingId("Neither X-Neutron-Network-ID nor X-Neutron-Router-ID is set: the "
                        "request did not come through the metadata proxy.")

    addr = guest_address(req.forwarded_for)

    if networks_hdr:
        where = ("network", networks_hdr[0])
        networks: tuple[str, ...] = (networks_hdr[0],)
    else:
        router_id = routers_hdr[0]
        where = ("router", router_id)
        networks = index.router_networks(router_id)
        if not networks:
            known = "has no interfaces" if index.has_router(router_id) else "is unknown"
            raise RouterWithoutNetworks(
                f"Instance was not found on router {router_id}.",
                log_detail=f"router {router_id} {known}; not searching other networks")

    link_local = isinstance(addr, ipaddress.IPv6Address) and addr in _LINK_LOCAL
    found: dict[str, PortEntry] = {}
    for network_id in networks:
        if link_local:
            assert isinstance(addr, ipaddress.IPv6Address)
            ports = index.ports_with_mac(network_id, mac_from_link_local(addr))
        else:
            ports = index.ports_with_ip(network_id, str(addr))
        for port in ports:
            found[port.id] = port

    not_found = f"Instance was not found on {_where(where)}."
    if not found:
        raise NoPort(not_found,
                     log_detail=f"no port in network(s) {', '.join(networks)} with "
                     f"{'MAC for ' if link_local else ''}address {addr}")
    if len(found) > 1:
        ids = tuple(sorted(found))
        raise AmbiguousAddress(
            not_found, ids,
            log_detail=f"address {addr} on {_where(where)} matches {len(ids)} ports "
            f"({', '.join(ids)}); fix the inventory so one port holds it")
    (port,) = found.values()
    if not port.is_instance_port:
        raise NotAnInstance(
            not_found,
            log_detail=f"address {addr} on {_where(where)} is port {port.id} owned by "
            f"{port.device_owner or 'nobody'} ({port.device_id or 'no device'}), not an instance")
    return Resolution(instance_id=port.device_id, project_id=port.project_id,
                      address=str(addr), port_id=port.id, network_id=port.network_id)
