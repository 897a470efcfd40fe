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

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from openimds.control import placement
from openimds.control.call import (
    Call,
    Reply,
    check_ip,
    get_str,
    is_uuid,
    resource_body,
)
from openimds.control.context import scoped
from openimds.control.errors import BadRequest, Conflict, NotFound, PayloadTooLarge
from openimds.control.ports import build_port, get_port_for_write, shared_network
from openimds.control.resources import get_visible, retry_on_race
from openimds.control.serializers import server_brief, server_dict
from openimds.inventory.models import Image, Instance, KeyPair, Network, Port

MAX_USER_DATA = 64 * 1024  # decoded bytes, as Nova's 65535-character limit allows
DEFAULT_AZ = "nova"
DEFAULT_FLAVOR = "m1.small"

CREATE_FIELDS = ("name", "networks", "user_data", "metadata", "key_name", "availability_zone",
                 "flavorRef", "imageRef", "security_groups", "min_count", "max_count",
                 "description", "config_drive", "OS-DCF:diskConfig", "host")

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


def _count(obj: dict[str, Any], key: str) -> int:
    value = obj.get(key, 1)
    if isinstance(value, str) and value.isdigit():
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
    flavor = get_str(obj, "flavorRef", DEFAULT_FLAVOR, nullable=True) or DEFAULT_FLAVOR
    image_name = get_str(obj, "imageRef", nullable=True) or None
    groups = _security_groups(obj.get("security_groups"))
    nets = _networks(obj.get("networks", "none"))
    get_str(obj, "description", nullable=True, max_len=255)
    _count(obj, "min_count")
    _count(obj, "max_count")

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
            image = None
            if image_name is not None:
                image = s.scalars(select(Image).where(Image.name == image_name)).first()
                if image is None:
                    image = Image(name=image_name)
                    s.add(image)
                    s.flush()
            inst = Instance(name=name, project_id=ctx.project_id, user_id=ctx.user_id,
                            availability_zone=az, flavor=flavor, image_id=image.id if image
                            else None, key_name=key_name, key_data=key_data,
                            user_data=user_data, properties=metadata, launch_index=0,
                            reservation_id=reservation_id(), security_groups=groups,
                            status="ACTIVE", hostname="")
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
    return placement.with_host(server_dict(inst, ports, networks, call.base_url), ports,
                               call.context)


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


def show_server(call: Call) -> Reply:
    with call.store.read() as s:
        inst = _find(s, call)
        ports = _ports_of(s, [inst.uuid])[inst.uuid]
        return Reply(200, {"server": _render(s, call, inst, ports)})


_LIST_FILTERS = {"name", "status", "availability_zone", "key_name", "project_id", "tenant_id",
                 "all_tenants", "limit", "marker", "sort_key", "sort_dir", "flavor", "image"}


def _list(call: Call, detail: bool) -> Reply:
    ctx = call.context
    unknown = {k for k, _ in call.query} - _LIST_FILTERS
    if unknown:
        raise BadRequest(f"Invalid filter(s): {', '.join(sorted(unknown))}")
    stmt = scoped(select(Instance), Instance, ctx).options(selectinload(Instance.image))
    # Nova treats `name` as a regular expression; it is applied in Python below so that a bad
    # pattern is a 400 and not a database error.
    name = call.query_values("name")
    for key, column in (("status", Instance.status),
                        ("availability_zone", Instance.availability_zone),
                        ("key_name", Instance.key_name)):
        values = call.query_values(key)
        if values:
            stmt = stmt.where(column.in_(values))
    projects = call.query_values("project_id") or call.query_values("tenant_id")
    if projects:
        stmt = stmt.where(Instance.project_id.in_(projects))
    with call.store.read() as s:
        rows = list(s.scalars(stmt.order_by(Instance.created_at.desc(), Instance.id.desc())))
        if name:
            try:
                patterns = [re.compile(n) for n in name]
            except re.error as exc:
                raise BadRequest(f"Invalid name filter: {exc}") from None
            rows = [r for r in rows if any(p.search(r.name) for p in patterns)]
        if not detail:
            return Reply(200, {"servers": [server_brief(r, call.base_url) for r in rows]})
        ports = _ports_of(s, [r.uuid for r in rows])
        net_ids = {p.network_id for ps in ports.values() for p in ps}
        networks = {n.id: n for n in s.scalars(select(Network).where(Network.id.in_(net_ids)))}
        return Reply(200, {"servers": [
            placement.with_host(server_dict(r, ports[r.uuid], networks, call.base_url),
                                ports[r.uuid], ctx) for r in rows]})


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


__all__ = ["create_server", "delete_server", "list_servers", "list_servers_detail",
           "sanitize_hostname", "show_server"]
