"""MemoryFeed: the ChangeFeed in memory, for tests and demos.

It behaves as the control plane does through `ControlFeed`: `put`/`delete` bump the revision
and record a change (create, update or delete, as the store would), `prune` forgets history
(later polls from before it get FeedGap), and `set_down(True)` makes every call raise
FeedUnavailable, waking pending polls, like a control plane that went away.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping, Sequence
from typing import Any

from openimds.feed.errors import FeedGap, FeedUnavailable
from openimds.feed.kinds import Kind
from openimds.feed.records import ChangeBatch, ChangeRecord, Listing, ListSpec

__all__ = ["MemoryFeed"]


def _kind(resource: Kind | str) -> Kind:
    # Tests name kinds either way: "port" or "ports".
    try:
        return Kind(resource)
    except ValueError:
        return Kind.of_collection(resource)


class MemoryFeed:
    def __init__(self) -> None:
        self._rows: dict[Kind, dict[str, dict[str, Any]]] = {k: {} for k in Kind}
        self.revision = 0
        self.log: list[ChangeRecord] = []
        self._floor = 0  # revisions <= floor were pruned from the log
        self.down = False
        self.snapshots = 0  # full listings served (tests check incremental behaviour)
        self.fetches = 0
        # Set (and dropped) by every change; pollers wait on the one current when they looked.
        self._event: asyncio.Event | None = None

    # -- the inventory, as a test or demo changes it ------------------------------------------

    def put(self, resource: Kind | str, row: Mapping[str, Any]) -> int:
        kind = _kind(resource)
        op = "update" if row["id"] in self._rows[kind] else "create"
        self._rows[kind][row["id"]] = dict(row)
        return self._record(kind, row["id"], op)

    def delete(self, resource: Kind | str, rid: str) -> int:
        kind = _kind(resource)
        self._rows[kind].pop(rid, None)
        return self._record(kind, rid, "delete")

    def get(self, resource: Kind | str, rid: str) -> dict[str, Any] | None:
        return self._rows[_kind(resource)].get(rid)

    def rows(self, resource: Kind | str) -> list[dict[str, Any]]:
        """The current rows of a kind, in creation order."""
        return list(self._rows[_kind(resource)].values())

    def prune(self, upto: int) -> None:
        """Forget the changes up to revision `upto`, like the control plane's retention."""
        self._floor = max(self._floor, min(upto, self.revision))
        self.log = [c for c in self.log if c.revision > self._floor]

    def set_down(self, down: bool) -> None:
        self.down = down
        self._wake()

    def _record(self, kind: Kind, rid: str, op: str) -> int:
        self.revision += 1
        self.log.append(ChangeRecord(self.revision, kind, rid, op))
        self._wake()
        return self.revision

    def _wake(self) -> None:
        if self._event is not None:
            self._event.set()
            self._event = None

    def _check(self) -> None:
        if self.down:
            raise FeedUnavailable("the in-memory control plane is down")

    # -- ChangeFeed ---------------------------------------------------------------------------

    async def listing(self, kinds: Mapping[Kind, ListSpec]) -> Listing:
        self._check()
        self.snapshots += 1
        rows: dict[Kind, Sequence[Any]] = {}
        for kind, spec in kinds.items():
            out = []
            for row in self._rows[kind].values():
                item = dict(row) if spec.fields is None else {
                    k: row[k] for k in spec.fields if k in row}
                out.append(spec.each(item) if spec.each is not None else item)
            rows[kind] = out
        return Listing(self.revision, rows)

    async def fetch(self, kind: Kind, rid: str) -> Mapping[str, Any] | None:
        self._check()
        self.fetches += 1
        row = self._rows[kind].get(rid)
        return dict(row) if row is not None else None

    async def find(self, kind: Kind, **filters: str) -> Sequence[Mapping[str, Any]]:
        self._check()
        return [dict(r) for r in self._rows[kind].values()
                if all(r.get(k) == v for k, v in filters.items())]

    async def changes(self, since: int, timeout: float) -> ChangeBatch:
        deadline = time.monotonic() + timeout
        while True:
            self._check()
            if since < self._floor:
                raise FeedGap(f"revisions up to {self._floor} were pruned")
            found = [c for c in self.log if c.revision > since]
            remaining = deadline - time.monotonic()
            if found or remaining <= 0:
                return ChangeBatch(found, found[-1].revision if found else since)
            if self._event is None:
                self._event = asyncio.Event()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._event.wait(), remaining)
