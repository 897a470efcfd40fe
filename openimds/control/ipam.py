"""IP address management: default pools, pool checks and first-free allocation.

The pure helpers mirror Neutron's `ipam.utils.generate_pools`: a pool runs from the first host
after the network address to the last host before the broadcast (IPv6 has no broadcast), minus
the gateway. Allocation hands out the lowest free pool address; the gateway is never handed out
automatically, and an explicitly requested address may be anywhere in the subnet except the
network/broadcast address and (for non-router ports) the gateway.

`allocate_ip` is the store-side half: it reads the subnet's used addresses inside the caller's
write transaction. SQLite serialises writers (BEGIN IMMEDIATE), so two transactions never pick
the same address; on PostgreSQL the (subnet_id, ip_address) unique constraint catches a race and
the API retries the whole transaction (see resources.retry_on_race). Concurrent writers all see
the same lowest free address, so a retried transaction picks at random among a window of the
lowest free ones that doubles with each retry (`spread_for`), as Neutron's IPAM picks from a
window: without it, 148 of 200 server creates from 16 threads on PostgreSQL failed after four tries.

IPv6 subnets whose guests configure themselves (`ipv6_address_mode` slaac or dhcpv6-stateless)
give a port the address SLAAC will form, as Neutron does: the /64 prefix plus the modified
EUI-64 interface id of the port's MAC (`eui64_address`). Otherwise the fixed IP and the address
the guest uses would differ, and port security and the metadata agent's fixed-IP lookup would
refuse or miss it. Router interfaces keep their explicit (gateway) address.
"""

from __future__ import annotations

import ipaddress
import itertools
import random
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from openimds.control.errors import BadRequest, Conflict
from openimds.inventory.models import FixedIP, Subnet

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, order=True)
class Pool:
    """An inclusive address range as integers (ipaddress' v4|v6 unions do not type-check in
    comparisons, and integers make the arithmetic plain)."""

    start: int
    end: int
    version: int


def _text(value: int, version: int) -> str:
    return str(ipaddress.IPv4Address(value) if version == 4 else ipaddress.IPv6Address(value))


def _int(ip: str) -> int:
    return int(ipaddress.ip_address(ip))


def default_pools(cidr: str, gateway_ip: str | None) -> list[dict[str, str]]:
    """Neutron's default allocation pools for `cidr` with `gateway_ip` excluded."""
    net = ipaddress.ip_network(cidr, strict=True)
    first, last, version = int(net.network_address), int(net.broadcast_address), net.version
    if first == last:  # a /32 or /128 holds exactly one address
        return [{"start": _text(first, version), "end": _text(last, version)}]
    lo = first + 1
    hi = last - 1 if version == 4 else last
    if lo >= hi:  # /31: no room for a pool
        return []
    pools = [(lo, hi)]
    if gateway_ip:
        gw = _int(gateway_ip)
        split: list[tuple[int, int]] = []
        for start, end in pools:
            if start <= gw <= end:
                if start < gw:
                    split.append((start, gw - 1))
                if gw < end:
                    split.append((gw + 1, end))
            else:
                split.append((start, end))
        pools = split
    return [{"start": _text(s, version), "end": _text(e, version)} for s, e in pools]


def parse_pools(pools: Sequence[dict[str, str]]) -> list[Pool]:
    out = []
    for p in pools:
        start = ipaddress.ip_address(p["start"])
        out.append(Pool(int(start), _int(p["end"]), start.version))
    return out


def check_pools(cidr: str, gateway_ip: str | None, pools: Sequence[dict[str, str]]) -> None:
    """Reject pools outside the subnet, reversed, overlapping each other or holding the gateway."""
    net = ipaddress.ip_network(cidr, strict=True)
    parsed: list[Pool] = []
    for pool in pools:
        try:
            start_ip = ipaddress.ip_address(pool["start"])
            end_ip = ipaddress.ip_address(pool["end"])
        except (KeyError, TypeError, ValueError):
            raise BadRequest(f"Invalid allocation pool {pool!r}: needs start and end IP addresses",
                             type="InvalidAllocationPool") from None
        if start_ip not in net or end_ip not in net:
            raise BadRequest(f"The allocation pool {start_ip}-{end_ip} spans beyond the subnet "
                             f"cidr {net}.", type="OutOfBoundsAllocationPool")
        start, end = int(start_ip), int(end_ip)
        if start > end:
            raise BadRequest(f"The allocation pool {start_ip}-{end_ip} ends before it starts",
                             type="InvalidAllocationPool")
        if net.prefixlen < net.max_prefixlen and (
            start == int(net.network_address)
            or (net.version == 4 and end == int(net.broadcast_address))
        ):
            raise BadRequest(f"The allocation pool {start_ip}-{end_ip} includes the network or "
                             "broadcast address", type="InvalidAllocationPool")
        parsed.append(Pool(start, end, net.version))
    parsed.sort()
    for a, b in zip(parsed, parsed[1:], strict=False):
        if b.start <= a.end:
            raise BadRequest(f"Found overlapping allocation pools: "
                             f"{_text(b.start, b.version)}-{_text(b.end, b.version)}",
                             type="OverlappingAllocationPools")
    if gateway_ip:
        gw = _int(gateway_ip)
        if any(p.start <= gw <= p.end for p in parsed):
            raise BadRequest(f"Gateway ip {gateway_ip} conflicts with allocation pool",
                             type="GatewayConflictWithAllocationPools")


AUTO_ADDRESS_MODES = ("slaac", "dhcpv6-stateless")


def is_auto_address(ip_version: int, ipv6_address_mode: str | None) -> bool:
    """Guests on this subnet form their own address from router advertisements (SLAAC)."""
    return ip_version == 6 and ipv6_address_mode in AUTO_ADDRESS_MODES


def eui64_address(cidr: str, mac: str) -> str:
    """The SLAAC address of `mac` on the /64 `cidr` (RFC 4291 appendix A: the MAC split by
    ff:fe with the universal/local bit flipped), e.g. fa:16:3e:00:00:01 on 2001:db8::/64 ->
    2001:db8::f816:3eff:fe00:1."""
    net = ipaddress.IPv6Network(cidr, strict=False)
    b = bytes(int(x, 16) for x in mac.split(":"))
    if len(b) != 6:
        raise ValueError(f"not a MAC address: {mac!r}")
    iid = bytes([b[0] ^ 0x02, b[1], b[2], 0xFF, 0xFE, b[3], b[4], b[5]])
    return str(ipaddress.IPv6Address(int(net.network_address) | int.from_bytes(iid, "big")))


def candidates(pools: Iterable[Pool]) -> Iterator[str]:
    """Every pool address in order (lazily: an IPv6 /64 pool is never materialised)."""
    for pool in sorted(pools):
        for value in range(pool.start, pool.end + 1):
            yield _text(value, pool.version)


def first_free(pools: Sequence[Pool], used: set[str], gateway_ip: str | None) -> str | None:
    """The lowest pool address not in `used` and not the gateway; None when the pools are full.

    Bounded by len(used) + 2 steps: only used addresses (and the gateway) are skipped.
    """
    return pick_free(pools, used, gateway_ip)


def pick_free(pools: Sequence[Pool], used: set[str], gateway_ip: str | None, spread: int = 1,
              rng: random.Random | None = None) -> str | None:
    """One of the `spread` lowest free pool addresses, at random (`spread` 1: the lowest);
    None when the pools are full. Bounded by len(used) + spread + 1 steps."""
    skip = set(used)
    if gateway_ip:
        skip.add(str(ipaddress.ip_address(gateway_ip)))
    window = list(itertools.islice((a for a in candidates(pools) if a not in skip),
                                   max(spread, 1)))
    if not window:
        return None
    return window[0] if len(window) == 1 else (rng or random).choice(window)


def spread_for(attempt: int) -> int:
    """How many of the lowest free addresses an automatic pick chooses among on the
    `attempt`-th retry of its transaction: 1 on the first try (deterministic), then 8, 16, 32,
    ... up to 1,024, so writers that lost a race to the same address spread out."""
    return 1 if attempt <= 0 else min(4 << attempt, 1024)


# The retry count of the write transaction running in this context (resources.retry_on_race).
_race_attempt: ContextVar[int] = ContextVar("ipam_race_attempt", default=0)


@contextmanager
def race_attempt(attempt: int) -> Iterator[None]:
    """Run the enclosed transaction as its `attempt`-th retry after an address race."""
    token = _race_attempt.set(attempt)
    try:
        yield
    finally:
        _race_attempt.reset(token)


def free_address(pools: Sequence[Pool], used: set[str], gateway_ip: str | None) -> str | None:
    """The automatic pick inside a write transaction: the lowest free address, or one of a
    window of them when this transaction is a retry."""
    return pick_free(pools, used, gateway_ip, spread_for(_race_attempt.get()))


def check_requested(cidr: str, gateway_ip: str | None, ip: str, *, router: bool) -> str:
    """Normalise an explicitly requested address, or explain why it cannot be used."""
    net = ipaddress.ip_network(cidr, strict=True)
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        raise BadRequest(f"Invalid input: '{ip}' is not a valid IP address",
                         type="InvalidInput") from None
    if addr not in net:
        raise BadRequest(f"IP address {addr} is not a valid IP for the specified subnet {net}.",
                         type="InvalidIpForSubnet")
    if net.prefixlen < net.max_prefixlen - 1 and (
        addr == net.network_address or (net.version == 4 and addr == net.broadcast_address)
    ):
        raise BadRequest(f"IP address {addr} is the network or broadcast address of {net}.",
                         type="InvalidIpForSubnet")
    if gateway_ip and int(addr) == _int(gateway_ip) and not router:
        raise Conflict(f"IP address {addr} is the gateway of subnet {net}; only a router "
                       "interface may take it.", type="IpAddressInUse")
    return str(addr)


# ---- store side ---------------------------------------------------------------------------


def used_addresses(session: Session, subnet_id: str) -> set[str]:
    return set(session.scalars(select(FixedIP.ip_address).where(FixedIP.subnet_id == subnet_id)))


def allocate_ip(session: Session, subnet: Subnet, mac: str | None = None, *,
                router: bool = False) -> str:
    """The next free pool address of `subnet`, inside the caller's transaction; on an
    auto-address IPv6 subnet the EUI-64 address of `mac` (not for router interfaces)."""
    if mac and not router and is_auto_address(subnet.ip_version, subnet.ipv6_address_mode):
        return reserve_ip(session, subnet, eui64_address(subnet.cidr, mac), router=router)
    found = free_address(parse_pools(subnet.allocation_pools or []),
                         used_addresses(session, subnet.id), subnet.gateway_ip)
    if found is None:
        raise Conflict(f"No more IP addresses available for subnet {subnet.id}.",
                       type="IpAddressGenerationFailure")
    return found


def reserve_ip(session: Session, subnet: Subnet, ip: str, *, router: bool = False) -> str:
    """Check that an explicitly requested `ip` is valid and free on `subnet`."""
    addr = check_requested(subnet.cidr, subnet.gateway_ip, ip, router=router)
    taken = session.scalars(
        select(FixedIP.port_id).where(FixedIP.subnet_id == subnet.id, FixedIP.ip_address == addr)
    ).first()
    if taken is not None:
        raise Conflict(f"Unable to complete operation for network {subnet.network_id}. The IP "
                       f"address {addr} is in use.", type="IpAddressInUse")
    return addr
