"""The image service, `/image/v2/images` (Glance v2 shapes): list, show, create, delete.

Images are records without bytes: name, Glance UUID, formats, visibility, sizes and free-form
properties — what `server create --image` resolves and what the metadata trees name (`ami-id`
is `ami-%08x` of the record's integer id, as Nova's EC2 id mapping gives). Status is `active`
from creation, since there is nothing to upload.

Visibility follows Glance: `public` (and `community`) images are visible to everyone, `private`
and `shared` ones to their owner project (admins see all). Only admins publish public images.
Names are unique (round 1 referenced images by name).
"""

from __future__ import annotations

import hashlib
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from openimds.control.call import Call, Reply, is_uuid
from openimds.control.errors import BadRequest, Conflict, Forbidden, NotFound
from openimds.control.serializers import iso
from openimds.inventory.models import Image, Instance

VISIBILITIES = ("public", "private", "shared", "community")
DISK_FORMATS = ("ami", "ari", "aki", "vhd", "vhdx", "vmdk", "raw", "qcow2", "vdi", "iso",
                "ploop")
CONTAINER_FORMATS = ("ami", "ari", "aki", "bare", "ovf", "ova", "docker", "compressed")
# Attributes of the image itself; every other key of a create body is a property.
CORE = frozenset({"name", "id", "visibility", "disk_format", "container_format", "min_disk",
                  "min_ram", "protected", "tags", "os_hidden"})
READ_ONLY = frozenset({"status", "owner", "size", "virtual_size", "checksum", "created_at",
                       "updated_at", "self", "file", "schema", "direct_url", "locations",
                       "os_hash_algo", "os_hash_value"})


def image_dict(img: Image) -> dict[str, Any]:
    path = f"/v2/images/{img.uuid}"
    return {
        **{str(k): v for k, v in (img.properties or {}).items()},
        "id": img.uuid,
        "name": img.name,
        "status": "active",
        "visibility": img.visibility,
        "protected": img.protected,
        "os_hidden": False,
        "disk_format": img.disk_format,
        "container_format": img.container_format,
        "min_disk": img.min_disk,
        "min_ram": img.min_ram,
        "size": img.size,
        "virtual_size": None,
        "checksum": img.checksum,
        "os_hash_algo": "sha512" if img.os_hash_value else None,
        "os_hash_value": img.os_hash_value,
        "owner": img.owner,
        "tags": [],
        "created_at": iso(img.created_at),
        "updated_at": iso(img.updated_at),
        "self": path,
        "file": f"{path}/file",
        "schema": "/v2/schemas/image",
    }


def _visible(call: Call) -> Any:
    ctx = call.context
    if ctx.is_admin:
        return None
    return or_(Image.visibility.in_(("public", "community")), Image.owner == ctx.project_id)


def find_image(s: Session, call: Call, ref: str) -> Image | None:
    """A visible image by Glance id, or by name; None when there is none."""
    stmt = select(Image).where(Image.uuid == ref if is_uuid(ref) else Image.name == ref)
    cond = _visible(call)
    if cond is not None:
        stmt = stmt.where(cond)
    return s.scalars(stmt).first()


def _get(s: Session, call: Call) -> Image:
    image_id = call.params["id"]
    image = find_image(s, call, image_id) if is_uuid(image_id) else None
    if image is None:
        raise NotFound(f"No image found with ID {image_id}")
    return image


def list_images(call: Call) -> Reply:
    stmt = select(Image)
    cond = _visible(call)
    if cond is not None:
        stmt = stmt.where(cond)
    for key, column in (("name", Image.name), ("visibility", Image.visibility),
                        ("owner", Image.owner), ("disk_format", Image.disk_format),
                        ("container_format", Image.container_format)):
        value = call.query_one(key)
        if value is not None and not (key == "visibility" and value == "all"):
            stmt = stmt.where(column == value)
    status = call.query_one("status")
    if status is not None and status != "active":
        return Reply(200, {"images": [], "first": "/v2/images", "schema": "/v2/schemas/images"})
    with call.store.read() as s:
        rows = list(s.scalars(stmt.order_by(Image.created_at.desc(), Image.id.desc())))
        return Reply(200, _page(call, rows))


def _page(call: Call, rows: list[Image]) -> dict[str, Any]:
    marker = call.query_one("marker")
    if marker is not None:
        ids = [i.uuid for i in rows]
        if marker not in ids:
            raise BadRequest(f"Invalid marker. Image {marker} could not be found.")
        rows = rows[ids.index(marker) + 1:]
    body: dict[str, Any] = {"first": "/v2/images", "schema": "/v2/schemas/images"}
    limit = call.query_one("limit")
    if limit is not None:
        if not limit.isdigit():
            raise BadRequest("limit param must be an integer")
        if len(rows) > int(limit):
            rows = rows[:int(limit)]
            if rows:
                body["next"] = f"/v2/images?marker={rows[-1].uuid}&limit={limit}"
    body["images"] = [image_dict(i) for i in rows]
    return body


def show_image(call: Call) -> Reply:
    with call.store.read() as s:
        return Reply(200, image_dict(_get(s, call)))


def _choice(obj: dict[str, Any], key: str, allowed: tuple[str, ...], default: str | None
            ) -> str | None:
    value = obj.get(key, default)
    if value is not None and value not in allowed:
        raise BadRequest(f"Invalid value '{value}' for {key}: use one of {', '.join(allowed)}")
    return value


def _non_negative(obj: dict[str, Any], key: str) -> int:
    value = obj.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**31:
        raise BadRequest(f"Invalid value for {key}: expected a non-negative integer")
    return value


def create_image(call: Call) -> Reply:
    obj = call.body
    if not isinstance(obj, dict):
        raise BadRequest("The request body must be a JSON object of image attributes.")
    forbidden = sorted(set(obj) & READ_ONLY)
    if forbidden:
        raise Forbidden(f"Attribute '{forbidden[0]}' is read-only.")
    name = obj.get("name")
    if not isinstance(name, str) or not name.strip() or len(name) > 255:
        raise BadRequest("An image needs a name of 1-255 characters.")
    visibility = _choice(obj, "visibility", VISIBILITIES, "shared")
    if visibility == "public" and not call.context.is_admin:
        raise Forbidden("You are not authorized to publicize an image (admins only).")
    image_id = obj.get("id")
    if image_id is not None and (not isinstance(image_id, str) or not is_uuid(image_id)):
        raise BadRequest("Invalid id: expected a UUID")
    protected = obj.get("protected", False)
    if not isinstance(protected, bool):
        raise BadRequest("Invalid value for protected: expected true or false")
    properties = {k: v for k, v in obj.items() if k not in CORE}
    for key, value in properties.items():
        if len(key) > 255 or not isinstance(value, str) or len(value) > 65535:
            raise BadRequest(f"Invalid property {key!r}: properties are strings")
    image = Image(name=name, owner=call.context.project_id, visibility=visibility,
                  disk_format=_choice(obj, "disk_format", DISK_FORMATS, None),
                  container_format=_choice(obj, "container_format", CONTAINER_FORMATS, None),
                  min_disk=_non_negative(obj, "min_disk"), min_ram=_non_negative(obj, "min_ram"),
                  protected=protected, properties=properties)
    if image_id is not None:
        image.uuid = image_id.lower()
    with call.store.session() as s:
        clash = s.scalars(select(Image).where(or_(Image.name == name,
                                                  Image.uuid == image.uuid))).first()
        if clash is not None:
            raise Conflict(f"An image named {name!r} (or with that id) already exists.")
        s.add(image)
        s.flush()
        return Reply(201, image_dict(image))


def upload_image_file(call: Call) -> Reply:
    """`PUT /v2/images/{id}/file`: the upload is measured (size, MD5 checksum, SHA-512 hash,
    as Glance reports them) and not kept. `openstack image create` uploads its standard input
    when it is not a terminal, so this is what makes that command work."""
    data = call.body if isinstance(call.body, bytes) else b""
    with call.store.session() as s:
        image = _get(s, call)
        if not (call.context.is_admin or image.owner == call.context.project_id):
            raise Forbidden("You are not permitted to upload data to this image.")
        if image.size is not None:
            raise Conflict(f"Image {image.uuid} already has data (status active).")
        image.size = len(data)
        image.checksum = hashlib.md5(data, usedforsecurity=False).hexdigest()
        image.os_hash_value = hashlib.sha512(data).hexdigest()
    return Reply(204)


def delete_image(call: Call) -> Reply:
    with call.store.session() as s:
        image = _get(s, call)
        if not (call.context.is_admin or image.owner == call.context.project_id):
            raise Forbidden("You are not permitted to delete this image.")
        if image.protected:
            raise Forbidden(f"Image {image.uuid} is protected and cannot be deleted.")
        used = s.scalars(select(Instance.uuid).where(Instance.image_id == image.id)).first()
        if used is not None:
            raise Conflict(f"Image {image.uuid} is in use by server {used}; delete the "
                           "server first.")
        s.delete(image)
    return Reply(204)


__all__ = ["create_image", "delete_image", "upload_image_file", "find_image", "image_dict", "list_images",
           "show_image"]
