"""`/v2.1/flavors` (Nova shapes): list, detail, show, create and delete (admins), and the
always-empty `os-extra_specs` (openimds stores no extra specs; clients read the dict).

Flavors are sizes a server records; nothing is scheduled. Nova's five classic flavors
(m1.tiny … m1.xlarge, ids "1"…"5") are seeded by migration 0006. Private flavors
(`os-flavor-access:is_public` false) are visible to admins only (no flavor access lists).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from openimds.control.call import Call, Reply, get_bool, get_str, parse_bool, resource_body
from openimds.control.errors import BadRequest, Conflict, Forbidden, NotFound
from openimds.inventory.models import Flavor

CREATE_FIELDS = ("name", "ram", "vcpus", "disk", "id", "swap", "rxtx_factor",
                 "OS-FLV-EXT-DATA:ephemeral", "os-flavor-access:is_public", "description")


def _links(call: Call, fid: str) -> list[dict[str, str]]:
    return [{"rel": "self", "href": f"{call.base_url}/v2.1/flavors/{fid}"},
            {"rel": "bookmark", "href": f"{call.base_url}/flavors/{fid}"}]


def flavor_brief(call: Call, f: Flavor) -> dict[str, Any]:
    return {"id": f.id, "name": f.name, "links": _links(call, f.id)}


def flavor_detail(call: Call, f: Flavor) -> dict[str, Any]:
    return {
        **flavor_brief(call, f),
        "ram": f.ram,
        "vcpus": f.vcpus,
        "disk": f.disk,
        "OS-FLV-EXT-DATA:ephemeral": f.ephemeral,
        # Nova renders a zero swap as the empty string.
        "swap": f.swap or "",
        "rxtx_factor": 1.0,
        "os-flavor-access:is_public": f.is_public,
        "OS-FLV-DISABLED:disabled": False,
    }


def embedded_flavor(f: Flavor | None, original_name: str) -> dict[str, Any]:
    """A server's flavor from microversion 2.47 on: the sizes, not a link."""
    if f is None:
        return {"original_name": original_name}
    return {"original_name": f.name, "vcpus": f.vcpus, "ram": f.ram, "disk": f.disk,
            "ephemeral": f.ephemeral, "swap": f.swap, "extra_specs": {}}


def find_flavor(s: Session, call: Call, ref: str) -> Flavor:
    """A flavor the caller may use, by id first, then by name (what `--flavor` accepts)."""
    flavor = s.get(Flavor, ref)
    if flavor is None:
        flavor = s.scalars(select(Flavor).where(Flavor.name == ref)).first()
    if flavor is None or not (flavor.is_public or call.context.is_admin):
        raise NotFound(f"Flavor {ref} could not be found.")
    return flavor


def _listing(call: Call, detail: bool) -> Reply:
    stmt = select(Flavor)
    is_public = call.query_one("is_public")
    if not call.context.is_admin:
        stmt = stmt.where(Flavor.is_public.is_(True))
    elif is_public is not None and is_public.lower() != "none":
        stmt = stmt.where(Flavor.is_public.is_(parse_bool(is_public, "is_public")))
    for key, column in (("minRam", Flavor.ram), ("minDisk", Flavor.disk)):
        raw = call.query_one(key)
        if raw is not None:
            if not raw.isdigit():
                raise BadRequest(f"Invalid {key} filter [{raw}]")
            stmt = stmt.where(column >= int(raw))
    with call.store.read() as s:
        rows = list(s.scalars(stmt.order_by(Flavor.ram, Flavor.id)))
        marker = call.query_one("marker")
        if marker is not None:
            ids = [f.id for f in rows]
            if marker not in ids:
                raise BadRequest(f"marker [{marker}] not found")
            rows = rows[ids.index(marker) + 1:]
        limit = call.query_one("limit")
        if limit is not None:
            if not limit.isdigit():
                raise BadRequest(f"Invalid limit {limit!r}: expected a non-negative integer")
            rows = rows[:int(limit)]
        render = flavor_detail if detail else flavor_brief
        return Reply(200, {"flavors": [render(call, f) for f in rows]})


def list_flavors(call: Call) -> Reply:
    return _listing(call, detail=False)


def list_flavors_detail(call: Call) -> Reply:
    return _listing(call, detail=True)


def show_flavor(call: Call) -> Reply:
    with call.store.read() as s:
        flavor = s.get(Flavor, call.params["id"])
        if flavor is None or not (flavor.is_public or call.context.is_admin):
            raise NotFound(f"Flavor {call.params['id']} could not be found.")
        return Reply(200, {"flavor": flavor_detail(call, flavor)})


def show_extra_specs(call: Call) -> Reply:
    show_flavor(call)  # 404 for an unknown flavor
    return Reply(200, {"extra_specs": {}})


def _size(obj: dict[str, Any], key: str, *, minimum: int, default: int | None = None) -> int:
    value = obj.get(key, default)
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if value == "" and key == "swap":
        value = 0
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value < 2**31:
        raise BadRequest(f"Invalid input for field/attribute {key}: must be an integer "
                         f">= {minimum}")
    return value


def create_flavor(call: Call) -> Reply:
    if not call.context.is_admin:
        raise Forbidden("Policy doesn't allow os_compute_api:os-flavor-manage:create to be "
                        "performed.")
    obj = resource_body(call.body, "flavor", CREATE_FIELDS, required=("name", "ram", "vcpus",
                                                                      "disk"))
    name = get_str(obj, "name").strip()
    if not name:
        raise BadRequest("Invalid input for field/attribute name: must not be empty")
    fid = get_str(obj, "id", nullable=True) or None
    if fid is not None and (fid.strip() != fid or not fid or "/" in fid):
        raise BadRequest("Invalid input for field/attribute id: no spaces or '/' allowed")
    flavor = Flavor(name=name, ram=_size(obj, "ram", minimum=1),
                    vcpus=_size(obj, "vcpus", minimum=1), disk=_size(obj, "disk", minimum=0),
                    ephemeral=_size(obj, "OS-FLV-EXT-DATA:ephemeral", minimum=0, default=0),
                    swap=_size(obj, "swap", minimum=0, default=0),
                    is_public=get_bool(obj, "os-flavor-access:is_public", True),
                    description=get_str(obj, "description", nullable=True, max_len=65535)
                    or None)
    if fid is not None:
        flavor.id = fid
    with call.store.session() as s:
        clash = s.scalars(select(Flavor).where(Flavor.name == name)).first()
        if clash is not None or (fid is not None and s.get(Flavor, fid) is not None):
            raise Conflict(f"Flavor with name {name} or id {fid} already exists.")
        s.add(flavor)
        s.flush()
        return Reply(200, {"flavor": flavor_detail(call, flavor)})


def delete_flavor(call: Call) -> Reply:
    if not call.context.is_admin:
        raise Forbidden("Policy doesn't allow os_compute_api:os-flavor-manage:delete to be "
                        "performed.")
    with call.store.session() as s:
        flavor = s.get(Flavor, call.params["id"])
        if flavor is None:
            raise NotFound(f"Flavor {call.params['id']} could not be found.")
        # Servers keep their flavor's id and name (Nova keeps a copy on the instance).
        s.delete(flavor)
    return Reply(202)


__all__ = ["create_flavor", "delete_flavor", "embedded_flavor", "find_flavor", "flavor_brief",
           "flavor_detail", "list_flavors", "list_flavors_detail", "show_extra_specs",
           "show_flavor"]
