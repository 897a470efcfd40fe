"""`/v2.1/servers` (Nova shapes): create, show, list, list detail, delete.

A server here is a record the metadata API serves from; nothing boots. Creating one creates its
ports (device_owner ``compute:<az>``, device_id = the server uuid) in the same transaction, so a
failure (an address in use, an unknown key pair) leaves nothing behind. Deleting it deletes its
ports, which frees their addresses.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
import string
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlencode

from sqlalchemy import select, tuple_
from sqlalchemy.orm import Session, selectinload

from openimds.control import placement
from openimds.control.call import (
    Call,
    Reply,
    check_ip,
    get_str,
    is_uuid,
    parse_bool,
    resource_body,
)
from openimds.control.context import scoped
from openimds.control.errors import BadRequest, Conflict, Forbidden, NotFound, PayloadTooLarge
from openimds.control.flavors import embedded_flavor, find_flavor
from openimds.control.images import find_image
from openimds.control.metadata_options import CREATE_KEY as OPTIONS_KEY
from openimds.control.metadata_options import options_for_create
from openimds.control.name_filter import any_name_matcher
from openimds.control.ports import build_port, get_port_for_write, shared_network
from openimds.control.resources import get_visible, retry_on_race
from openimds.control.security_groups import resolve_groups
from openimds.control.serializers import server_brief, server_dict
from openimds.inventory.models import Flavor, Image, Instance, KeyPair, Network, Port

MAX_USER_DATA = 64 * 1024  # decoded bytes, as Nova's 65535-character limit allows
DEFAULT_AZ = "nova"
DEFAULT_FLAVOR = "m1.small"

CREATE_FIELDS = ("name", "networks", "user_data", "metadata", "key_name", "availability_zone",
                 "flavorRef", "imageRef", "security_groups", "min_count", "max_count",
                 "description", "config_drive", "OS-DCF:diskConfig", OPTIONS_KEY,
                 "block_device_mapping_v2", "host", "tags")

_NOT_HOST = re.compile(r"[^\w.-]+")


def sanitize_hostname(name: str, default: str) -> str:
    """Nova's `sanitize_hostname`: latin-1 only, at most 63 characters, spaces/underscores/dots
    -> '-', other non-word characters dropped, lowercase, no leading/trailing '-' or '.'."""
    host = name.encode("latin-1", "ignore").decode("latin-1")[:63]
    host = re.sub(r"[ _.]", "-", host)
    host = _NOT_HOST.sub("", host).lower().strip(".-")
    return host or default[:63]


def reservation_id() -> str:
    alphabet = string.ascii_lowercase + string.digits
    return "r-" + "".join(secrets.choice(alphabet) for _ in range(8))


def _user_data(value: Any) -> bytes | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadRequest("Invalid input for field/attribute user_data: expected a base64 string")
    try:
        data = base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise BadRequest("Invalid input for field/attribute user_data: not valid base64"
                         ) from None
    if len(data) > MAX_USER_DATA:
        raise PayloadTooLarge(f"User data is {len(data)} bytes decoded; the limit is "
                              f"{MAX_USER_DATA} bytes (64 KiB).")
    return data


def _metadata(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadRequest("Invalid input for field/attribute metadata: expected an object")
    if len(value) > 128:
        raise BadRequest("Invalid input for field/attribute metadata: at most 128 items")
    out: dict[str, str] = {}
    for key, item in value.items():
        if not isinstance(item, str) or not 1 <= len(key) <= 255 or len(item) > 255:
            raise BadRequest(f"Invalid input for field/attribute metadata: key {key!r} must be "
                             "1-255 characters and its value a string of at most 255")
        out[key] = item
    return out


def _security_groups(value: Any) -> list[str]:
    if value is None:
        return ["default"]
    groups = []
    for entry in value if isinstance(value, list) else [None]:
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise BadRequest('Invalid input for security_groups: expected [{"name": ...}]')
        groups.append(entry["name"])
    return groups or ["default"]


def _tags(value: Any) -> list[str]:
    """Server tags given at creation (Nova takes them from 2.52; clients send them earlier)."""
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > 50 or not all(
            isinstance(t, str) and 1 <= len(t) <= 60 and "/" not in t and "," not in t
            for t in value):
        raise BadRequest("Invalid input for field/attribute tags: at most 50 tags of 1-60 "
                         "characters without '/' or ','")
    return list(dict.fromkeys(value))


def _networks(value: Any) -> list[dict[str, str]]:
    """Nova's `networks`: a list of {uuid[, fixed_ip]} or {port}; "none"/"auto" as strings."""
    if value in ("none", None):
        return []
    if value == "auto":
        raise BadRequest("networks=auto is not supported; name a network or a port")
    if not isinstance(value, list):
        raise BadRequest("Invalid input for field/attribute networks: expected a list")
    out = []
    for entry in value:
        if not isinstance(entry, dict) or not set(entry) <= {"uuid", "fixed_ip", "port", "tag"}:
            raise BadRequest('Invalid input for field/attribute networks: each entry is '
                             '{"uuid": NET[, "fixed_ip": IP]} or {"port": PORT}')
        port = entry.get("port")
        net = entry.get("uuid")
        if (port is None) == (net is None):
            raise BadRequest("Each networks entry needs exactly one of uuid or port")
        if port is not None:
            if "fixed_ip" in entry:
                raise BadRequest("fixed_ip cannot be combined with port in a networks entry")
            out.append({"port": get_str(entry, "port", max_len=64)})
        else:
            item = {"uuid": get_str(entry, "uuid", max_len=64)}
            if "fixed_ip" in entry:
                item["fixed_ip"] = check_ip(entry["fixed_ip"], "fixed_ip")
            out.append(item)
    return out


def _boot_image(obj: dict[str, Any]) -> str | None:
    """The image a server boots from: `imageRef`, or the boot entry of
    `block_device_mapping_v2` (openstacksdk sends both for `--image`). Only local image
    disks are understood; volumes do not exist here."""
    image_ref = get_str(obj, "imageRef", nullable=True) or None
    mapping = obj.get("block_device_mapping_v2")
    if mapping is None:
        return image_ref
    if not isinstance(mapping, list) or not all(isinstance(m, dict) for m in mapping):
        raise BadRequest("Invalid input for field/attribute block_device_mapping_v2: "
                         "expected a list of objects")
    for entry in mapping:
        source, dest = entry.get("source_type"), entry.get("destination_type", "local")
        if source not in ("image", "blank") or dest != "local":
            raise BadRequest("Only local disks from an image (source_type image or blank, "
                             "destination_type local) are supported: openimds has no volumes")
        if source == "image" and str(entry.get("boot_index", "")) == "0":
            uuid = entry.get("uuid")
            if not isinstance(uuid, str):
                raise BadRequest("A block_device_mapping_v2 image entry needs a uuid")
            if image_ref is not None and uuid != image_ref:
                raise BadRequest("imageRef and the boot block device name different images")
            image_ref = uuid
    return image_ref


def _count(obj: dict[str, Any], key: str) -> int:
    value = obj.get(key, 1)
    if isinstance(value, str) and value.isascii() and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value != 1:
        raise BadRequest(f"Invalid input for {key}: openimds creates one server per request")
    return value


def create_server(call: Call) -> Reply:
    obj = resource_body(call.body, "server", CREATE_FIELDS, required=("name",))
    ctx = call.context
    name = get_str(obj, "name")
    if not name.strip():
        raise BadRequest("Invalid input for field/attribute name: must not be empty")
    user_data = _user_data(obj.get("user_data"))
    metadata = _metadata(obj.get("metadata"))
    key_name = get_str(obj, "key_name", nullable=True) or None
    az, forced_host = placement.requested_host(
        get_str(obj, "availability_zone", nullable=True) or DEFAULT_AZ,
        get_str(obj, "host", nullable=True) or None, ctx)
    flavor_ref = get_str(obj, "flavorRef", nullable=True) or None
    image_name = _boot_image(obj)
    groups = _security_groups(obj.get("security_groups"))
    tags = _tags(obj.get("tags"))
    nets = _networks(obj.get("networks", "none"))
    get_str(obj, "description", nullable=True, max_len=255)
    _count(obj, "min_count")
    _count(obj, "max_count")
    md_options = options_for_create(obj.get(OPTIONS_KEY))

    def write() -> Reply:
        with call.store.session() as s:
            key_data = None
            if key_name is not None:
                kp = s.scalars(select(KeyPair).where(KeyPair.user_id == ctx.user_id,
                                                     KeyPair.name == key_name)).first()
                if kp is None:
                    raise BadRequest(f"Invalid key_name provided: key pair {key_name!r} not "
                                     "found (create it with POST /v2.1/os-keypairs).")
                key_data = kp.public_key
            image = _resolve_image(s, call, image_name) if image_name is not None else None
            group_names = resolve_groups(s, ctx, groups)
            flavor_name, flavor_id = _resolve_flavor(s, call, flavor_ref)
            inst = Instance(name=name, project_id=ctx.project_id, user_id=ctx.user_id,
                            availability_zone=az, flavor=flavor_name, flavor_id=flavor_id,
                            image_id=image.id if image else None, key_name=key_name,
                            key_data=key_data,
                            user_data=user_data, properties=metadata, launch_index=0,
                            reservation_id=reservation_id(), security_groups=group_names,
                            status="ACTIVE", hostname="", metadata_options=md_options, tags=tags)
            s.add(inst)
            s.flush()
            inst.hostname = sanitize_hostname(name, f"server-{inst.uuid}")
            ports = _attach(s, call, inst, nets, az)
            host = placement.choose_host(s, forced_host, call.settings.agent_down_time)
            for port in ports:
                port.binding_host_id = host or ""
            s.flush()
            return Reply(202, {"server": _render(s, call, inst, ports)})

    return retry_on_race(write)


def _resolve_image(s: Session, call: Call, ref: str) -> Image:
    """`imageRef` by Glance id or name. An unknown *name* registers a public image record, as
    round 1 did (servers named their image before the image service existed)."""
    image = find_image(s, call, ref)
    if image is not None:
        return image
    if is_uuid(ref):
        raise BadRequest(f"Image {ref} could not be found.")
    image = Image(name=ref, owner=call.context.project_id, visibility="public", properties={})
    s.add(image)
    s.flush()
    return image


def _resolve_flavor(s: Session, call: Call, ref: str | None) -> tuple[str, str | None]:
    """(name, id) of `flavorRef` (an id or a name); without one, m1.small (its name alone if
    an operator deleted that flavor)."""
    try:
        flavor = find_flavor(s, call, ref or DEFAULT_FLAVOR)
    except NotFound:
        if ref is None:
            return DEFAULT_FLAVOR, None
        raise BadRequest(f"Flavor {ref} could not be found.") from None
    return flavor.name, flavor.id


def _attach(s: Session, call: Call, inst: Instance, nets: Sequence[dict[str, str]],
            az: str) -> list[Port]:
    ctx = call.context
    owner = f"compute:{az}"
    ports = []
    for entry in nets:
        if "port" in entry:
            port = get_port_for_write(s, ctx, entry["port"])
            if port.device_id:
                raise Conflict(f"Port {port.id} is still in use by {port.device_id}.")
            port.device_id = inst.uuid
            port.device_owner = owner
            port.preserve_on_delete = True
        else:
            network = get_visible(s, Network, entry["uuid"], ctx, "Network",
                                  shared=shared_network())
            fixed = ([{"ip_address": entry["fixed_ip"]}] if "fixed_ip" in entry else None)
            port = build_port(s, network, ctx.project_id, fixed_ips=fixed,
                              device_id=inst.uuid, device_owner=owner)
        ports.append(port)
    s.flush()
    return ports


def _render(s: Session, call: Call, inst: Instance, ports: Sequence[Port]) -> dict[str, Any]:
    net_ids = {p.network_id for p in ports}
    networks = {n.id: n for n in s.scalars(select(Network).where(Network.id.in_(net_ids)))}
    body = _shaped(s, call, [inst], {inst.uuid: server_dict(inst, ports, networks,
                                                            call.base_url)})[0]
    return placement.with_host(body, ports, call.context)


def _shaped(s: Session, call: Call, rows: Sequence[Instance],
            rendered: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The microversion-dependent parts of servers: the image by Glance id, and the flavor as
    a link (before 2.47) or embedded sizes (2.47 on)."""
    base = call.base_url
    flavor_ids = {r.flavor_id for r in rows if r.flavor_id}
    flavors = {f.id: f for f in s.scalars(select(Flavor).where(Flavor.id.in_(flavor_ids)))}
    out = []
    for inst in rows:
        body = rendered[inst.uuid]
        if inst.image is not None:
            body["image"] = {"id": inst.image.uuid, "name": inst.image.name, "links": [
                {"rel": "bookmark", "href": f"{base}/images/{inst.image.uuid}"}]}
        if call.microversion >= (2, 26):
            body["tags"] = list(inst.tags or [])
        if call.microversion >= (2, 47):
            body["flavor"] = embedded_flavor(flavors.get(inst.flavor_id or ""), inst.flavor)
        else:
            fid = inst.flavor_id or inst.flavor
            body["flavor"] = {"id": fid, "links": [
                {"rel": "bookmark", "href": f"{base}/flavors/{fid}"}]}
        out.append(body)
    return out


def _ports_of(s: Session, uuids: Sequence[str]) -> dict[str, list[Port]]:
    out: dict[str, list[Port]] = {u: [] for u in uuids}
    if not uuids:
        return out
    stmt = (select(Port).where(Port.device_id.in_(list(uuids)), Port.device_owner.like("compute:%"))
            .options(selectinload(Port.fixed_ips)).order_by(Port.created_at, Port.id))
    for port in s.scalars(stmt):
        out[port.device_id].append(port)
    return out


def _find(s: Session, call: Call) -> Instance:
    server_id = call.params["id"]
    inst = None
    if is_uuid(server_id):
        inst = s.scalars(scoped(select(Instance).where(Instance.uuid == server_id), Instance,
                                call.context)).first()
    if inst is None:
        raise NotFound(f"Instance {server_id} could not be found.")
    return inst


# For the modules that act on existing servers (server_actions.py).
find_server = _find
check_metadata = _metadata


def server_body(s: Session, call: Call, inst: Instance) -> dict[str, Any]:
    """One server as GET /servers/{id} renders it."""
    return _render(s, call, inst, _ports_of(s, [inst.uuid])[inst.uuid])


def show_server(call: Call) -> Reply:
    with call.store.read() as s:
        inst = _find(s, call)
        ports = _ports_of(s, [inst.uuid])[inst.uuid]
        return Reply(200, {"server": _render(s, call, inst, ports)})


# Query keys the clients send that openimds accepts. `deleted=true` lists nothing (deleted
# servers are not kept); the rest either filter or are accepted and ignored as Nova ignores
# them for a one-cell, one-host cloud (`host`, `node`, `sort_*`).
_LIST_FILTERS = {"name", "status", "availability_zone", "key_name", "project_id", "tenant_id",
                 "all_tenants", "limit", "marker", "sort_key", "sort_dir", "flavor", "image",
                 "deleted", "user_id", "reservation_id", "host", "node", "changes-since",
                 "ip", "ip6", "tags", "tags-any", "not-tags", "not-tags-any", "locked",
                 "description", "hostname"}
MAX_LIMIT = 1000


def _limit(call: Call) -> int | None:
    raw = call.query_one("limit")
    if raw is None:
        return None
    if not (raw.isascii() and raw.isdigit()):
        raise BadRequest(f"Invalid limit {raw!r}: expected a non-negative integer")
    return min(int(raw), MAX_LIMIT)


def _project_scope(call: Call, stmt: Any) -> Any:
    """Nova's rule: everyone lists their own project; admins (and the service role) may ask
    for `all_tenants` or name other projects with `project_id`/`tenant_id`."""
    ctx = call.context
    all_tenants = call.query_one("all_tenants")
    everyone = all_tenants is not None and (all_tenants == "" or parse_bool(all_tenants,
                                                                             "all_tenants"))
    projects = call.query_values("project_id") or call.query_values("tenant_id")
    if not ctx.reads_all:
        if everyone:
            raise Forbidden("Policy doesn't allow os_compute_api:servers:index:get_all_tenants "
                            "to be performed.")
        if projects and set(projects) != {ctx.project_id}:
            return stmt.where(Instance.project_id.in_([]))
        return stmt.where(Instance.project_id == ctx.project_id)
    if projects:
        return stmt.where(Instance.project_id.in_(projects))
    if everyone:
        return stmt
    return stmt.where(Instance.project_id == ctx.project_id)


def _list(call: Call, detail: bool) -> Reply:
    unknown = {k for k, _ in call.query} - _LIST_FILTERS
    if unknown:
        raise BadRequest(f"Invalid filter(s): {', '.join(sorted(unknown))}")
    deleted = call.query_one("deleted")
    if deleted is not None and parse_bool(deleted, "deleted"):
        return Reply(200, {"servers": []})  # deleted servers are not kept
    stmt = _project_scope(call, select(Instance)).options(selectinload(Instance.image))
    for key, column in (("status", Instance.status),
                        ("availability_zone", Instance.availability_zone),
                        ("key_name", Instance.key_name),
                        ("user_id", Instance.user_id),
                        ("reservation_id", Instance.reservation_id)):
        values = call.query_values(key)
        if values:
            stmt = stmt.where(column.in_([v.upper() if key == "status" else v
                                          for v in values]))
    # `name` is matched literally or anchored (name_filter.py), never as a regex: bounded cost.
    names = call.query_values("name")
    matches = any_name_matcher(names) if names else None
    limit = _limit(call)
    marker = call.query_one("marker")
    with call.store.read() as s:
        rows = _page(s, stmt, matches, marker, limit)
        links = []
        if limit is not None and len(rows) > limit:
            rows = rows[:limit]
            query = [(k, v) for k, v in call.query if k != "marker"]
            query.append(("marker", rows[-1].uuid if rows else ""))
            path = "/v2.1/servers/detail" if detail else "/v2.1/servers"
            links = [{"rel": "next", "href": f"{call.base_url}{path}?{urlencode(query)}"}]
        if not detail:
            body: dict[str, Any] = {"servers": [server_brief(r, call.base_url) for r in rows]}
        else:
            ports = _ports_of(s, [r.uuid for r in rows])
            net_ids = {p.network_id for ps in ports.values() for p in ps}
            networks = {n.id: n for n in s.scalars(select(Network).where(
                Network.id.in_(net_ids)))}
            shaped = _shaped(s, call, rows, {
                r.uuid: server_dict(r, ports[r.uuid], networks, call.base_url)
                for r in rows})
            body = {"servers": [placement.with_host(b, ports[r.uuid], call.context)
                                for r, b in zip(rows, shaped, strict=True)]}
        if links:
            body["servers_links"] = links
        return Reply(200, body)


# Rows read from the database per round trip while a name filter is applied in Python.
_STREAM_ROWS = 500


def _page(s: Session, stmt: Any, matches: Any, marker: str | None,
          limit: int | None) -> list[Instance]:
    """The listed servers after `marker`, newest first, at most `limit` + 1 of them (the one
    more tells whether a next link is due). Cut in SQL (keyset on created_at, id) and read in
    batches, so a page of a 100k-instance cloud never loads the other instances."""
    order = (Instance.created_at.desc(), Instance.id.desc())
    if marker is not None:
        anchor = s.scalars(stmt.where(Instance.uuid == marker).limit(1)).first()
        if anchor is None or (matches is not None and not matches(anchor.name)):
            raise BadRequest(f"marker [{marker}] not found")
        stmt = stmt.where(tuple_(Instance.created_at, Instance.id)
                          < tuple_(anchor.created_at, anchor.id))
    stmt = stmt.order_by(*order)
    if matches is None:
        return list(s.scalars(stmt if limit is None else stmt.limit(limit + 1)))
    out: list[Instance] = []
    for row in s.scalars(stmt.execution_options(yield_per=_STREAM_ROWS)):
        if matches(row.name):
            out.append(row)
            if limit is not None and len(out) > limit:
                break
    return out


def list_servers(call: Call) -> Reply:
    return _list(call, detail=False)


def list_servers_detail(call: Call) -> Reply:
    return _list(call, detail=True)


def delete_server(call: Call) -> Reply:
    with call.store.session() as s:
        inst = _find(s, call)
        if not call.context.sees_project(inst.project_id, write=True):
            raise NotFound(f"Instance {inst.uuid} could not be found.")
        for port in _ports_of(s, [inst.uuid])[inst.uuid]:
            if port.preserve_on_delete:
                port.device_id = ""
                port.device_owner = ""
                port.preserve_on_delete = False
            else:
                s.delete(port)
        s.flush()
        s.delete(inst)
    return Reply(204)


__all__ = ["DEFAULT_AZ", "check_metadata", "create_server", "delete_server", "find_server",
           "list_servers", "list_servers_detail", "sanitize_hostname", "server_body",
           "show_server"]
