"""Read the actual state of a namespace as plain values (links, addresses), via `ip -j`.

Why iproute2's JSON rather than pyroute2: the `ip` binary is what operators and our tests use
to look at a namespace, its JSON output is stable across iproute2 6.x, it needs no
setns()/fork tricks inside our process, and every call goes through the one process runner
(`process.run`), which is also how the other verbs enter namespaces. The parsers are pure and
tested on captured output; only `links`/`addresses`/`observe_netns` run commands.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass
from typing import Any

from openimds.linux.process import run

__all__ = [
    "Address",
    "Link",
    "NamespaceState",
    "addresses",
    "find_link",
    "is_kernel_link_local",
    "links",
    "normalize_cidr",
    "observe_netns",
    "parse_addresses",
    "parse_links",
]


@dataclass(frozen=True)
class Link:
    name: str
    ifindex: int
    kind: str | None  # "veth", "bridge", ... (None for plain devices such as lo)
    mac: str
    mtu: int
    up: bool  # administratively up (IFF_UP), whatever the carrier
    master: str | None
    peer_ifindex: int | None  # veth: ifindex of the other end (in its own namespace)
    peer_netnsid: int | None  # veth: set when the other end lives in another namespace


@dataclass(frozen=True)
class Address:
    dev: str
    cidr: str  # normalised "ip/prefixlen"
    family: int  # 4 or 6
    scope: str
    tentative: bool  # IPv6 DAD still running: not bindable yet
    dadfailed: bool


def is_kernel_link_local(a: Address) -> bool:
    """The IPv6 link-local address the kernel gives every device (fe80::/64, scope link).
    Planned link-local addresses (fe80::a9fe:a9fe/128) are not: they are ours to keep."""
    return a.family == 6 and a.scope == "link" and a.cidr.endswith("/64")


@dataclass(frozen=True)
class NamespaceState:
    name: str
    links: tuple[Link, ...]
    addresses: tuple[Address, ...]

    def link(self, name: str) -> Link | None:
        return next((x for x in self.links if x.name == name), None)

    def addresses_on(self, dev: str) -> list[str]:
        return [a.cidr for a in self.addresses if a.dev == dev]


def normalize_cidr(cidr: str) -> str:
    """ "2001:DB8::0002/64" -> "2001:db8::2/64"; keeps host bits; a bare IP gets /32 or /128."""
    iface = ipaddress.ip_interface(cidr)
    return f"{iface.ip}/{iface.network.prefixlen}"


def _json(text: str) -> list[dict[str, Any]]:
    text = text.strip()
    return json.loads(text) if text else []


def parse_links(text: str) -> list[Link]:
    """Parse `ip -j -d link show` output."""
    out = []
    for d in _json(text):
        info = d.get("linkinfo") or {}
        out.append(
            Link(
                name=d["ifname"],
                ifindex=int(d["ifindex"]),
                kind=info.get("info_kind"),
                mac=(d.get("address") or "").lower(),
                mtu=int(d.get("mtu") or 0),
                up="UP" in (d.get("flags") or ()),
                master=d.get("master"),
                peer_ifindex=d.get("link_index"),
                peer_netnsid=d.get("link_netnsid"),
            )
        )
    return out


def parse_addresses(text: str) -> list[Address]:
    """Parse `ip -j addr show` output."""
    out = []
    for d in _json(text):
        for a in d.get("addr_info") or ():
            family = {"inet": 4, "inet6": 6}.get(a.get("family", ""))
            if family is None:
                continue
            out.append(
                Address(
                    dev=d["ifname"],
                    cidr=normalize_cidr(f"{a['local']}/{a['prefixlen']}"),
                    family=family,
                    scope=a.get("scope", ""),
                    tentative=bool(a.get("tentative")),
                    dadfailed=bool(a.get("dadfailed")),
                )
            )
    return out


def links(netns: str) -> list[Link]:
    return parse_links(run(["ip", "-n", netns, "-j", "-d", "link", "show"]).stdout)


def find_link(netns: str, name: str) -> Link | None:
    return next((x for x in links(netns) if x.name == name), None)


def addresses(netns: str, dev: str | None = None) -> list[Address]:
    argv = ["ip", "-n", netns, "-j", "addr", "show"]
    found = parse_addresses(run(argv).stdout)
    return [a for a in found if dev is None or a.dev == dev]


def observe_netns(netns: str) -> NamespaceState:
    return NamespaceState(netns, tuple(links(netns)), tuple(addresses(netns)))
