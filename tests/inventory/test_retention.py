"""The change feed's retention rule and gap detection (pure)."""

from __future__ import annotations

import pytest

from openimds.inventory.retention import Retention, first_gap, prune_upto


@pytest.mark.parametrize(
    ("top", "newest_expired", "retention", "expected"),
    [
        (0, None, Retention(60, 10), 0),            # empty feed: nothing to delete
        (5, None, Retention(60, 10), 0),            # under both bounds
        (25, None, Retention(60, 10), 15),          # count bound keeps the newest 10
        (25, 20, Retention(60, 10), 20),            # age bound is stricter here
        (25, 3, Retention(60, 10), 15),             # count bound is stricter here
        (25, 25, Retention(60, 10), 24),            # everything expired: the newest stays
        (25, 25, Retention(0, 10), 15),             # age bound off
        (25, 20, Retention(60, 0), 20),             # count bound off
        (25, 20, Retention(0, 0), 0),               # retention off
        (1, 1, Retention(60, 1), 0),                # a single row is never deleted
    ],
)
def test_prune_upto(top: int, newest_expired: int | None, retention: Retention,
                    expected: int) -> None:
    assert prune_upto(top, newest_expired, retention) == expected


@pytest.mark.parametrize(
    ("since", "first_found", "gap"),
    [(0, 1, False), (0, None, False), (10, 11, False), (10, 12, True), (0, 16, True),
     (20, None, False)],
)
def test_first_gap(since: int, first_found: int | None, gap: bool) -> None:
    assert first_gap(since, first_found) is gap
