"""The OpenStack vocabulary openimds shares with Neutron and Nova: device owners, the headers
of the metadata path, the metadata addresses and the instance-id signature.

One place for the names other OpenStack parts write into ports (a Neutron server, Nova, an
operator's `port create --device-owner`) and put on the wire (Neutron's proxy and agent, Nova's
metadata API), so every part of openimds reads and writes them alike. Pinned by
tests/test_wire.py: changing a value here breaks compatibility with the real peers.
"""

from __future__ import annotations

import hashlib
import hmac
import typing
import uuid

if typing.TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = [
    "DYNAMIC_JSON",
    "STATIC_JSON",
    "VENDORDATA_PROVIDERS",
    "DHCP_OWNER",
    "FORWARDED_FOR",
    "GUEST_FORWARDED_HEADER",
    "HOP_LIMIT_HEADER",
    "IDENTITY_HEADERS",
    "IDENTITY_HEADER_PREFIXES",
    "INSTANCE_ID",
    "INSTANCE_ID_SIGNATURE",
    "INTERNAL_HEADER_PREFIX",
    "METADATA_IPV4",
    "METADATA_IPV6",
    "NETWORK_ID",
    "OVN_NETWORK_ID",
    "PROVIDER",
    "PROVIDER_SIGNATURE",
    "ROUTER_ID",
    "TENANT_ID",
    "TOKEN_HEADER",
    "TTL_HEADER",
    "DISTRIBUTED_OWNER",
    "HA_OWNER",
    "INSTANCE_OWNER_PREFIXES",
    "METADATA_OWNER",
    "ROUTER_INTERFACE",
    "ROUTER_INTERFACE_OWNERS",
    "DHCP_NAMESPACE_PREFIX",
    "METADATA_NAMESPACE_PREFIX",
    "ROUTER_NAMESPACE_PREFIX",
    "bridge_device",
    "dhcp_device_id",
    "dhcp_namespace",
    "ha_device",
    "is_instance_owner",
    "is_router_interface",
    "metadata_namespace",
    "router_interface_device",
    "router_namespace",
    "serving_dhcp_device_id",
    "sign_instance_id",
    "tap_device",
    "unscheduled_dhcp_device_id",
    "verify_signature",
]

# ---- the metadata path's headers ----------------------------------------------------------
# Proxy -> agent (Neutron): which network or router the request came through, and the guest.
FORWARDED_FOR = "X-Forwarded-For"
NETWORK_ID = "X-Neutron-Network-ID"
ROUTER_ID = "X-Neutron-Router-ID"
# OVN's metadata agent's spelling of NETWORK_ID: not ours, but never let a guest send it.
OVN_NETWORK_ID = "X-OVN-Network-ID"
# Agent -> metadata API (Nova): the instance, its project, and the HMAC of the instance id.
INSTANCE_ID = "X-Instance-ID"
INSTANCE_ID_SIGNATURE = "X-Instance-ID-Signature"
TENANT_ID = "X-Tenant-ID"
# Nova's provider mode (a service, not an instance, vouches for the request).
PROVIDER = "X-Metadata-Provider"
PROVIDER_SIGNATURE = "X-Metadata-Provider-Signature"
# What a guest may never send: the proxies delete these names exactly, and every header that
# starts with one of the prefixes (Nova's provider family and any future member of it).
IDENTITY_HEADERS: tuple[str, ...] = (
    FORWARDED_FOR, INSTANCE_ID, INSTANCE_ID_SIGNATURE, TENANT_ID, NETWORK_ID, ROUTER_ID,
    OVN_NETWORK_ID,
)
IDENTITY_HEADER_PREFIXES: tuple[str, ...] = (PROVIDER,)

# AWS's IMDSv2 session token and the TTL asked for it (the token PUT).
TOKEN_HEADER = "X-aws-ec2-metadata-token"
TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
# openimds's own, between its proxy, agent and API; deleted from every guest request.
INTERNAL_HEADER_PREFIX = "X-OpenIMDS-"
# Set by the proxy when the guest sent its own X-Forwarded-For (the token PUT SSRF rule).
GUEST_FORWARDED_HEADER = f"{INTERNAL_HEADER_PREFIX}Guest-Forwarded"
# Set by the API on a token PUT's answer; the proxy turns it into the packet's hop limit.
HOP_LIMIT_HEADER = f"{INTERNAL_HEADER_PREFIX}Hop-Limit"

# ---- the metadata addresses -----------------------------------------------------------------
METADATA_IPV4 = "169.254.169.254"
METADATA_IPV6 = "fe80::a9fe:a9fe"

# ---- Nova's vendordata providers ([api] vendordata_providers) ----------------------------------
STATIC_JSON = "StaticJSON"
DYNAMIC_JSON = "DynamicJSON"
VENDORDATA_PROVIDERS = (STATIC_JSON, DYNAMIC_JSON)

# ---- device owners --------------------------------------------------------------------------

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


# ---- namespace and device names (Neutron's Linux-bridge and L3 agents', so operators' tools
# and habits carry over; a device name is at most 15 characters) -----------------------------
DHCP_NAMESPACE_PREFIX = "qdhcp-"
ROUTER_NAMESPACE_PREFIX = "qrouter-"
# A host's distributed metadata namespace (OVN names its own `ovnmeta-`).
METADATA_NAMESPACE_PREFIX = "qmeta-"
_DEVICE_ID_CHARS = 11


def dhcp_namespace(network_id: str) -> str:
    return f"{DHCP_NAMESPACE_PREFIX}{network_id}"


def router_namespace(router_id: str) -> str:
    return f"{ROUTER_NAMESPACE_PREFIX}{router_id}"


def metadata_namespace(network_id: str) -> str:
    return f"{METADATA_NAMESPACE_PREFIX}{network_id}"


def tap_device(port_id: str) -> str:
    """A port's device: `tap` + the first 11 characters of its id."""
    return f"tap{port_id[:_DEVICE_ID_CHARS]}"


def router_interface_device(port_id: str) -> str:
    """A router interface's device in its `qrouter-` namespace."""
    return f"qr-{port_id[:_DEVICE_ID_CHARS]}"


def ha_device(port_id: str) -> str:
    """An HA router's device on its HA network."""
    return f"ha-{port_id[:_DEVICE_ID_CHARS]}"


def bridge_device(network_id: str) -> str:
    """A network's bridge on a host (Linux-bridge Neutron's name)."""
    return f"brq{network_id[:_DEVICE_ID_CHARS]}"


# ---- which DHCP port is whose (Neutron's device ids) --------------------------------------------


def dhcp_device_id(host: str, network_id: str) -> str:
    """The device_id of the DHCP port the agent on `host` plugs on `network_id` (Neutron's)."""
    return f"dhcp{uuid.uuid5(uuid.NAMESPACE_DNS, host)}-{network_id}"


def unscheduled_dhcp_device_id(network_id: str) -> str:
    """The one DHCP port of a network no DHCP agent is scheduled to (openimds's round 1)."""
    return f"dhcp-{network_id}"


def serving_dhcp_device_id(host: str, network_id: str, dhcp_device_ids: Sequence[str]
                           ) -> str | None | bool:
    """Which DHCP port of a network is the agent on `host`'s: its own per-agent port
    (`dhcp_device_id`) when the network has one; None when the network has no per-agent
    port at all (no DHCP port yet, or only the unscheduled one): whichever agent there is
    serves it; False when per-agent ports exist and none is this host's."""
    mine = dhcp_device_id(host, network_id)
    if mine in dhcp_device_ids:
        return mine
    unscheduled = unscheduled_dhcp_device_id(network_id)
    if any(d.startswith("dhcp") and d != unscheduled for d in dhcp_device_ids):
        return False
    return None


# ---- the instance-id signature ----------------------------------------------------------------


def sign_instance_id(secret: str, instance_id: str) -> str:
    """Lower-case hex HMAC-SHA256 of `instance_id` keyed with `secret` (Neutron and Nova)."""
    return hmac.new(secret.encode(), instance_id.encode(), hashlib.sha256).hexdigest()


def verify_signature(secret: str, value: str, signature: str) -> bool:
    """Constant-time check of `signature` against `sign_instance_id(secret, value)`."""
    expected = sign_instance_id(secret, value)
    return hmac.compare_digest(expected.encode(), signature.encode("utf-8", "surrogateescape"))
