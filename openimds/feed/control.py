"""ControlFeed: the ChangeFeed over the control-plane API (`openimds.control.client`).

    listing(kinds)   GET /v2.0/changes?limit=0 (the current revision C), then list each kind;
                     watching from C replays anything committed during the listing.
    changes(since)   GET /v2.0/changes?since=N&timeout=S (long poll)
    fetch(kind, id)  GET /v2.0/<collection>/{id}, 404 -> None
    find(kind, ...)  GET /v2.0/<collection>?attr=value

The client's exceptions are translated here, once, for every consumer (`api_errors`):
connection errors, auth failures and 5xx become FeedUnavailable (the consumer keeps what it
has, backs off and retries); 410 (history pruned past our revision) and a feed whose revision
went backwards (a restored or replaced database) are a FeedGap (full resync). The user needs
the `service` or `admin` role to read the change feed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

from openimds.control.client import ApiConnectionError, ApiError, ControlClient
from openimds.feed.errors import FeedGap, FeedUnavailable
from openimds.feed.kinds import Kind
from openimds.feed.records import ChangeBatch, ChangeRecord, Listing, ListSpec

__all__ = ["ControlFeed", "api_errors"]


@asynccontextmanager
async def api_errors(what: str) -> AsyncIterator[None]:
    """The control-plane client's failures as FeedUnavailable / FeedGap, with `from exc`."""
    try:
        yield
    except ApiConnectionError as exc:
        raise FeedUnavailable(f"{what}: {exc}") from exc
    except ApiError as exc:
        if exc.status == 410:
            raise FeedGap(f"{what}: {exc}") from exc
        hint = ""
        if exc.status in (401, 403):
            hint = (" (check auth_url/admin_user/admin_password/admin_tenant_name; the user "
                    "needs the service or admin role)")
        raise FeedUnavailable(f"{what}: {exc}{hint}") from exc


class ControlFeed:
    def __init__(self, client: ControlClient) -> None:
        self.client = client

    async def aclose(self) -> None:
        await self.client.close()

    async def listing(self, kinds: Mapping[Kind, ListSpec]) -> Listing:
        async with api_errors("reading the inventory"):
            # The revision *before* the rows: a change committed during the listing then shows
            # up again in the feed instead of being missed.
            head = await self.client.changes(since=0, timeout=0, limit=0)
            rows: dict[Kind, Sequence[Any]] = {}
            for kind, spec in kinds.items():
                filters: dict[str, Any] = {}
                if spec.fields is not None:
                    filters["fields"] = list(spec.fields)
                rows[kind] = await self.client.list(kind.collection, each=spec.each, **filters)
        return Listing(head.current_revision, rows)

    async def changes(self, since: int, timeout: float) -> ChangeBatch:
        async with api_errors("reading the change feed"):
            page = await self.client.changes(since=since, timeout=timeout)
        if page.current_revision < since:
            raise FeedGap(f"the control plane is at revision {page.current_revision}, "
                          f"behind our {since}")
        return ChangeBatch([ChangeRecord.from_dict(c) for c in page.changes], page.revision)

    async def fetch(self, kind: Kind, rid: str) -> Mapping[str, Any] | None:
        async with api_errors(f"reading {kind.collection} {rid}"):
            try:
                return await self.client.get(kind.collection, rid)
            except ApiError as exc:
                if exc.status == 404:  # deleted since the change was recorded
                    return None
                raise

    async def find(self, kind: Kind, **filters: str) -> Sequence[Mapping[str, Any]]:
        query: dict[str, Any] = dict(filters)
        async with api_errors(f"listing {kind.collection} by {filters}"):
            return await self.client.list(kind.collection, **query)
