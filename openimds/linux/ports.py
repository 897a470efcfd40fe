"""Is a port's link as planned? One pure check shared by the DHCP and L3 appliers.

A port (the DHCP tap of a `qdhcp-` namespace, a `qr-` device of a `qrouter-` namespace) is a
veth: `ifname` in its namespace, `tap<port[:11]>` on the network's bridge in the fabric
namespace (`linux/fabric.py`). `port_link_state` says whether that pair is intact and whether
everything `ensure_port_link` sets is as planned; `addresses_match` says whether the device
holds exactly the planned addresses, ignoring what the kernel adds by itself, by the same rule
as `addresses.sync_addresses` (so a diff never asks for a sync that would change nothing, and
never misses one that would).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from openimds.linux.fabric import bridge_name, fabric_port_name
from openimds.linux.links import veth_paired
from openimds.linux.observe import Address, Link, is_kernel_link_local, normalize_cidr

__all__ = ["PortLinkState", "addresses_match", "is_kernel_link_local", "port_link_state"]


@dataclass(frozen=True)
class PortLinkState:
    paired: bool  # both ends exist and are one veth (False: the device was or must be re-created)
    ok: bool  # paired, and bridge, MAC, MTU, master and up state all as planned


def _find(found: Iterable[Link], name: str) -> Link | None:
    return next((x for x in found if x.name == name), None)


def port_link_state(
    ns_links: Sequence[Link],
    fabric_links: Sequence[Link],
    *,
    network_id: str,
    port_id: str,
    ifname: str,
    mac: str,
    mtu: int,
) -> PortLinkState:
    """Compare the observed links with what `ensure_port_link(fabric, network_id, port_id, ns,
    ifname, mac, mtu)` makes (pure)."""
    bridge = bridge_name(network_id)
    far = _find(ns_links, ifname)
    near = _find(fabric_links, fabric_port_name(port_id))
    br = _find(fabric_links, bridge)
    paired = veth_paired(far, near)
    ok = (
        paired
        and far is not None
        and near is not None
        and br is not None
        and br.kind == "bridge"
        and br.up
        and far.mac == mac.lower()
        and far.mtu == mtu
        and far.up
        and near.master == bridge
        and near.mtu == mtu
        and near.up
    )
    return PortLinkState(paired=paired, ok=ok)


def addresses_match(found: Iterable[Address], dev: str, wanted: Iterable[str]) -> bool:
    """`dev` holds exactly `wanted` ("ip/prefix", any spelling), kernel link-locals aside."""
    have = {a.cidr for a in found if a.dev == dev and not is_kernel_link_local(a)}
    return have == {normalize_cidr(c) for c in wanted}
