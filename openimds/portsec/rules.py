"""Port security (Neutron's `port_security_enabled`, `allowed_address_pairs`) as one nftables
ruleset per bridge, computed from scratch from the ports alone (pure: no kernel, no clock).

    port_security_from_neutron(port dict) -> PortSecurity | None     what one port may send
    port_security_rules(table, ports) -> str                         the whole `nft -f` text

A protected port's tap only passes frames whose Ethernet source is the port's MAC (or an
allowed pair's), and of those only
* IPv4 from a fixed IP or an allowed pair (same MAC), plus DHCP DISCOVER/REQUEST from 0.0.0.0;
* ARP whose sender MAC and sender IP are such a pair (or sender IP 0.0.0.0: an ARP probe);
* IPv6 from a fixed IPv6, the MAC's own EUI-64 link-local, an allowed pair, or :: for DAD;
  a neighbour advertisement only for such an address; never a router advertisement;
* never a DHCP (v4 or v6) server's answer, so a guest cannot hand out leases.
Everything else from that tap (other MACs, other addresses, other ethertypes) is dropped. The
base chain picks a frame's port chain with one verdict-map lookup on its input interface, so the
cost per frame does not grow with the number of taps. A port
with port security off, or a network port (DHCP, router: Neutron trusts `network:*` owners),
gets no rule. The ruleset names taps by `tap<port[:11]>`, the one-host fabric's and the
Linux-bridge agent's name, so any bridge that plugs a port under that name can use it.

The text starts with `table ...` + `delete table ...`, so one `nft -f` replaces the previous
ruleset atomically (whole-state, like `iptables-restore` of owned chains, STYLE item 9).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from openimds import wire

__all__ = [
    "TRUSTED_OWNER_PREFIX",
    "AddressPair",
    "PortSecurity",
    "link_local_from_mac",
    "port_security_from_neutron",
    "port_security_rules",
    "table_name",
    "tap_name",
]

TRUSTED_OWNER_PREFIX = "network:"
TABLE_PREFIX = "openimds-ps-"


class AddressPair(NamedTuple):
    """A source the port may use: `ip` is an address or a CIDR, `mac` the MAC it comes from."""

    ip: str
    mac: str


class PortSecurity(NamedTuple):
    port_id: str
    mac: str
    pairs: tuple[AddressPair, ...]  # fixed IPs first, then allowed address pairs

    @property
    def tap(self) -> str:
        return tap_name(self.port_id)


def tap_name(port_id: str) -> str:
    return wire.tap_device(port_id)


def table_name(network_id: str) -> str:
    """One bridge-family table per network: `openimds-ps-<network[:11]>`."""
    return f"{TABLE_PREFIX}{network_id[:11]}"


def link_local_from_mac(mac: str) -> str:
    """The modified EUI-64 link-local address of a MAC (fa:16:3e:.. -> fe80::f816:3eff:fe..)."""
    b = bytes(int(x, 16) for x in mac.split(":"))
    iid = bytes([b[0] ^ 0x02, b[1], b[2], 0xFF, 0xFE, b[3], b[4], b[5]])
    return str(ipaddress.IPv6Address(b"\xfe\x80" + b"\0" * 6 + iid))


def _mac(value: Any) -> str:
    text = str(value).strip().lower()
    parts = text.split(":")
    if len(parts) != 6 or not all(len(p) == 2 and all(c in "0123456789abcdef" for c in p)
                                  for p in parts):
        raise ValueError(f"not a MAC address: {value!r}")
    return text


def port_security_from_neutron(port: Mapping[str, Any]) -> PortSecurity | None:
    """What a Neutron-shaped port may send, or None when it gets no rule (security off,
    a trusted network:* port, or no MAC). Missing fields take Neutron's defaults (on, no
    pairs). ValueError for a malformed MAC or address (the inventory validates them)."""
    if port.get("port_security_enabled", True) is False:
        return None
    if str(port.get("device_owner") or "").startswith(TRUSTED_OWNER_PREFIX):
        return None
    if not port.get("mac_address"):
        return None
    mac = _mac(port["mac_address"])
    pairs = [AddressPair(str(ipaddress.ip_address(f["ip_address"])), mac)
             for f in port.get("fixed_ips") or () if f.get("ip_address")]
    for p in port.get("allowed_address_pairs") or ():
        net = ipaddress.ip_network(str(p["ip_address"]), strict=False)
        ip = str(net.network_address) if net.num_addresses == 1 else str(net)
        pairs.append(AddressPair(ip, _mac(p.get("mac_address") or mac)))
    return PortSecurity(str(port["id"]), mac, tuple(dict.fromkeys(pairs)))


def _family(ip: str) -> int:
    return ipaddress.ip_network(ip, strict=False).version


# The target address of a neighbour solicitation/advertisement: bits 64..191 of the ICMPv6
# header (RFC 4861 4.3/4.4). nft 1.0.6 (Debian 12) has no `icmpv6 taddr` keyword, so the raw
# payload expression, whose values are 128-bit integers.
_ND_TARGET = "@th,64,128"


def _target_set(ips: Iterable[str]) -> str:
    items = []
    for ip in dict.fromkeys(ips):
        net = ipaddress.ip_network(ip, strict=False)
        lo, hi = int(net.network_address), int(net.broadcast_address)
        items.append(f"0x{lo:032x}" if lo == hi else f"0x{lo:032x}-0x{hi:032x}")
    return "{ " + ", ".join(items) + " }"


def _pair_set(pairs: Iterable[AddressPair], *, mac_twice: bool = False) -> str:
    """An anonymous set of concatenated (MAC . address) elements: a frame is checked against
    all of a port's pairs with one lookup, where a rule per pair was walked in turn (a port
    with many allowed address pairs, a Kubernetes node's, paid for every one of its frames).
    `mac_twice`: (MAC . MAC . address), for ARP's Ethernet and sender hardware addresses."""
    items = [f"{pair.mac} . {pair.mac} . {pair.ip}" if mac_twice else f"{pair.mac} . {pair.ip}"
             for pair in pairs]
    return "{ " + ", ".join(dict.fromkeys(items)) + " }"


def _port_chain(p: PortSecurity) -> list[str]:
    macs = sorted({p.mac, *(pair.mac for pair in p.pairs)})
    v4 = [pair for pair in p.pairs if _family(pair.ip) == 4]
    v6 = [pair for pair in p.pairs if _family(pair.ip) == 6]
    v6 += [AddressPair(link_local_from_mac(m), m) for m in macs]
    rules = [
        f"ether saddr != {{ {', '.join(macs)} }} drop",
        # Nobody on a tenant port answers DHCP: that is the DHCP port's job.
        "ether type ip udp sport 67 drop",
        "ether type ip6 udp sport 547 drop",
        "ether type ip6 icmpv6 type nd-router-advert drop",
    ]
    if v4:
        rules.append(f"ether type ip ether saddr . ip saddr {_pair_set(v4)} accept")
    rules.append(f"ether type ip ether saddr {p.mac} ip saddr 0.0.0.0"
                 " udp sport 68 udp dport 67 accept")
    if v4:
        rules.append("ether type arp ether saddr . arp saddr ether . arp saddr ip "
                     f"{_pair_set(v4, mac_twice=True)} accept")
    rules.append(f"ether type arp ether saddr {p.mac} arp saddr ether {p.mac}"
                 " arp saddr ip 0.0.0.0 accept")
    own6 = _target_set(pair.ip for pair in v6)
    # A neighbour advertisement (from any of its addresses) may only speak for its own.
    rules.append(f"ether type ip6 icmpv6 type nd-neighbor-advert {_ND_TARGET} != {own6} drop")
    rules.append(f"ether type ip6 ether saddr . ip6 saddr {_pair_set(v6)} accept")
    # Before an address is usable: duplicate address detection for its own addresses only,
    # router solicitation and MLD reports, all from ::.
    rules.append(f"ether type ip6 ether saddr {p.mac} ip6 saddr ::"
                 f" icmpv6 type nd-neighbor-solicit {_ND_TARGET} {own6} accept")
    rules.append(f"ether type ip6 ether saddr {p.mac} ip6 saddr ::"
                 " icmpv6 type { nd-router-solicit, mld2-listener-report } accept")
    rules.append("drop")
    return rules


def port_security_rules(network_id: str, ports: Iterable[PortSecurity]) -> str:
    """The complete `nft -f` text for a network's bridge: replaces the table atomically; with
    no protected port it only removes the table."""
    table = f"bridge {table_name(network_id)}"
    chosen: Sequence[PortSecurity] = sorted(ports, key=lambda p: p.port_id)
    lines = [f"table {table}", f"delete table {table}"]
    if not chosen:
        return "\n".join(lines) + "\n"
    lines += [f"table {table} {{", "    chain prerouting {",
              "        type filter hook prerouting priority -200; policy accept;"]
    # One verdict-map lookup per frame, keyed by the input tap: the cost is the same with one
    # port or a thousand (a rule per tap was evaluated in turn for every frame on every bridge
    # of the namespace, as each network's table hooks them all). Taps not in the map pass.
    entries = [f'"{p.tap}" : jump port-{p.tap}' for p in chosen]
    lines.append("        iifname vmap {")
    lines += [f"            {e}," for e in entries[:-1]] + [f"            {entries[-1]}"]
    lines += ["        }", "    }"]
    for p in chosen:
        lines.append(f"    chain port-{p.tap} {{")
        lines += [f"        {r}" for r in _port_chain(p)]
        lines.append("    }")
    lines.append("}")
    return "\n".join(lines) + "\n"
