"""Localport isolation: the distributed metadata port never leaves its host (pure).

In `metadata_mode = distributed` every compute host plugs the same metadata port (one IP, one
MAC) into its `brq<network>` bridge. Like OVN's localport, its traffic must stay on the host,
or the copies on different hosts would collide in the bridges' forwarding tables and answer
each other's ARP. One nftables bridge-family table per network, hooked at `forward` (the hook
every bridged frame passes once per output port, floods included), drops on the uplink
(VXLAN, VLAN or flat device):

* any frame from or to the metadata port's MAC, leaving or arriving;
* ARP that asks for (or answers about) one of the metadata port's addresses or
  169.254.169.254, both ways, so an ARP for the metadata IP is answered only by this host's
  own namespace.

IPv4 to 169.254.169.254 is *not* dropped: a guest still holding a lease from the other mode
routes it via the DHCP port or the router on a network node (dst MAC not ours), and that path
must keep working while the modes switch (docs/distributed-metadata.md). A guest routing via
the metadata port sends to its MAC, which never crosses.

Same whole-state shape as `rules.port_security_rules`: the text starts with `table` + `delete
table`, so one `nft -f` (openimds.linux.nftables.apply_ruleset) replaces the table atomically,
and `None` only removes it.
"""

from __future__ import annotations

from typing import NamedTuple

from openimds.portsec.rules import _mac

__all__ = ["LocalPort", "localport_rules", "localport_table"]

TABLE_PREFIX = "openimds-lp-"
METADATA_IPV4 = "169.254.169.254"


class LocalPort(NamedTuple):
    mac: str
    ips: tuple[str, ...]  # the port's IPv4 addresses on the network
    uplink: str  # the bridge's uplink device on this host


def localport_table(network_id: str) -> str:
    return f"{TABLE_PREFIX}{network_id[:11]}"


def localport_rules(network_id: str, port: LocalPort | None) -> str:
    """The `nft -f` text for one network on this host (None: remove the table)."""
    table = f"bridge {localport_table(network_id)}"
    lines = [f"table {table}", f"delete table {table}"]
    if port is None:
        return "\n".join(lines) + "\n"
    mac = _mac(port.mac)
    up = port.uplink
    targets = ", ".join(sorted({*port.ips, METADATA_IPV4}))
    rules = []
    for direction in ("oifname", "iifname"):
        rules += [
            f'{direction} "{up}" ether saddr {mac} drop',
            f'{direction} "{up}" ether daddr {mac} drop',
            f'{direction} "{up}" ether type arp arp saddr ether {mac} drop',
            f'{direction} "{up}" ether type arp arp daddr ip {{ {targets} }} drop',
            f'{direction} "{up}" ether type arp arp saddr ip {{ {targets} }} drop',
        ]
    lines += [f"table {table} {{", "    chain forward {",
              "        type filter hook forward priority -200; policy accept;"]
    lines += [f"        {r}" for r in rules]
    lines += ["    }", "}"]
    return "\n".join(lines) + "\n"
