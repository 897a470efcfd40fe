"""openimds.feed.control: the control-plane client's failures translated once, for every
consumer. The client is replaced by a small object raising the client's own exceptions; the
whole path against a real control plane is in tests/agent/test_control_e2e.py and
tests/test_agents_quiet_outage.py."""

from __future__ import annotations

from typing import Any

import pytest

from openimds.control.client import ApiConnectionError, ApiError, ChangesPage
from openimds.feed import ControlFeed, FeedGap, FeedUnavailable, Kind, api_errors


async def _raise(exc: Exception) -> None:
    async with api_errors("reading the change feed"):
        raise exc


@pytest.mark.parametrize(("exc", "expected", "text"), [
    (ApiConnectionError("connection refused"), FeedUnavailable,
     "reading the change feed: connection refused"),
    (ApiError(503, "ServiceUnavailable", "down"), FeedUnavailable, "down (HTTP 503)"),
    (ApiError(401, "Unauthorized", "bad token"), FeedUnavailable,
     "check auth_url/admin_user/admin_password/admin_tenant_name"),
    (ApiError(403, "Forbidden", "no role"), FeedUnavailable, "service or admin role"),
    (ApiError(410, "Gone", "pruned"), FeedGap, "pruned (HTTP 410)"),
])
async def test_client_errors_become_feed_errors(exc: Exception, expected: type[Exception],
                                                text: str) -> None:
    with pytest.raises(expected, match=text.replace("(", r"\(").replace(")", r"\)")) as info:
        await _raise(exc)
    assert info.value.__cause__ is exc


async def test_other_exceptions_are_bugs_and_propagate() -> None:
    with pytest.raises(KeyError):
        await _raise(KeyError("x"))


class _Client:
    """Answers like ControlClient: ChangesPage for the feed, rows or ApiError for GETs."""

    def __init__(self, current: int, rows: dict[tuple[str, str], dict[str, Any]]) -> None:
        self.current = current
        self.rows = rows

    async def changes(self, since: int, timeout: float = 0.0,
                      limit: int | None = None) -> ChangesPage:
        changes = [{"revision": self.current, "resource": "port", "resource_id": "p1",
                    "op": "update"}] if since < self.current else []
        return ChangesPage(changes, max(since, self.current), self.current)

    async def get(self, resource: str, rid: str) -> dict[str, Any]:
        if rid == "boom":
            raise ApiError(500, "InternalServerError", "the database is down")
        if (resource, rid) not in self.rows:
            raise ApiError(404, "NotFound", f"{resource} {rid} not found")
        return self.rows[(resource, rid)]


async def test_changes_parse_records_and_a_revision_behind_ours_is_a_gap() -> None:
    feed = ControlFeed(_Client(5, {}))  # type: ignore[arg-type]
    batch = await feed.changes(4, 0)
    assert [(c.revision, c.resource, c.resource_id, c.op) for c in batch.records] == [
        (5, Kind.PORT, "p1", "update")]
    assert batch.revision == 5
    # A restored or replaced database: the feed is behind what we have seen.
    with pytest.raises(FeedGap, match="at revision 5, behind our 9"):
        await feed.changes(9, 0)


async def test_fetch_of_a_deleted_row_is_none_other_errors_translate() -> None:
    feed = ControlFeed(_Client(1, {("ports", "p1"): {"id": "p1"}}))  # type: ignore[arg-type]
    assert await feed.fetch(Kind.PORT, "p1") == {"id": "p1"}
    assert await feed.fetch(Kind.PORT, "gone") is None
    with pytest.raises(FeedUnavailable, match="reading ports boom: the database is down"):
        await feed.fetch(Kind.PORT, "boom")
