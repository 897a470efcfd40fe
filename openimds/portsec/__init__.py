"""Port security: which frames a port's tap may send, as a whole nftables ruleset per bridge.

The pure computation is `rules.py`; `openimds.linux.nftables.apply_ruleset` loads its text. The
DHCP agent applies it on the one-host fabric (one table per network bridge); an agent that owns
other bridges (the l2-agent) calls the same two functions with its own namespace.
"""

from openimds.portsec.localport import LocalPort, localport_rules, localport_table
from openimds.portsec.rules import (
    AddressPair,
    PortSecurity,
    link_local_from_mac,
    port_security_from_neutron,
    port_security_rules,
    table_name,
    tap_name,
)

__all__ = [
    "AddressPair",
    "LocalPort",
    "PortSecurity",
    "link_local_from_mac",
    "localport_rules",
    "localport_table",
    "port_security_from_neutron",
    "port_security_rules",
    "table_name",
    "tap_name",
]
