"""`/v2.0/security-groups` and `/v2.0/security-group-rules` (Neutron shapes): stored and
listed, so the clients that manage them work and the EC2 `security-groups` key names real
groups. openimds filters no traffic by them.

Every project has a group named `default` (egress open, ingress from members of the group), made
the first time the project lists its groups or creates a server, as Neutron does; it cannot be
deleted or renamed.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from openimds.control.call import Call, Reply, get_str, resource_body
from openimds.control.context import RequestContext, scoped
from openimds.control.errors import BadRequest, Conflict
from openimds.control.resources import (
    ListSpec,
    get_visible,
    list_collection,
    owner_project,
    parse_filters,
)
from openimds.control.serializers import iso
from openimds.inventory.models import Instance, SecurityGroup, SecurityGroupRule

DEFAULT = "default"

GROUP_SPEC = ListSpec(
    model=SecurityGroup,
    columns={"id": SecurityGroup.id, "name": SecurityGroup.name,
             "tenant_id": SecurityGroup.project_id, "project_id": SecurityGroup.project_id},
    attributes=frozenset({"description", "stateful", "created_at", "updated_at"}),
)
RULE_SPEC = ListSpec(
    model=SecurityGroupRule,
    columns={"id": SecurityGroupRule.id,
             "security_group_id": SecurityGroupRule.security_group_id,
             "tenant_id": SecurityGroupRule.project_id,
             "project_id": SecurityGroupRule.project_id,
             "direction": SecurityGroupRule.direction, "ethertype": SecurityGroupRule.ethertype,
             "protocol": SecurityGroupRule.protocol},
    attributes=frozenset({"port_range_min", "port_range_max", "remote_ip_prefix",
                          "remote_group_id", "description"}),
)
PROTOCOLS = {"tcp": 6, "udp": 17, "icmp": 1, "icmpv6": 58, "ipv6-icmp": 58, "sctp": 132,
             "any": None}


def rule_dict(r: SecurityGroupRule) -> dict[str, Any]:
    return {"id": r.id, "security_group_id": r.security_group_id, "tenant_id": r.project_id,
            "project_id": r.project_id, "direction": r.direction, "ethertype": r.ethertype,
            "protocol": r.protocol, "port_range_min": r.port_range_min,
            "port_range_max": r.port_range_max, "remote_ip_prefix": r.remote_ip_prefix,
            "remote_group_id": r.remote_group_id, "remote_address_group_id": None,
            "normalized_cidr": r.remote_ip_prefix, "description": r.description or "",
            "tags": [], "created_at": iso(r.created_at), "updated_at": iso(r.updated_at),
            "revision_number": 0}


def group_dict(g: SecurityGroup) -> dict[str, Any]:
    return {"id": g.id, "name": g.name, "tenant_id": g.project_id, "project_id": g.project_id,
            "description": g.description or "", "stateful": g.stateful, "shared": False,
            "security_group_rules": [rule_dict(r) for r in g.rules], "tags": list(g.tags or []),
            "created_at": iso(g.created_at), "updated_at": iso(g.updated_at),
            "revision_number": 0}


def ensure_default(s: Session, project_id: str) -> SecurityGroup:
    """The project's `default` group, made (with Neutron's default rules) if missing."""
    found = s.scalars(select(SecurityGroup).where(SecurityGroup.project_id == project_id,
                                                  SecurityGroup.name == DEFAULT)).first()
    if found is not None:
        return found
    group = SecurityGroup(project_id=project_id, name=DEFAULT,
                          description="Default security group")
    s.add(group)
    s.flush()
    for ethertype in ("IPv4", "IPv6"):
        group.rules.append(SecurityGroupRule(project_id=project_id, direction="egress",
                                             ethertype=ethertype))
        group.rules.append(SecurityGroupRule(project_id=project_id, direction="ingress",
                                             ethertype=ethertype, remote_group_id=group.id))
    s.flush()
    return group


def resolve_groups(s: Session, ctx: RequestContext, names: list[str]) -> list[str]:
    """Names (or ids) of a new server's groups -> their names; 400 for an unknown one."""
    ensure_default(s, ctx.project_id)
    out = []
    for ref in names:
        group = s.scalars(select(SecurityGroup).where(
            SecurityGroup.project_id == ctx.project_id,
            (SecurityGroup.name == ref) | (SecurityGroup.id == ref))).first()
        if group is None:
            raise BadRequest(f"Security group {ref} not found for project {ctx.project_id}.")
        out.append(group.name)
    return out


# ---- groups -----------------------------------------------------------------------------------


def list_security_groups(call: Call) -> Reply:
    filters = parse_filters(call, GROUP_SPEC)
    stmt = scoped(select(SecurityGroup), SecurityGroup, call.context)
    for cond in filters.sql.values():
        stmt = stmt.where(cond)
    with call.store.session() as s:
        if not call.context.read_only:
            ensure_default(s, call.context.project_id)
        return Reply(200, list_collection(
            call, s, stmt.options(selectinload(SecurityGroup.rules)), model=SecurityGroup,
            order=(SecurityGroup.created_at, SecurityGroup.id), serialize=group_dict,
            filters=filters, collection="security_groups", path="/v2.0/security-groups",
            kind="SecurityGroup"))


def show_security_group(call: Call) -> Reply:
    with call.store.read() as s:
        group = get_visible(s, SecurityGroup, call.params["id"], call.context, "SecurityGroup")
        return Reply(200, {"security_group": group_dict(group)})


def create_security_group(call: Call) -> Reply:
    obj = resource_body(call.body, "security_group", ("name", "description", "tenant_id",
                                                      "project_id", "stateful"))
    name = get_str(obj, "name")
    description = get_str(obj, "description", nullable=True)
    stateful = obj.get("stateful", True)
    if not isinstance(stateful, bool):
        raise BadRequest("Invalid input for stateful: expected true or false")
    with call.store.session() as s:
        project = owner_project(s, call.context, obj)
        if name == DEFAULT:
            if s.scalars(select(SecurityGroup).where(SecurityGroup.project_id == project,
                                                     SecurityGroup.name == DEFAULT)).first():
                raise Conflict("Default security group already exists.",
                               type="DuplicateSecurityGroup")
            return Reply(201, {"security_group": group_dict(ensure_default(s, project))})
        ensure_default(s, project)
        group = SecurityGroup(project_id=project, name=name, description=description,
                              stateful=stateful)
        s.add(group)
        s.flush()
        for ethertype in ("IPv4", "IPv6"):
            group.rules.append(SecurityGroupRule(project_id=project, direction="egress",
                                                 ethertype=ethertype))
        s.flush()
        return Reply(201, {"security_group": group_dict(group)})


def update_security_group(call: Call) -> Reply:
    obj = resource_body(call.body, "security_group", ("name", "description", "stateful"))
    with call.store.session() as s:
        group = get_visible(s, SecurityGroup, call.params["id"], call.context, "SecurityGroup",
                            write=True)
        if "name" in obj:
            name = get_str(obj, "name")
            if group.name == DEFAULT and name != DEFAULT:
                raise Conflict("Insufficient rights for renaming the default security group.")
            group.name = name
        if "description" in obj:
            group.description = get_str(obj, "description", nullable=True)
        s.flush()
        return Reply(200, {"security_group": group_dict(group)})


def delete_security_group(call: Call) -> Reply:
    with call.store.session() as s:
        group = get_visible(s, SecurityGroup, call.params["id"], call.context, "SecurityGroup",
                            write=True)
        if group.name == DEFAULT:
            raise Conflict("Insufficient rights for removing the default security group.")
        user = None
        for inst in s.scalars(select(Instance).where(Instance.project_id == group.project_id)):
            if group.name in (inst.security_groups or []):
                user = inst.uuid
                break
        if user is not None:
            raise Conflict(f"Security Group {group.id} in use by server {user}.",
                           type="SecurityGroupInUse")
        s.delete(group)
    return Reply(204)


# ---- rules ------------------------------------------------------------------------------------

RULE_FIELDS = ("security_group_id", "direction", "ethertype", "protocol", "port_range_min",
               "port_range_max", "remote_ip_prefix", "remote_group_id", "description",
               "tenant_id", "project_id")


def _port(value: Any, key: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535:
        raise BadRequest(f"Invalid value for {key}: {value!r}", type="InvalidInput")
    return value


def _protocol(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).lower()
    if text in PROTOCOLS:
        return None if text == "any" else text
    if text.isdigit() and 0 <= int(text) <= 255:
        return text
    raise BadRequest(f"Security group rule protocol {value} not supported.",
                     type="SecurityGroupRuleInvalidProtocol")


def create_security_group_rule(call: Call) -> Reply:
    obj = resource_body(call.body, "security_group_rule", RULE_FIELDS,
                        required=("security_group_id", "direction"))
    direction = obj["direction"]
    if direction not in ("ingress", "egress"):
        raise BadRequest(f"Invalid direction {direction!r}: ingress or egress")
    ethertype = obj.get("ethertype", "IPv4")
    if ethertype not in ("IPv4", "IPv6"):
        raise BadRequest(f"Invalid ethertype {ethertype!r}: IPv4 or IPv6")
    protocol = _protocol(obj.get("protocol"))
    low, high = _port(obj.get("port_range_min"), "port_range_min"), _port(
        obj.get("port_range_max"), "port_range_max")
    if low is not None and high is not None and low > high:
        raise BadRequest("port_range_min must be <= port_range_max")
    prefix = obj.get("remote_ip_prefix")
    if prefix is not None:
        try:
            net = ipaddress.ip_network(str(prefix), strict=False)
        except ValueError:
            raise BadRequest(f"Invalid remote_ip_prefix {prefix!r}") from None
        if f"IPv{net.version}" != ethertype:
            raise BadRequest(f"Conflicting value ethertype {ethertype} for CIDR {prefix}")
        prefix = str(net)
    remote_group = obj.get("remote_group_id")
    if prefix is not None and remote_group is not None:
        raise BadRequest("Only remote_ip_prefix or remote_group_id may be provided.")
    with call.store.session() as s:
        group = get_visible(s, SecurityGroup, str(obj["security_group_id"]), call.context,
                            "SecurityGroup", write=True)
        if remote_group is not None:
            get_visible(s, SecurityGroup, str(remote_group), call.context, "SecurityGroup")
        rule = SecurityGroupRule(security_group_id=group.id, project_id=group.project_id,
                                 direction=direction, ethertype=ethertype, protocol=protocol,
                                 port_range_min=low, port_range_max=high,
                                 remote_ip_prefix=prefix, remote_group_id=remote_group,
                                 description=get_str(obj, "description", nullable=True))
        for other in group.rules:
            if rule_dict(other) | {"id": "", "description": "", "created_at": None,
                                   "updated_at": None} == rule_dict(rule) | {
                    "id": "", "description": "", "created_at": None, "updated_at": None}:
                raise Conflict(f"Security group rule already exists. Rule id is {other.id}.",
                               type="SecurityGroupRuleExists")
        s.add(rule)
        s.flush()
        return Reply(201, {"security_group_rule": rule_dict(rule)})


def list_security_group_rules(call: Call) -> Reply:
    filters = parse_filters(call, RULE_SPEC)
    stmt = scoped(select(SecurityGroupRule), SecurityGroupRule, call.context)
    for cond in filters.sql.values():
        stmt = stmt.where(cond)
    with call.store.read() as s:
        return Reply(200, list_collection(
            call, s, stmt, model=SecurityGroupRule,
            order=(SecurityGroupRule.created_at, SecurityGroupRule.id), serialize=rule_dict,
            filters=filters, collection="security_group_rules",
            path="/v2.0/security-group-rules", kind="SecurityGroupRule"))


def show_security_group_rule(call: Call) -> Reply:
    with call.store.read() as s:
        rule = get_visible(s, SecurityGroupRule, call.params["id"], call.context,
                           "SecurityGroupRule")
        return Reply(200, {"security_group_rule": rule_dict(rule)})


def delete_security_group_rule(call: Call) -> Reply:
    with call.store.session() as s:
        rule = get_visible(s, SecurityGroupRule, call.params["id"], call.context,
                           "SecurityGroupRule", write=True)
        s.delete(rule)
    return Reply(204)


__all__ = ["create_security_group", "create_security_group_rule", "delete_security_group",
           "delete_security_group_rule", "ensure_default", "group_dict",
           "list_security_group_rules", "list_security_groups", "resolve_groups",
           "rule_dict", "show_security_group", "show_security_group_rule",
           "update_security_group"]
