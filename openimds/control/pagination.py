"""Neutron list pagination: `limit`, `marker`, `page_reverse` and the `<collection>_links`.

A page is cut in SQL (keyset on the list's sort columns) so an agent's snapshot of 100k ports
streams in pages without the API building the whole list; when a filter can only be applied
after serialisation, the already-filtered list is cut the same way in Python. Semantics follow
Neutron's native pagination helper: one row more than `limit` is read to know whether a `next`
link is due; a `previous` link appears when the request named a marker; `page_reverse` walks
backwards and still returns the page in ascending order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from sqlalchemy import Select, tuple_
from sqlalchemy.orm import Session

from openimds.control.call import Call, parse_bool
from openimds.control.errors import BadRequest, NotFound

__all__ = ["PageRequest", "cut_items", "keyset_page", "page_links", "page_request"]

# Neutron answers a list without `limit` in full; a client may ask for at most this many rows
# in one page so one request never builds an unbounded answer on purpose.
MAX_LIMIT = 10000


@dataclass(frozen=True)
class PageRequest:
    limit: int | None  # None: the whole list (Neutron's limit=0 too)
    marker: str | None
    reverse: bool

    @property
    def paged(self) -> bool:
        return self.limit is not None or self.marker is not None


def page_request(call: Call) -> PageRequest:
    """Parse `limit`/`marker`/`page_reverse`; 400 with Neutron's wording on a bad limit."""
    raw = call.query_values("limit")
    limit: int | None = None
    if raw:
        text = raw[-1]
        try:
            value = int(text)
        except ValueError:
            value = -1
        if value < 0:
            raise BadRequest(f"Limit must be an integer 0 or greater and not '{text}'",
                             type="InvalidInput")
        limit = min(value, MAX_LIMIT) if value else None
    markers = call.query_values("marker")
    reverse_values = call.query_values("page_reverse")
    reverse = bool(reverse_values) and parse_bool(reverse_values[-1], "page_reverse")
    return PageRequest(limit, markers[-1] if markers else None, reverse)


def keyset_page(session: Session, stmt: Select[Any], model: Any, order: Sequence[Any],
                page: PageRequest, kind: str) -> tuple[list[Any], bool]:
    """The rows of one page of `stmt` in ascending `order` (which must end with a unique
    column) and whether more rows lie beyond it in the walking direction."""
    if page.marker is not None:
        # Found through the list's own statement, so a marker the caller may not see (or
        # that the filters exclude) is a 404, never a hint of where that row sorts.
        anchor = session.scalars(stmt.where(model.id == page.marker).order_by(None)
                                 .limit(1)).first()
        if anchor is None:
            raise NotFound(f"{kind} {page.marker} could not be found.", type=f"{kind}NotFound")
        key = tuple_(*order)
        values = tuple_(*[getattr(anchor, col.key) for col in order])
        stmt = stmt.where(key < values if page.reverse else key > values)
    stmt = stmt.order_by(None).order_by(*[c.desc() if page.reverse else c for c in order])
    if page.limit is not None:
        stmt = stmt.limit(page.limit + 1)
    rows = list(session.scalars(stmt))
    more = page.limit is not None and len(rows) > page.limit
    if more:
        rows = rows[:page.limit]
    if page.reverse:
        rows.reverse()
    return rows, more


def cut_items(items: list[dict[str, Any]], page: PageRequest,
              kind: str, ident: Callable[[dict[str, Any]], str] = lambda i: str(i["id"]),
              ) -> tuple[list[dict[str, Any]], bool]:
    """The same cut on an already ordered, already filtered list (post-serialisation filters)."""
    if page.marker is not None:
        ids = [ident(i) for i in items]
        if page.marker not in ids:
            raise NotFound(f"{kind} {page.marker} could not be found.", type=f"{kind}NotFound")
        at = ids.index(page.marker)
        items = items[:at] if page.reverse else items[at + 1:]
    if page.limit is None:
        return items, False
    more = len(items) > page.limit
    if not more:
        return items, False
    return (items[-page.limit:] if page.reverse else items[:page.limit]), True


def page_links(call: Call, path: str, page: PageRequest, items: Sequence[dict[str, Any]],
               more: bool) -> list[dict[str, str]]:
    """Neutron's `next`/`previous` links for a page; the other query keys are kept."""
    if not page.paged or not items:
        return []
    kept = [(k, v) for k, v in call.query if k not in ("marker", "page_reverse")]

    def link(rel: str, marker: str, reverse: bool) -> dict[str, str]:
        query = [*kept, ("marker", marker)] + ([("page_reverse", "True")] if reverse else [])
        return {"rel": rel, "href": f"{call.base_url}{path}?{urlencode(query)}"}

    first, last = str(items[0]["id"]), str(items[-1]["id"])
    links = []
    # Walking forward: more rows → next; a marker means rows lie behind → previous.
    # Walking backward the roles swap.
    if (more and not page.reverse) or (page.reverse and page.marker is not None):
        links.append(link("next", last, False))
    if (page.marker is not None and not page.reverse) or (more and page.reverse):
        links.append(link("previous", first, True))
    return links
