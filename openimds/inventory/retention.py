"""How much of the change feed to keep: a pure rule, so it is table-tested without a database.

Revisions are contiguous (every allocated revision has exactly one `changes` row, allocated in
the same transaction), so the feed can replay from `since` exactly when the oldest row it still
holds is `since + 1` or older. Pruning removes a prefix and never the newest row, so a caller
that is up to date never sees a gap.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Retention:
    """Keep a change while it is among the newest `max_count` *and* younger than
    `max_age_seconds`; 0 disables that bound. The newest change is always kept."""

    max_age_seconds: float = 86400.0
    max_count: int = 100_000


def prune_upto(top: int, newest_expired: int | None, retention: Retention) -> int:
    """The highest revision to delete (0 = nothing), given the newest revision `top` and the
    newest revision older than the age bound (`newest_expired`, None when there is none)."""
    bound = 0
    if retention.max_count > 0:
        bound = max(bound, top - retention.max_count)
    if retention.max_age_seconds > 0 and newest_expired is not None:
        bound = max(bound, newest_expired)
    return max(0, min(bound, top - 1))


def first_gap(since: int, first_found: int | None) -> bool:
    """True when the oldest change returned after `since` is not `since + 1`: the history in
    between was pruned and the caller must resynchronise."""
    return first_found is not None and first_found > since + 1
