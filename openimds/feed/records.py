"""The change feed's values and the one interface its consumers read it through.

    ChangeRecord   one committed change: (revision, kind, id, op). The inventory store makes
                   them, the control-plane API serves them (`as_dict`), every reader parses
                   them back (`from_dict`).
    ChangeBatch    the records after `since` plus the revision to pass as the next `since`.
    Listing        a full listing of some kinds, read after the revision it carries, so
                   watching from that revision replays anything committed during the listing.
    ChangeFeed     listing / fetch / find / changes. `ControlFeed` implements it over the
                   control-plane API, `MemoryFeed` in memory (tests and demos). Each consumer
                   builds its own view from a listing: the metadata agent an index of ports,
                   the network agents a snapshot of networks, subnets, ports and routers.

Records name a resource, not its new state: readers refetch what a record names.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from openimds.feed.kinds import Kind

__all__ = ["ChangeBatch", "ChangeFeed", "ChangeRecord", "ListSpec", "Listing"]


@dataclass(frozen=True)
class ChangeRecord:
    revision: int
    # A `Kind` value; a kind this version does not know (a newer control plane) stays a
    # plain string, which consumers ignore.
    resource: str
    resource_id: str
    op: str  # "create" | "update" | "delete"

    def as_dict(self) -> dict[str, Any]:
        return {
            "revision": self.revision,
            "resource": str(self.resource),
            "resource_id": self.resource_id,
            "op": self.op,
        }

    @classmethod
    def from_dict(cls, c: Mapping[str, Any]) -> ChangeRecord:
        return cls(int(c["revision"]), str(c["resource"]), str(c["resource_id"]), str(c["op"]))


@dataclass(frozen=True)
class ChangeBatch:
    records: Sequence[ChangeRecord]
    revision: int  # pass as the next `since`


@dataclass(frozen=True)
class ListSpec:
    """How to list one kind: only `fields` (None: all), each row passed through `each` as it
    arrives (page by page over HTTP: 100k whole ports as dicts at once were ~250 MB)."""

    fields: tuple[str, ...] | None = None
    each: Callable[[dict[str, Any]], Any] | None = None


@dataclass(frozen=True)
class Listing:
    """Every row of the kinds asked for, as of `revision` (read before the rows)."""

    revision: int
    rows: Mapping[Kind, Sequence[Any]] = field(default_factory=dict)

    def of(self, kind: Kind) -> Sequence[Any]:
        return self.rows.get(kind, ())


class ChangeFeed(Protocol):
    async def listing(self, kinds: Mapping[Kind, ListSpec]) -> Listing:
        """Every row of each kind in `kinds`, with the revision read before them."""
        ...

    async def fetch(self, kind: Kind, rid: str) -> Mapping[str, Any] | None:
        """One row as listed, or None once it is gone."""
        ...

    async def find(self, kind: Kind, **filters: str) -> Sequence[Mapping[str, Any]]:
        """The rows of `kind` whose attributes equal `filters` (e.g. ports by device_id)."""
        ...

    async def changes(self, since: int, timeout: float) -> ChangeBatch:
        """Records after `since`, waiting up to `timeout` seconds for one."""
        ...
