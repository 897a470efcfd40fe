"""The retiring mark of a distributed metadata port (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from openimds.metadata_retirement import (
    NEVER,
    RETIRING_KEY,
    retire_deadline,
    retired,
    retiring_until,
)

T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)


def test_deadline_is_one_lease_after_the_switch() -> None:
    assert retire_deadline(T0, 86400) == "2026-03-02T08:00:00Z"
    assert retire_deadline(T0, -1) == NEVER


def test_reading_the_mark() -> None:
    assert retiring_until(None) is None and retiring_until({}) is None
    assert retiring_until({"other": 1}) is None
    assert retiring_until({RETIRING_KEY: "2026-03-02T08:00:00Z"}) == T0 + timedelta(days=1)
    assert retiring_until({RETIRING_KEY: NEVER}) == NEVER
    # Unreadable: already past (the port goes rather than lingers).
    assert retired({RETIRING_KEY: "soon"}, T0)


def test_retired_from_the_deadline_on() -> None:
    mark = {RETIRING_KEY: retire_deadline(T0, 60)}
    assert not retired(mark, T0 + timedelta(seconds=59))
    assert retired(mark, T0 + timedelta(seconds=60))
    assert not retired({RETIRING_KEY: NEVER}, T0 + timedelta(days=10_000))
    assert not retired({}, T0)
