"""Helpers the Neutron-style resource modules share: lookups under project scope, list filters,
and retrying a write transaction that lost an address race."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, Select, select
from sqlalchemy.orm import Session

from openimds.control import ipam
from openimds.control.call import Call, parse_bool
from openimds.control.context import RequestContext, scoped
from openimds.control.errors import BadRequest, Forbidden, NotFound
from openimds.control.pagination import cut_items, keyset_page, page_links, page_request
from openimds.control.serializers import select_fields
from openimds.inventory import errors as inv
from openimds.inventory.models import Project

T = TypeVar("T")

# Query keys Neutron accepts on every list that are not attribute filters.
NON_FILTERS = frozenset({"fields", "limit", "marker", "sort_key", "sort_dir", "page_reverse"})
# Tag filters (standard-attr-tag): comma-separated tags, matched against the `tags` attribute.
TAG_FILTERS = frozenset({"tags", "tags-any", "not-tags", "not-tags-any"})


def not_found(kind: str, rid: str) -> NotFound:
    return NotFound(f"{kind} {rid} could not be found.", type=f"{kind}NotFound")


def get_visible(session: Session, model: Any, rid: str, ctx: RequestContext, kind: str, *,
                write: bool = False, shared: Any = None) -> Any:
    """The row `rid` if the caller may see (or, with `write`, change) it; 404 otherwise."""
    stmt = scoped(select(model).where(model.id == rid), model, ctx, write=write, shared=shared)
    row = session.scalars(stmt).first()
    if row is None:
        raise not_found(kind, rid)
    return row


def owner_project(session: Session, ctx: RequestContext, obj: Mapping[str, Any]) -> str:
    """The project a new resource belongs to: the caller's, or (admins only) the one named by
    `tenant_id`/`project_id` in the body."""
    requested = obj.get("project_id") or obj.get("tenant_id")
    if requested is None or requested == ctx.project_id:
        return ctx.project_id
    if not isinstance(requested, str):
        raise BadRequest("Invalid input for tenant_id: expected a string")
    if not ctx.is_admin:
        raise Forbidden("Only an admin may create resources in another project.")
    if session.get(Project, requested) is None:
        raise BadRequest(f"Project {requested} does not exist.", type="InvalidInput")
    return requested


@dataclass(frozen=True)
class ListSpec:
    """How a list filters: SQL columns by filter name (bool columns parse true/false); any
    other attribute of the serialised resource filters after serialisation."""

    model: Any
    columns: Mapping[str, Any]
    bool_columns: frozenset[str] = frozenset()
    attributes: frozenset[str] = field(default_factory=frozenset)


@dataclass
class Filters:
    sql: dict[str, ColumnElement[bool]]  # filter name -> condition
    post: dict[str, list[str]]
    fields: list[str]


def parse_filters(call: Call, spec: ListSpec, *, special: Sequence[str] = ()) -> Filters:
    """Neutron list filters: `?name=a&name=b` is name IN (a, b); repeated keys OR, distinct
    keys AND. Keys listed in `special` are left for the caller."""
    grouped: dict[str, list[str]] = {}
    for key, value in call.query:
        if key in NON_FILTERS or key in special:
            continue
        if key not in spec.columns and key not in spec.attributes and key not in TAG_FILTERS:
            raise BadRequest(f"Unknown filter {key!r} for this resource.", type="InvalidInput")
        grouped.setdefault(key, []).append(value)
    sql: dict[str, ColumnElement[bool]] = {}
    post: dict[str, list[str]] = {}
    for key, values in grouped.items():
        column = spec.columns.get(key)
        if column is None:
            post[key] = values
        elif key in spec.bool_columns:
            sql[key] = column.in_([parse_bool(v, key) for v in values])
        else:
            sql[key] = column.in_(values)
    fields = [f for v in call.query_values("fields") for f in v.split(",") if f]
    return Filters(sql, post, fields)


def _matches(value: Any, wanted: list[str]) -> bool:
    if isinstance(value, list):
        return any(str(item) in wanted for item in value)
    if isinstance(value, bool):
        return str(value).lower() in [w.lower() for w in wanted]
    if value is None:
        return "" in wanted or "None" in wanted
    return str(value) in wanted


def _tags_match(have: Any, key: str, values: list[str]) -> bool:
    held = set(have or [])
    wanted = {t for v in values for t in v.split(",") if t}
    if key == "tags":
        return wanted <= held
    if key == "tags-any":
        return bool(wanted & held)
    if key == "not-tags":
        return not wanted <= held
    return not wanted & held  # not-tags-any


def post_filter(items: list[dict[str, Any]], post: Mapping[str, list[str]]) -> list[dict[str, Any]]:
    if not post:
        return items
    return [i for i in items if all(
        _tags_match(i.get("tags"), k, v) if k in TAG_FILTERS else _matches(i.get(k), v)
        for k, v in post.items())]


def list_collection(call: Call, session: Session, stmt: Select[Any], *, model: Any,
                    order: Sequence[Any], serialize: Callable[[Any], dict[str, Any]],
                    filters: Filters, collection: str, path: str, kind: str) -> dict[str, Any]:
    """A Neutron list answer: filtered, in `order`, paged by limit/marker/page_reverse with
    `<collection>_links`. The page is cut in SQL unless a filter applies only after
    serialisation, when the filtered list is cut instead (same answer, more work)."""
    page = page_request(call)
    if filters.post or not page.paged:
        rows = session.scalars(stmt.order_by(None).order_by(*order))
        items, more = cut_items(post_filter([serialize(r) for r in rows], filters.post),
                                page, kind)
    else:
        page_rows, more = keyset_page(session, stmt, model, order, page, kind)
        items = [serialize(r) for r in page_rows]
    body: dict[str, Any] = {collection: select_fields(items, filters.fields)}
    links = page_links(call, path, page, items, more)
    if links:
        body[f"{collection}_links"] = links
    return body


def retry_on_race(fn: Callable[[], T], attempts: int = 10) -> T:
    """Run a whole write transaction again when a concurrent writer took the address or MAC we
    picked (PostgreSQL reports it at commit via the unique constraints). A clash on an address
    the caller asked for explicitly is detected before the write, so it is never retried. A
    retry picks its automatic addresses from a wider window (ipam.spread_for)."""
    for attempt in range(attempts):
        try:
            with ipam.race_attempt(attempt):
                return fn()
        except (inv.IpAddressInUse, inv.MacAddressInUse):
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")
