"""The OpenStack vocabulary openimds shares with Neutron and Nova: device owners.

One place for the names other OpenStack parts write into ports (a Neutron server, Nova, an
operator's `port create --device-owner`), so every part of openimds reads them alike. Pinned by
tests/test_wire.py: changing a value here breaks compatibility with the real peers.
"""

from __future__ import annotations

__all__ = [
    "DHCP_OWNER",
    "DISTRIBUTED_OWNER",
    "HA_OWNER",
    "INSTANCE_OWNER_PREFIXES",
    "METADATA_OWNER",
    "ROUTER_INTERFACE",
    "ROUTER_INTERFACE_OWNERS",
    "is_instance_owner",
    "is_router_interface",
]

DHCP_OWNER = "network:dhcp"
# The distributed metadata port (issue 12): one per network, the same IP and MAC on every host.
DISTRIBUTED_OWNER = "network:distributed"
# The isolated-subnet metadata next hop of a network with several DHCP agents (issue 11 item 2):
# an address reservation whose IP keepalived moves among the network's DHCP namespaces.
METADATA_OWNER = "network:metadata"
# An HA router's port on its project's HA network, one per L3 agent (control/l3_ha.py).
HA_OWNER = "network:router_ha_interface"
# What openimds writes on a router interface it creates.
ROUTER_INTERFACE = "network:router_interface"
# Every owner Neutron gives a router's interface on a tenant subnet (the set Neutron's metadata
# agent uses to find a router's networks). A tuple, so SQL `IN` takes it as it is.
ROUTER_INTERFACE_OWNERS: tuple[str, ...] = (
    ROUTER_INTERFACE,
    "network:ha_router_replicated_interface",
    "network:router_interface_distributed",
)
# Nova binds its ports as compute:<az>; Ironic as baremetal:<az>. Anything else (DHCP, router,
# floating IP, distributed metadata port) has no instance behind its device_id.
INSTANCE_OWNER_PREFIXES: tuple[str, ...] = ("compute:", "baremetal:")


def is_router_interface(device_owner: str | None) -> bool:
    return device_owner in ROUTER_INTERFACE_OWNERS


def is_instance_owner(device_owner: str | None) -> bool:
    return bool(device_owner) and str(device_owner).startswith(INSTANCE_OWNER_PREFIXES)
