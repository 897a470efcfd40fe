"""`/v2.0/extensions`: the Neutron API extensions this server implements — exactly those.

Clients probe this list before they send optional attributes (`openstack port create` asks
for `tag-ports-during-bulk-creation`, `availability zone list` for `Availability Zone`), so an
entry here is a promise: add one only with the behaviour it names.
"""

from __future__ import annotations

from typing import Any

from openimds.control.call import Call, Reply
from openimds.control.errors import NotFound

_UPDATED = "2024-01-01T00:00:00-00:00"

# (alias, name, description)
EXTENSIONS: tuple[tuple[str, str, str], ...] = (
    ("net-mtu", "Network MTU", "Provides MTU attribute for a network resource."),
    ("project-id", "project_id field enabled",
     "Extension that indicates that project_id field is enabled."),
    ("standard-attr-timestamp", "Resource timestamps",
     "Adds created_at and updated_at fields to all Neutron resources that have Neutron "
     "standard attributes."),
    ("filter-validation", "Filter parameters validation",
     "Provides validation on filter parameters."),
    ("router", "Neutron L3 Router",
     "Router abstraction for routing between subnets (interfaces only; no external "
     "gateways or floating IPs)."),
    ("standard-attr-description", "standard-attr-description",
     "Extension to add descriptions to standard attributes"),
    ("standard-attr-tag", "Tag support for resources with standard attribute: network, "
     "subnet, port, router, security_group", "Enables to set tag on resources with standard "
     "attribute."),
    ("availability_zone", "Availability Zone", "The availability zone extension (one zone, "
     "nova, for networks and routers)."),
    ("network_availability_zone", "Network Availability Zone",
     "Availability zone support for network."),
    ("security-group", "security-group", "The security groups extension (stored and listed; "
     "no traffic is filtered by them)."),
)


def _ext(alias: str, name: str, description: str) -> dict[str, Any]:
    return {"alias": alias, "name": name, "description": description, "updated": _UPDATED,
            "links": []}


# The one zone of a one-cell openimds cloud; every network and router is in it.
ZONE = "nova"


def list_availability_zones(call: Call) -> Reply:
    """`GET /v2.0/availability_zones` (filters `name`, `resource`, `state`)."""
    zones = [{"name": ZONE, "resource": r, "state": "available"} for r in ("network", "router")]
    for key in ("name", "resource", "state"):
        wanted = call.query_values(key)
        if wanted:
            zones = [z for z in zones if z[key] in wanted]
    return Reply(200, {"availability_zones": zones})


def list_extensions(call: Call) -> Reply:
    return Reply(200, {"extensions": [_ext(*e) for e in EXTENSIONS]})


def show_extension(call: Call) -> Reply:
    alias = call.params["alias"]
    for ext in EXTENSIONS:
        if ext[0] == alias:
            return Reply(200, {"extension": _ext(*ext)})
    raise NotFound(f"Extension with alias {alias} does not exist", type="ExtensionNotFound")


__all__ = ["EXTENSIONS", "ZONE", "list_availability_zones", "list_extensions",
           "show_extension"]
