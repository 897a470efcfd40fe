"""Neutron tags (`standard-attr-tag`) on networks, subnets, ports, routers and security groups:
`/v2.0/{collection}/{id}/tags[/{tag}]`, and the `tags`, `tags-any`, `not-tags`,
`not-tags-any` list filters (resources.py applies them).

A tag is 1-255 characters without a comma (commas separate tags in the filters); a resource
holds at most 50. Adding an existing tag or removing the whole set is idempotent, as in Neutron.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from openimds.control.call import Call, Reply
from openimds.control.errors import BadRequest, NotFound
from openimds.control.ports import shared_network
from openimds.control.resources import get_visible
from openimds.inventory.models import Network, Port, Router, SecurityGroup, Subnet

MAX_TAGS = 50
COLLECTIONS: dict[str, tuple[Any, str]] = {
    "networks": (Network, "Network"),
    "subnets": (Subnet, "Subnet"),
    "ports": (Port, "Port"),
    "routers": (Router, "Router"),
    "security-groups": (SecurityGroup, "SecurityGroup"),
}


def _row(s: Session, call: Call, *, write: bool) -> Any:
    collection = call.params["collection"]
    if collection not in COLLECTIONS:
        raise NotFound(f"Tags are not supported on {collection}.")
    model, kind = COLLECTIONS[collection]
    shared = shared_network() if model is Network and not write else None
    return get_visible(s, model, call.params["id"], call.context, kind, write=write,
                       shared=shared)


def check_tag(value: Any) -> str:
    if not isinstance(value, str) or not 1 <= len(value) <= 255 or "," in value:
        raise BadRequest(f"Invalid tag {value!r}: 1-255 characters, no comma",
                         type="InvalidInput")
    return value


def list_tags(call: Call) -> Reply:
    with call.store.read() as s:
        return Reply(200, {"tags": list(_row(s, call, write=False).tags or [])})


def replace_tags(call: Call) -> Reply:
    raw = call.body.get("tags") if isinstance(call.body, dict) else None
    if not isinstance(raw, list):
        raise BadRequest('request body must be {"tags": ["tag", ...]}')
    tags = list(dict.fromkeys(check_tag(t) for t in raw))
    if len(tags) > MAX_TAGS:
        raise BadRequest(f"At most {MAX_TAGS} tags per resource.")
    with call.store.session() as s:
        _row(s, call, write=True).tags = tags
    return Reply(200, {"tags": tags})


def delete_tags(call: Call) -> Reply:
    with call.store.session() as s:
        _row(s, call, write=True).tags = []
    return Reply(204)


def show_tag(call: Call) -> Reply:
    with call.store.read() as s:
        if call.params["tag"] not in (_row(s, call, write=False).tags or []):
            raise NotFound(f"Tag {call.params['tag']} could not be found.", type="TagNotFound")
    return Reply(204)


def add_tag(call: Call) -> Reply:
    tag = check_tag(call.params["tag"])
    with call.store.session() as s:
        row = _row(s, call, write=True)
        tags = list(row.tags or [])
        if tag not in tags:
            if len(tags) >= MAX_TAGS:
                raise BadRequest(f"At most {MAX_TAGS} tags per resource.")
            row.tags = [*tags, tag]
    return Reply(201)


def remove_tag(call: Call) -> Reply:
    tag = call.params["tag"]
    with call.store.session() as s:
        row = _row(s, call, write=True)
        if tag not in (row.tags or []):
            raise NotFound(f"Tag {tag} could not be found.", type="TagNotFound")
        row.tags = [t for t in row.tags or [] if t != tag]
    return Reply(204)


__all__ = ["COLLECTIONS", "add_tag", "check_tag", "delete_tags", "list_tags", "remove_tag",
           "replace_tags", "show_tag"]
