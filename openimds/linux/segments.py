"""Kernel segment devices for the l2-agent: bridges, VLAN sub-interfaces, VXLAN devices and
their flood (all-zero MAC) FDB entries, as thin idempotent verbs over `ip`/`bridge`.

Ownership is written on the device itself: every link the l2-agent creates carries the alias
`openimds-l2:<network id>` (IFLA_IFALIAS), so after a restart the agent finds exactly what it
made, and a link without that alias (the operator's eth1, someone else's bridge) is never
deleted. The parsers are pure and tested on captured `ip -j -d link` / `bridge -j fdb` output.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from openimds.linux.process import CommandFailed, run

__all__ = [
    "FLOOD_MAC",
    "OWNER_PREFIX",
    "SegmentLink",
    "add_flood_entry",
    "create_bridge",
    "create_vlan",
    "create_vxlan",
    "delete_flood_entry",
    "delete_link",
    "flood_entries",
    "observe_segment_links",
    "owner_alias",
    "parse_flood_entries",
    "parse_segment_links",
    "set_master",
    "set_nomaster",
    "set_up",
]

OWNER_PREFIX = "openimds-l2:"
FLOOD_MAC = "00:00:00:00:00:00"


def owner_alias(network_id: str) -> str:
    return f"{OWNER_PREFIX}{network_id}"


@dataclass(frozen=True)
class SegmentLink:
    name: str
    kind: str | None  # "bridge", "vlan", "vxlan", "veth", None (physical/dummy without kind)
    master: str | None
    up: bool
    mtu: int
    owner: str | None  # network id from our alias, None when not ours
    vlan_id: int | None = None
    parent: str | None = None  # VLAN: the lower device's name
    vni: int | None = None
    local_ip: str | None = None
    dstport: int | None = None


def _json(text: str) -> list[dict[str, Any]]:
    text = text.strip()
    return json.loads(text) if text else []


def parse_segment_links(text: str) -> list[SegmentLink]:
    """Parse `ip -j -d link show`."""
    out = []
    by_index = {int(d["ifindex"]): d["ifname"] for d in _json(text)}
    for d in _json(text):
        info = d.get("linkinfo") or {}
        data = info.get("info_data") or {}
        alias = d.get("ifalias") or ""
        kind = info.get("info_kind")
        parent = None
        if kind == "vlan" and d.get("link"):
            parent = d["link"]
        elif kind == "vlan" and d.get("link_index") is not None:
            parent = by_index.get(int(d["link_index"]))
        out.append(SegmentLink(
            name=d["ifname"], kind=kind, master=d.get("master"),
            up="UP" in (d.get("flags") or ()), mtu=int(d.get("mtu") or 0),
            owner=alias[len(OWNER_PREFIX):] if alias.startswith(OWNER_PREFIX) else None,
            vlan_id=int(data["id"]) if kind == "vlan" and "id" in data else None,
            parent=parent,
            vni=int(data["id"]) if kind == "vxlan" and "id" in data else None,
            local_ip=data.get("local") if kind == "vxlan" else None,
            dstport=int(data["port"]) if kind == "vxlan" and "port" in data else None,
        ))
    return out


def parse_flood_entries(text: str) -> set[str]:
    """Remote addresses of the all-zero (flood) entries in `bridge -j fdb show dev X`."""
    return {e["dst"] for e in _json(text)
            if e.get("mac") == FLOOD_MAC and e.get("dst")}


def observe_segment_links(netns: str) -> list[SegmentLink]:
    return parse_segment_links(run(["ip", "-n", netns, "-j", "-d", "link", "show"]).stdout)


def flood_entries(netns: str, dev: str) -> set[str]:
    return parse_flood_entries(
        run(["bridge", "-n", netns, "-j", "fdb", "show", "dev", dev]).stdout)


def _ip(netns: str, *args: str) -> None:
    run(["ip", "-n", netns, *args])


def _tolerate_exists(netns: str, argv: list[str]) -> None:
    try:
        run(argv)
    except CommandFailed as exc:
        if "File exists" not in exc.stderr:
            raise


def create_bridge(netns: str, name: str, network_id: str, mtu: int) -> None:
    """`brq…`: forwards at once (no STP, no forward delay), owned, up."""
    _tolerate_exists(netns, ["ip", "-n", netns, "link", "add", name, "type", "bridge",
                             "forward_delay", "0", "stp_state", "0"])
    _ip(netns, "link", "set", "dev", name, "alias", owner_alias(network_id), "mtu", str(mtu),
        "up")


def create_vlan(netns: str, name: str, parent: str, vid: int, network_id: str,
                mtu: int) -> None:
    _tolerate_exists(netns, ["ip", "-n", netns, "link", "add", "link", parent, "name", name,
                             "type", "vlan", "id", str(vid)])
    _ip(netns, "link", "set", "dev", name, "alias", owner_alias(network_id), "mtu", str(mtu))


def create_vxlan(netns: str, name: str, vni: int, local_ip: str, dstport: int,
                 network_id: str, mtu: int) -> None:
    """Kernel VXLAN with head-end replication only: no multicast group, no learning of
    remote VTEPs from the wire (the flood list comes from the registry, l2pop style)."""
    _tolerate_exists(netns, ["ip", "-n", netns, "link", "add", name, "type", "vxlan", "id",
                             str(vni), "local", local_ip, "dstport", str(dstport),
                             "nolearning"])
    _ip(netns, "link", "set", "dev", name, "alias", owner_alias(network_id), "mtu", str(mtu))


def set_master(netns: str, dev: str, bridge: str) -> None:
    _ip(netns, "link", "set", "dev", dev, "master", bridge, "up")


def set_nomaster(netns: str, dev: str) -> None:
    _ip(netns, "link", "set", "dev", dev, "nomaster")


def set_up(netns: str, dev: str) -> None:
    _ip(netns, "link", "set", "dev", dev, "up")


def delete_link(netns: str, name: str) -> None:
    try:
        _ip(netns, "link", "del", "dev", name)
    except CommandFailed as exc:
        if "Cannot find device" not in exc.stderr and "does not exist" not in exc.stderr:
            raise


def add_flood_entry(netns: str, dev: str, remote: str) -> None:
    _tolerate_exists(netns, ["bridge", "-n", netns, "fdb", "append", FLOOD_MAC, "dev", dev,
                             "dst", remote])


def delete_flood_entry(netns: str, dev: str, remote: str) -> None:
    try:
        run(["bridge", "-n", netns, "fdb", "del", FLOOD_MAC, "dev", dev, "dst", remote])
    except CommandFailed as exc:
        if "No such file" not in exc.stderr and "Cannot find" not in exc.stderr:
            raise
