"""Bridges and veth pairs inside namespaces: idempotent verbs over iproute2.

Every verb takes a namespace name and refuses an empty one, so this module cannot touch the
host's interfaces. Veths are created from the fabric namespace with the peer placed straight
into its target namespace (`ip -n FABRIC link add A type veth peer name B netns TARGET`), so no
device ever appears in the host namespace, even briefly.
"""

from __future__ import annotations

import time

from openimds.linux.observe import Link, find_link, links
from openimds.linux.process import CommandFailed, run

__all__ = [
    "delete_link",
    "ensure_bridge",
    "ensure_veth_pair",
    "set_link",
    "veth_paired",
]


def _ns(netns: str) -> str:
    if not netns:
        raise ValueError("a namespace is required: the linux layer never touches the host's links")
    return netns


def ensure_bridge(netns: str, name: str) -> None:
    """A bridge that forwards at once (no STP, no forward delay), administratively up."""
    existing = find_link(_ns(netns), name)
    if existing is not None and existing.kind != "bridge":
        delete_link(netns, name)  # the name is ours; a non-bridge there is stale
        existing = None
    if existing is None:
        try:
            run(
                [
                    "ip",
                    "-n",
                    netns,
                    "link",
                    "add",
                    name,
                    "type",
                    "bridge",
                    "forward_delay",
                    "0",
                    "stp_state",
                    "0",
                ]
            )
        except CommandFailed:
            if find_link(netns, name) is None:
                raise
    run(["ip", "-n", netns, "link", "set", "dev", name, "up"])


def veth_paired(a: Link | None, b: Link | None) -> bool:
    """`a` and `b` are the two ends of one veth (each end's peer ifindex is the other's)."""
    return (
        a is not None
        and b is not None
        and a.kind == "veth"
        and b.kind == "veth"
        and a.peer_ifindex == b.ifindex
        and b.peer_ifindex == a.ifindex
    )


def ensure_veth_pair(
    netns: str, name: str, peer_netns: str, peer_name: str, *, timeout: float = 5.0
) -> None:
    """A veth `name` in `netns` whose other end is `peer_name` in `peer_netns`.

    The trap this handles: after a namespace is deleted its devices disappear asynchronously,
    so `name` may still exist for a moment with its peer in the dying namespace, and creating
    it again fails with EEXIST. Anything in the way that is not our exact pair (checked by the
    two ends' ifindexes pointing at each other) is deleted explicitly, which is synchronous,
    and creation is retried until `timeout`.
    """
    _ns(netns)
    _ns(peer_netns)
    deadline = time.monotonic() + timeout
    while True:
        a = find_link(netns, name)
        b = find_link(peer_netns, peer_name)
        if veth_paired(a, b):
            return
        # Deleting either end of a veth removes both, so clear each name that is in the way.
        if a is not None:
            delete_link(netns, name)
        if b is not None:
            delete_link(peer_netns, peer_name)
        try:
            run(
                [
                    "ip",
                    "-n",
                    netns,
                    "link",
                    "add",
                    name,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    peer_name,
                    "netns",
                    peer_netns,
                ]
            )
        except CommandFailed:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def set_link(
    netns: str,
    name: str,
    *,
    mac: str | None = None,
    mtu: int | None = None,
    master: str | None = None,
    up: bool = True,
) -> None:
    """Bring a link to the given settings; only what differs is changed."""
    current = find_link(_ns(netns), name)
    if current is None:
        raise LookupError(f"no link {name} in namespace {netns}")
    argv = ["ip", "-n", netns, "link", "set", "dev", name]
    if mac is not None and current.mac != mac.lower():
        argv += ["address", mac.lower()]
    if mtu is not None and current.mtu != mtu:
        argv += ["mtu", str(mtu)]
    if master is not None and current.master != master:
        argv += ["master", master]
    if current.up != up:
        argv.append("up" if up else "down")
    if len(argv) > 7:
        run(argv)


def delete_link(netns: str, name: str) -> None:
    """Delete a link; absent is success. Synchronous, unlike a namespace's deletion."""
    if find_link(_ns(netns), name) is None:
        return
    try:
        run(["ip", "-n", netns, "link", "del", "dev", name])
    except CommandFailed:
        if any(x.name == name for x in links(netns)):
            raise
