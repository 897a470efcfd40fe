"""What the CLIs change on an existing server (Nova v2.1 shapes): rename (`PUT
/servers/{id}`), server metadata (`/servers/{id}/metadata[/key]`), server tags
(`/servers/{id}/tags[/tag]`, microversion 2.26+), and the availability zone listing.

Every write is one transaction on the instance row, so it bumps the inventory revision and the
change feed tells the metadata API to drop its cached documents: a property set here is in
`meta_data.json` ("meta") on the next request after the feed delivers it (well under 1 s).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from openimds.control.call import Call, Reply, get_str, resource_body
from openimds.control.errors import BadRequest, NotFound
from openimds.control.security_groups import resolve_groups
from openimds.control.servers import check_metadata, find_server, server_body
from openimds.inventory.models import Instance, SecurityGroup

MAX_TAGS = 50
TAG_MICROVERSION = (2, 26)


def _writable(call: Call, inst: Instance) -> Instance:
    if not call.context.sees_project(inst.project_id, write=True):
        raise NotFound(f"Instance {inst.uuid} could not be found.")
    return inst


def update_server(call: Call) -> Reply:
    obj = resource_body(call.body, "server", ("name", "description", "accessIPv4",
                                              "accessIPv6", "OS-DCF:diskConfig"))
    with call.store.session() as s:
        inst = _writable(call, find_server(s, call))
        if "name" in obj:
            name = get_str(obj, "name")
            if not name.strip():
                raise BadRequest("Invalid input for field/attribute name: must not be empty")
            inst.name = name
        for key in ("accessIPv4", "accessIPv6", "OS-DCF:diskConfig"):
            if key in obj:
                raise BadRequest(f"Updating {key} is not supported by openimds.")
        get_str(obj, "description", nullable=True)
        s.flush()
        return Reply(200, {"server": server_body(s, call, inst)})


# ---- metadata ---------------------------------------------------------------------------------


def _metadata_body(call: Call, key: str = "metadata") -> dict[str, str]:
    if not isinstance(call.body, dict) or not isinstance(call.body.get(key), dict):
        raise BadRequest(f'request body must be {{"{key}": {{"key": "value", ...}}}}')
    return check_metadata(call.body[key])


def show_metadata(call: Call) -> Reply:
    with call.store.read() as s:
        return Reply(200, {"metadata": dict(find_server(s, call).properties or {})})


def _write_metadata(call: Call, *, replace: bool) -> Reply:
    new = _metadata_body(call)
    with call.store.session() as s:
        inst = _writable(call, find_server(s, call))
        merged = new if replace else {**(inst.properties or {}), **new}
        inst.properties = check_metadata(merged)
        return Reply(200, {"metadata": dict(inst.properties)})


def replace_metadata(call: Call) -> Reply:
    """`PUT /servers/{id}/metadata`: the whole set becomes the body's."""
    return _write_metadata(call, replace=True)


def update_metadata(call: Call) -> Reply:
    """`POST /servers/{id}/metadata`: the body's items are added or overwritten."""
    return _write_metadata(call, replace=False)


def show_metadata_item(call: Call) -> Reply:
    key = call.params["key"]
    with call.store.read() as s:
        props = find_server(s, call).properties or {}
    if key not in props:
        raise NotFound("Metadata item was not found")
    return Reply(200, {"meta": {key: props[key]}})


def set_metadata_item(call: Call) -> Reply:
    """`PUT /servers/{id}/metadata/{key}` with `{"meta": {key: value}}`."""
    key = call.params["key"]
    item = _metadata_body(call, "meta")
    if list(item) != [key]:
        raise BadRequest("Request body and URI mismatch: the body must hold exactly the key "
                         "named in the URI")
    with call.store.session() as s:
        inst = _writable(call, find_server(s, call))
        inst.properties = check_metadata({**(inst.properties or {}), **item})
    return Reply(200, {"meta": item})


def delete_metadata_item(call: Call) -> Reply:
    key = call.params["key"]
    with call.store.session() as s:
        inst = _writable(call, find_server(s, call))
        props = dict(inst.properties or {})
        if key not in props:
            raise NotFound("Metadata item was not found")
        del props[key]
        inst.properties = props
    return Reply(204)


# ---- tags (2.26+) -----------------------------------------------------------------------------


def _need_tags(call: Call) -> None:
    if call.microversion < TAG_MICROVERSION:
        raise NotFound("Server tags need microversion 2.26 or later (send "
                       "OpenStack-API-Version: compute 2.26).")


def _tag(value: Any) -> str:
    if not isinstance(value, str) or not 1 <= len(value) <= 60 or "/" in value or "," in value:
        raise BadRequest(f"Invalid tag {value!r}: 1-60 characters, no '/' or ','")
    return value


def list_tags(call: Call) -> Reply:
    _need_tags(call)
    with call.store.read() as s:
        return Reply(200, {"tags": list(find_server(s, call).tags or [])})


def replace_tags(call: Call) -> Reply:
    _need_tags(call)
    raw = call.body.get("tags") if isinstance(call.body, dict) else None
    if not isinstance(raw, list):
        raise BadRequest('request body must be {"tags": ["tag", ...]}')
    tags = list(dict.fromkeys(_tag(t) for t in raw))
    if len(tags) > MAX_TAGS:
        raise BadRequest(f"A server has at most {MAX_TAGS} tags.")
    with call.store.session() as s:
        inst = _writable(call, find_server(s, call))
        inst.tags = tags
    return Reply(200, {"tags": tags})


def delete_tags(call: Call) -> Reply:
    _need_tags(call)
    with call.store.session() as s:
        _writable(call, find_server(s, call)).tags = []
    return Reply(204)


def check_tag(call: Call) -> Reply:
    _need_tags(call)
    with call.store.read() as s:
        if call.params["tag"] not in (find_server(s, call).tags or []):
            raise NotFound(f"Tag {call.params['tag']} could not be found.")
    return Reply(204)


def add_tag(call: Call) -> Reply:
    _need_tags(call)
    tag = _tag(call.params["tag"])
    with call.store.session() as s:
        inst = _writable(call, find_server(s, call))
        tags = list(inst.tags or [])
        if tag in tags:
            return Reply(204)
        if len(tags) >= MAX_TAGS:
            raise BadRequest(f"A server has at most {MAX_TAGS} tags.")
        inst.tags = [*tags, tag]
    return Reply(201, None, {"Location": f"{call.base_url}/v2.1/servers/{inst.uuid}/tags/"
                                         f"{tag}"})


def delete_tag(call: Call) -> Reply:
    _need_tags(call)
    tag = call.params["tag"]
    with call.store.session() as s:
        inst = _writable(call, find_server(s, call))
        if tag not in (inst.tags or []):
            raise NotFound(f"Tag {tag} could not be found.")
        inst.tags = [t for t in inst.tags or [] if t != tag]
    return Reply(204)


# ---- security groups --------------------------------------------------------------------------


def _groups_of(s: Any, inst: Instance) -> list[SecurityGroup]:
    names = list(inst.security_groups or [])
    rows = s.scalars(select(SecurityGroup).where(SecurityGroup.project_id == inst.project_id,
                                                 SecurityGroup.name.in_(names)))
    by_name = {g.name: g for g in rows}
    return [by_name[n] for n in names if n in by_name]


def list_server_security_groups(call: Call) -> Reply:
    """`GET /servers/{id}/os-security-groups`: the server's groups, by their Neutron ids."""
    with call.store.read() as s:
        inst = find_server(s, call)
        groups = _groups_of(s, inst)
        return Reply(200, {"security_groups": [
            {"id": g.id, "name": g.name, "description": g.description or "",
             "tenant_id": g.project_id, "rules": []} for g in groups]})


def server_action(call: Call) -> Reply:
    """`POST /servers/{id}/action`: addSecurityGroup and removeSecurityGroup (the actions
    the metadata-related CLI commands send); any other action is a 400."""
    body = call.body if isinstance(call.body, dict) else {}
    if len(body) != 1 or next(iter(body)) not in ("addSecurityGroup", "removeSecurityGroup"):
        raise BadRequest("Supported server actions: addSecurityGroup, removeSecurityGroup "
                         "(nothing boots here, so there is nothing to reboot or resize).")
    action, arg = next(iter(body.items()))
    ref = arg.get("name") if isinstance(arg, dict) else None
    if not isinstance(ref, str) or not ref:
        raise BadRequest(f'{action} needs {{"name": GROUP}}')
    with call.store.session() as s:
        inst = _writable(call, find_server(s, call))
        [name] = resolve_groups(s, call.context, [ref])
        current = list(inst.security_groups or [])
        if action == "addSecurityGroup":
            if name in current:
                raise BadRequest(f"Security group {name} is already associated with the "
                                 "instance")
            inst.security_groups = [*current, name]
        else:
            if name not in current:
                raise BadRequest(f"Security group {name} not associated with the instance")
            inst.security_groups = [g for g in current if g != name]
    return Reply(202)


# ---- availability zones -----------------------------------------------------------------------


def list_availability_zones(call: Call) -> Reply:
    """Every zone a server was placed in, plus the default `nova`; all available."""
    from openimds.control.servers import DEFAULT_AZ

    with call.store.read() as s:
        zones = set(s.scalars(select(Instance.availability_zone).distinct()))
    names = sorted({DEFAULT_AZ} | {z for z in zones if z})
    return Reply(200, {"availabilityZoneInfo": [
        {"zoneName": z, "zoneState": {"available": True}, "hosts": None} for z in names]})


__all__ = ["add_tag", "check_tag", "list_server_security_groups", "server_action", "delete_metadata_item", "delete_tag", "delete_tags",
           "list_availability_zones", "list_tags", "replace_metadata", "replace_tags",
           "set_metadata_item", "show_metadata", "show_metadata_item", "update_metadata",
           "update_server"]
