"""Addresses on a device inside a namespace: idempotent verbs over iproute2.

`ensure_address` observes first and acts only on a difference, then re-observes if the command
failed (a concurrent change is success, not an error), so no error text is parsed. IPv6
link-local metadata addresses (fe80::a9fe:a9fe) are added with `nodad`: otherwise they stay
tentative for about a second and haproxy's bind() fails with EADDRNOTAVAIL.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from openimds.linux.observe import Address, addresses, is_kernel_link_local, normalize_cidr
from openimds.linux.process import CommandFailed, run

__all__ = ["Address", "ensure_address", "list_addresses", "sync_addresses", "address_argv"]

_LINK_LOCAL6 = ipaddress.ip_network("fe80::/10")


def list_addresses(netns: str, dev: str | None = None) -> list[Address]:
    return addresses(netns, dev)


def address_argv(
    netns: str, dev: str, cidr: str, *, add: bool, nodad: bool | None = None
) -> list[str]:
    """The `ip addr add|del` argv (pure): `brd +` for IPv4 subnets, `nodad` for IPv6 link-local
    unless told otherwise."""
    iface = ipaddress.ip_interface(cidr)
    argv = ["ip", "-n", netns, "addr", "add" if add else "del", normalize_cidr(cidr)]
    if add and iface.version == 4 and iface.network.prefixlen < 31:
        argv += ["brd", "+"]
    argv += ["dev", dev]
    if add and iface.version == 6:
        if nodad is None:
            nodad = iface.ip in _LINK_LOCAL6
        if nodad:
            argv.append("nodad")
    return argv


def _present(netns: str, dev: str, cidr: str) -> bool:
    return cidr in {a.cidr for a in addresses(netns, dev)}


def ensure_address(
    netns: str, dev: str, cidr: str, present: bool = True, *, nodad: bool | None = None
) -> None:
    """Make `cidr` ("ip/prefix") present on (or absent from) `dev` in `netns`."""
    if not netns:
        raise ValueError("a namespace is required: never an address on the host namespace")
    want = normalize_cidr(cidr)
    if _present(netns, dev, want) == present:
        return
    try:
        run(address_argv(netns, dev, want, add=present, nodad=nodad))
    except CommandFailed:
        if _present(netns, dev, want) != present:
            raise


def sync_addresses(netns: str, dev: str, wanted: Iterable[str]) -> None:
    """Exactly `wanted` on `dev`, apart from kernel-made IPv6 link-local addresses."""
    want = [normalize_cidr(c) for c in wanted]
    for a in addresses(netns, dev):
        if a.cidr not in want and not is_kernel_link_local(a):
            ensure_address(netns, dev, a.cidr, present=False)
    for cidr in want:
        ensure_address(netns, dev, cidr)
