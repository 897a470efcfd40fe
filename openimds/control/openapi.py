"""The OpenAPI 3.0 document served at `/openapi.json`, derived from the route table so a new
route cannot go undocumented (tests/control/test_openapi.py also checks that)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

_STR = {"type": "string", "maxLength": 255}
_ID = {"type": "string", "maxLength": 64}
_IP = {"type": "string", "maxLength": 64, "example": "10.0.0.5"}
_BOOL = {"type": "boolean"}
_FIXED_IPS = {"type": "array", "items": {"type": "object", "additionalProperties": False,
                                         "properties": {"subnet_id": _ID, "ip_address": _IP}}}


def _wrap(key: str, props: dict[str, Any], required: Sequence[str] = ()) -> dict[str, Any]:
    inner: dict[str, Any] = {"type": "object", "properties": props, "additionalProperties": False}
    if required:
        inner["required"] = list(required)
    return {"type": "object", "required": [key], "properties": {key: inner}}


_NETWORK = {"name": _STR, "admin_state_up": _BOOL, "shared": _BOOL,
            "mtu": {"type": "integer", "minimum": 68, "maximum": 65535},
            "description": _STR}
_SUBNET_UPDATE = {
    "name": _STR, "description": _STR, "enable_dhcp": _BOOL,
    "gateway_ip": {**_IP, "nullable": True},
    "allocation_pools": {"type": "array", "items": {
        "type": "object", "required": ["start", "end"], "additionalProperties": False,
        "properties": {"start": _IP, "end": _IP}}},
    "host_routes": {"type": "array", "items": {
        "type": "object", "required": ["destination", "nexthop"], "additionalProperties": False,
        "properties": {"destination": {"type": "string", "example": "10.1.0.0/16"},
                       "nexthop": _IP}}},
    "dns_nameservers": {"type": "array", "items": _IP},
}
_PORT_UPDATE = {"name": _STR, "admin_state_up": _BOOL, "device_id": _STR, "device_owner": _STR,
                "fixed_ips": _FIXED_IPS, "mac_address": {"type": "string", "maxLength": 32},
                "description": _STR}
_ROUTER = {"name": _STR, "admin_state_up": _BOOL, "description": _STR}

_PROJECT = {"name": {"type": "string", "maxLength": 64}, "description": _STR,
            "domain_id": {"type": "string", "enum": ["default"]}, "enabled": _BOOL}
_USER = {"name": _STR, "password": _STR, "default_project_id": {**_ID, "nullable": True},
         "domain_id": {"type": "string", "enum": ["default"]}, "enabled": _BOOL,
         "email": _STR, "description": _STR}

SCHEMAS: dict[str, dict[str, Any]] = {
    "V3Auth": {"type": "object", "required": ["auth"], "properties": {"auth": {
        "type": "object", "properties": {
            "identity": {"type": "object", "properties": {
                "methods": {"type": "array", "items": {"type": "string", "enum": ["password"]}},
                "password": {"type": "object", "properties": {"user": {
                    "type": "object", "properties": {"name": _STR, "id": _ID,
                                                     "password": _STR,
                                                     "domain": {"type": "object"}}}}}}},
            "scope": {"type": "object", "properties": {"project": {
                "type": "object", "properties": {"name": _STR, "id": _ID,
                                                 "domain": {"type": "object"}}}}}}}}},
    "V2Auth": {"type": "object", "required": ["auth"], "properties": {"auth": {
        "type": "object", "properties": {
            "passwordCredentials": {"type": "object", "properties": {
                "username": _STR, "password": _STR}},
            "tenantName": _STR, "tenantId": _ID}}}},
    "NetworkCreate": _wrap("network", {**_NETWORK, "tenant_id": _ID, "project_id": _ID}),
    "NetworkUpdate": _wrap("network", _NETWORK),
    "SubnetCreate": _wrap("subnet", {
        **_SUBNET_UPDATE, "network_id": _ID,
        "cidr": {"type": "string", "maxLength": 64, "example": "10.0.0.0/24"},
        "ip_version": {"type": "integer", "enum": [4, 6]},
        "ipv6_ra_mode": {"type": "string", "nullable": True,
                         "enum": ["slaac", "dhcpv6-stateful", "dhcpv6-stateless"]},
        "ipv6_address_mode": {"type": "string", "nullable": True,
                              "enum": ["slaac", "dhcpv6-stateful", "dhcpv6-stateless"]},
        "tenant_id": _ID, "project_id": _ID}, ["network_id", "cidr"]),
    "SubnetUpdate": _wrap("subnet", _SUBNET_UPDATE),
    "PortCreate": _wrap("port", {**_PORT_UPDATE, "network_id": _ID, "tenant_id": _ID,
                                 "project_id": _ID}, ["network_id"]),
    "PortUpdate": _wrap("port", _PORT_UPDATE),
    "RouterCreate": _wrap("router", {**_ROUTER, "tenant_id": _ID, "project_id": _ID,
                                     "external_gateway_info": {"type": "object",
                                                               "nullable": True}}),
    "RouterUpdate": _wrap("router", _ROUTER),
    "RouterInterface": {"type": "object", "additionalProperties": False,
                        "properties": {"subnet_id": _ID, "port_id": _ID}},
    "ServerCreate": _wrap("server", {
        "name": _STR,
        "networks": {"oneOf": [
            {"type": "string", "enum": ["none", "auto"]},
            {"type": "array", "items": {"type": "object", "additionalProperties": False,
                                        "properties": {"uuid": _ID, "fixed_ip": _IP,
                                                       "port": _ID}}}]},
        "user_data": {"type": "string", "format": "byte",
                      "description": "base64; at most 64 KiB once decoded (else 413)"},
        "metadata": {"type": "object", "additionalProperties": {"type": "string",
                                                                "maxLength": 255}},
        "key_name": {**_STR, "nullable": True},
        "availability_zone": {**_STR, "nullable": True},
        "flavorRef": {**_STR, "description": "a flavor id or name"},
        "imageRef": {**_STR, "description": "an image id or name"},
        "security_groups": {"type": "array", "items": {"type": "object",
                                                        "properties": {"name": _STR}}},
        "description": {**_STR, "nullable": True},
        "tags": {"type": "array", "maxItems": 50, "items": {"type": "string", "minLength": 1,
                                                            "maxLength": 60,
                                                            "pattern": "^[^/,]+$"}},
    }, ["name"]),
    "FlavorCreate": _wrap("flavor", {
        "name": _STR, "id": {**_STR, "nullable": True},
        "ram": {"type": "integer", "minimum": 1}, "vcpus": {"type": "integer", "minimum": 1},
        "disk": {"type": "integer", "minimum": 0}, "swap": {"type": "integer", "minimum": 0},
        "OS-FLV-EXT-DATA:ephemeral": {"type": "integer", "minimum": 0},
        "os-flavor-access:is_public": _BOOL, "rxtx_factor": {"type": "number"},
        "description": {**_STR, "nullable": True}}, ["name", "ram", "vcpus", "disk"]),
    "ImageCreate": {"type": "object", "required": ["name"], "properties": {
        "name": _STR, "id": {"type": "string", "format": "uuid"},
        "visibility": {"type": "string", "enum": ["public", "private", "shared", "community"]},
        "disk_format": {"type": "string", "example": "qcow2"},
        "container_format": {"type": "string", "example": "bare"},
        "min_disk": {"type": "integer", "minimum": 0}, "min_ram": {"type": "integer",
                                                                   "minimum": 0},
        "protected": _BOOL}, "additionalProperties": {"type": "string"}},
    "ServerUpdate": _wrap("server", {"name": _STR, "description": {**_STR, "nullable": True}}),
    "ServerMetadata": {"type": "object", "required": ["metadata"], "properties": {
        "metadata": {"type": "object", "additionalProperties": {"type": "string",
                                                                "maxLength": 255}}}},
    "ServerMetaItem": {"type": "object", "required": ["meta"], "properties": {
        "meta": {"type": "object", "additionalProperties": {"type": "string",
                                                            "maxLength": 255}}}},
    "Tags": {"type": "object", "required": ["tags"], "properties": {
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 255}}}},
    "ServerTags": {"type": "object", "required": ["tags"], "properties": {
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 60}}}},
    "SecurityGroupCreate": _wrap("security_group", {"name": _STR, "description": _STR,
                                                    "stateful": _BOOL, "tenant_id": _ID,
                                                    "project_id": _ID}),
    "SecurityGroupUpdate": _wrap("security_group", {"name": _STR, "description": _STR}),
    "SecurityGroupRuleCreate": _wrap("security_group_rule", {
        "security_group_id": _ID, "direction": {"type": "string",
                                                "enum": ["ingress", "egress"]},
        "ethertype": {"type": "string", "enum": ["IPv4", "IPv6"]},
        "protocol": {"type": "string", "nullable": True, "example": "tcp"},
        "port_range_min": {"type": "integer", "nullable": True, "minimum": 0,
                           "maximum": 65535},
        "port_range_max": {"type": "integer", "nullable": True, "minimum": 0,
                           "maximum": 65535},
        "remote_ip_prefix": {"type": "string", "nullable": True, "example": "0.0.0.0/0"},
        "remote_group_id": {**_ID, "nullable": True}, "description": _STR},
        ["security_group_id", "direction"]),
    "ServerAction": {"type": "object", "properties": {
        "addSecurityGroup": {"type": "object", "properties": {"name": _STR}},
        "removeSecurityGroup": {"type": "object", "properties": {"name": _STR}}}},
    "ProjectCreate": _wrap("project", _PROJECT, ["name"]),
    "ProjectUpdate": _wrap("project", _PROJECT),
    "UserCreate": _wrap("user", _USER, ["name"]),
    "UserUpdate": _wrap("user", _USER),
    "KeypairCreate": _wrap("keypair", {
        "name": _STR, "public_key": {"type": "string", "maxLength": 16384,
                                     "description": "omit it to have an RSA key generated"},
        "type": {"type": "string", "enum": ["ssh", "x509"]}, "user_id": _ID}, ["name"]),
    "NeutronError": {"type": "object", "properties": {"NeutronError": {
        "type": "object", "properties": {"type": {"type": "string"},
                                         "message": {"type": "string"},
                                         "detail": {"type": "string"}}}}},
    "Resource": {"type": "object"},
}

_ERRORS = {
    "400": "Invalid input", "401": "Missing, invalid or expired token", "403": "Not allowed",
    "404": "Not found (or another project's resource)", "409": "Conflict (in use, overlap)",
    "413": "Request too large (user data over 64 KiB)",
}
_OK = {"GET": "200", "HEAD": "200", "POST": "201", "PUT": "200", "PATCH": "200",
       "DELETE": "204"}

_LIST_FILTERS: dict[str, list[str]] = {
    "/v2.0/networks": ["id", "name", "tenant_id", "project_id", "admin_state_up", "shared"],
    "/v2.0/subnets": ["id", "name", "network_id", "tenant_id", "cidr", "ip_version",
                      "enable_dhcp", "gateway_ip"],
    "/v2.0/ports": ["id", "name", "network_id", "tenant_id", "device_id", "device_owner",
                    "mac_address", "fixed_ips"],
    "/v2.0/routers": ["id", "name", "tenant_id", "admin_state_up"],
    "/v2.1/servers": ["name", "status", "deleted", "all_tenants", "project_id", "limit",
                      "marker"],
    "/v2.1/servers/detail": ["name", "status", "deleted", "all_tenants", "project_id", "limit",
                             "marker"],
    "/v2.1/flavors/detail": ["minRam", "minDisk", "is_public", "limit", "marker"],
    "/image/v2/images": ["name", "visibility", "owner", "limit", "marker"],
    "/v3/projects": ["name", "enabled", "domain_id"],
    "/v3/users": ["name", "enabled", "domain_id"],
    "/v3/role_assignments": ["user.id", "scope.project.id", "role.id", "include_names"],
    "/v2.0/changes": ["since", "timeout", "limit"],
}


def _operation(route: Any) -> dict[str, Any]:
    status = "202" if route.path == "/v2.1/servers" and route.method == "POST" else (
        _OK[route.method])
    if route.method == "POST" and route.path.endswith("/tokens") and "v2.0" in route.path:
        status = "200"
    if route.path.startswith("/v2.1/os-keypairs/") and route.method == "DELETE":
        status = "202"
    if "_router_interface" in route.path or route.path == "/v2.1/flavors":
        status = "200"
    if route.path == "/v2.1/flavors/{id}" and route.method == "DELETE":
        status = "202"
    if route.path.endswith("/file") or "/roles/{role_id}" in route.path or (
            route.path.endswith("/tags/{tag}") and route.method != "PUT"):
        status = "204"
    if route.path == "/v2.0/{collection}/{id}/tags/{tag}" and route.method == "PUT":
        status = "201"
    if route.path.startswith("/v2.1/servers/{id}/") and route.method == "POST":
        status = "202" if route.path.endswith("/action") else "200"
    responses: dict[str, Any] = {status: {"description": "success"} if status == "204" else {
        "description": "success",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Resource"}}}}}
    for code, text in _ERRORS.items():
        if code == "401" and not route.auth:
            text = "Wrong user name, password or project"
        responses[code] = {"description": text, "content": {"application/json": {
            "schema": {"type": "object"}}}}
    op: dict[str, Any] = {
        "summary": route.summary,
        "operationId": f"{route.method.lower()}_{route.op.__name__}",
        "tags": [route.tag],
        "responses": responses,
    }
    params = [{"name": name, "in": "path", "required": True,
               "schema": {"type": "string", "maxLength": 255}}
              for name in re.findall(r"{(\w+)}", route.path)]
    if route.method == "GET":
        for name in _LIST_FILTERS.get(route.path, []):
            params.append({"name": name, "in": "query", "required": False,
                           "schema": {"type": "string", "maxLength": 255}})
    if params:
        op["parameters"] = params
    if route.body:
        op["requestBody"] = {"required": True, "content": {"application/json": {
            "schema": {"$ref": f"#/components/schemas/{route.body}"}}}}
    if not route.auth:
        op["security"] = []
    return op


def openapi_document(routes: Sequence[Any]) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route)
    return {
        "openapi": "3.0.3",
        "info": {"title": "openimds control-plane API", "version": "1.0",
                 "description": "Neutron v2.0 / Nova v2.1 shaped resources, Keystone-style "
                                "tokens (send X-Auth-Token)."},
        "paths": paths,
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"token": {"type": "apiKey", "in": "header",
                                          "name": "X-Auth-Token"}},
        },
        "security": [{"token": []}],
    }
