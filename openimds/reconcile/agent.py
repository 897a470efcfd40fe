"""The agent framework: level-triggered reconciliation by key, shared by the DHCP, L3 and L2
agents.

```
 ChangeFeed ── listing() ──► Agent.snapshot ──► reconcile(key) = plan → observe → diff → apply
      │                            ▲                 ▲
      └── changes(since, timeout) ─┘ keys_for(change) │  WorkQueue (dedupe, timers, backoff)
 startup / resync every 60 s: every key of the inventory + orphans found on the host
```
* The feed only says *which* keys to look at (a network id, a router id); what to do is always
  recomputed from the latest snapshot, so create, update, delete, startup, timers and resyncs
  run one code path, and an id absent from the inventory converges to nothing (STYLE item 7).
* `WorkQueue` (queue.py) coalesces bursts and requeues failures with exponential backoff.
  `TerminalError` means "do not retry until something changes".
* After each feed batch the agent advances its snapshot *incrementally*: it fetches only the
  rows the batch names (`fetch(kind, id)`, None once deleted) and replaces them in a copy
  (`advance_snapshot`, pure, snapshot.py), so one port change costs one small GET, not a
  relisting of the inventory. A full listing happens only at start, for a batch over
  `incremental_limit` records, after a feed gap, and on the periodic resync. Deleted rows are
  then gone, so a memo of (kind, id) → keys from earlier snapshots maps a deleted port or
  subnet to its network or router; a change that maps to nothing known enqueues every key.
* Agents with `incremental_owners` (DHCP, L3, L2) answer "which keys does this row touch" from
  the row itself and the snapshot's groupings (`row_owners`), and reconcile a key from its own
  group of rows, so a port change at 100k ports costs its network's rows, not a pass over the
  inventory; their memo holds only rows gone from the inventory. A resync's listing reuses
  the rows the agent already holds, so it never holds two copies of the inventory.
* The inventory is read through `openimds.feed.ChangeFeed` (`ControlFeed` over the
  control-plane API, `MemoryFeed` for tests and demos). It raises `FeedUnavailable` when the
  inventory cannot be read (the control plane is not up yet, restarting, or refuses our
  credentials): an expected condition, logged as one WARNING when it starts and one when it
  ends, never with a traceback, and retried with backoff.
* It raises `FeedGap` when the feed no longer holds what follows `since` (the control plane
  pruned it: HTTP 410): the agent then runs a full sync and watches from the revision of that
  snapshot, with one WARNING line.
"""

from __future__ import annotations

import abc
import asyncio
import collections
import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from openimds.feed import (
    NETWORK_KINDS,
    Backoff,
    ChangeFeed,
    ChangeRecord,
    FeedGap,
    FeedUnavailable,
    Kind,
    ListSpec,
)
from openimds.linux.logsink import LogSink
from openimds.linux.pidwatch import CrashBackoff, PidWatcher
from openimds.reconcile.queue import WorkQueue
from openimds.reconcile.snapshot import (
    SNAPSHOT_LISTING,
    SNAPSHOT_TABLES,
    Snapshot,
    advance_snapshot,
    changed_rows,
    read_snapshot,
    subnet_networks,
)
from openimds.rows import compact_row

__all__ = ["MEMO_RETENTION", "Counters", "InventoryAgent", "Owners", "TerminalError"]


class TerminalError(Exception):
    """The inventory asks for something that cannot be made real; retrying will not help."""


class _Outage:
    """One log line when the inventory becomes unreadable and one when it is back."""

    def __init__(self, log: logging.Logger, name: str) -> None:
        self.log = log
        self.name = name
        self.down = False

    def failed(self, exc: FeedUnavailable) -> None:
        if not self.down:
            self.down = True
            self.log.warning("%s: inventory unavailable (%s); keeping what is in place and "
                             "retrying", self.name, exc)

    def succeeded(self) -> None:
        if self.down:
            self.down = False
            self.log.warning("%s: inventory reachable again", self.name)


class _RunLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        return f"[{self.extra['run']} {self.extra['key']}] {msg}", kwargs  # type: ignore[index]


@dataclass
class Counters:
    by_outcome: collections.Counter[str] = field(default_factory=collections.Counter)
    # Supervised children (dnsmasq, haproxy) seen exiting while no reconcile of theirs ran.
    child_exits: collections.Counter[str] = field(default_factory=collections.Counter)


# (resource singular, id) -> keys whose desired state depends on that row.
Owners = Mapping[tuple[str, str], AbstractSet[str]]

# How long a row that left the inventory still maps its late changes to its former owner.
MEMO_RETENTION = 600.0


def _reusing(listing: Mapping[Kind, ListSpec], snap: Snapshot | None) -> Mapping[Kind, ListSpec]:
    """`listing` whose rows equal to the ones `snap` holds come back as `snap`'s objects: a
    resync then holds one copy of the unchanged inventory, not two while the new listing is
    read (the DHCP agent's peak at 100k ports, issue 14)."""
    if snap is None:
        return listing

    def spec(kind: Kind, each: Callable[[dict[str, Any]], Any] | None) -> Callable[..., Any]:
        table = kind.collection

        def keep(raw: dict[str, Any]) -> Any:
            row = each(raw) if each is not None else raw
            old = snap.find(table, str(row.get("id"))) if isinstance(row, Mapping) else None
            return old if old is not None and old == row else row
        return keep

    return {kind: ListSpec(fields=s.fields, each=spec(kind, s.each))
            for kind, s in listing.items()}


class InventoryAgent(abc.ABC):
    """Feed watcher + work queue + one worker running `reconcile_key` in a thread.

    Subclasses say which keys exist (`keys`), which keys a change touches (`owners`), which
    keys exist on the host (`orphan_keys`, e.g. namespaces and state dirs), and how to
    reconcile one key (`reconcile_key`: sync, may block on the kernel; returns when it
    wants to run again by time alone, or None).
    """

    name = "agent"
    # What the full listing asks for (kinds, fields) and how each row is kept. An agent that
    # reads few of a port's attributes lists only those (issue 14: agent RSS at 100k ports);
    # rows fetched one by one after a change are cut to the same fields.
    listing: Mapping[Kind, ListSpec] = SNAPSHOT_LISTING
    # True when `row_owners` answers from the snapshot's rows and groupings without the
    # whole owners map: a change then costs the rows it touches, not a pass over the
    # inventory (issue 14, item 3), and the memo holds only rows gone from the inventory.
    incremental_owners = False

    def __init__(
        self,
        reader: ChangeFeed,
        *,
        resync_interval: float = 60.0,
        watch_timeout: float = 30.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        queue: WorkQueue | None = None,
        owns: Callable[[str], bool] | None = None,
        incremental_limit: int = 200,
    ) -> None:
        self.reader = reader
        # A batch naming more rows than this is cheaper to relist than to fetch row by row.
        self.incremental_limit = incremental_limit
        # Which keys found on the host (namespaces by prefix) are this agent's to remove.
        # Default: all of them (one agent of a kind per host); tests narrow it to their own
        # ids, because the machine may hold other namespaces of the same prefix.
        self.owns: Callable[[str], bool] = owns or (lambda key: True)
        self.resync_interval = resync_interval
        self.watch_timeout = watch_timeout
        self.clock = clock
        self.queue = queue or WorkQueue()
        self.snapshot: Snapshot | None = None
        self.counters = Counters()
        self.log = logging.getLogger(f"openimds.{self.name}")
        self._outage = _Outage(self.log, self.name)
        # (resource, id) -> keys seen in any snapshot; maps deletes to their former owner.
        # Rows gone from the inventory are forgotten after MEMO_RETENTION seconds (their
        # delete has long been handled), so the memo does not grow with churn forever.
        # Values are the owners maps' own set objects (shared, never changed in place): a
        # copy per row was ~26 MB at 100k ports.
        self._memo: dict[tuple[str, str], AbstractSet[str]] = {}
        self._memo_gone: dict[tuple[str, str], float] = {}
        self._owners_cache: list[tuple[Snapshot, Owners]] = []
        self._stopping = asyncio.Event()
        # Every child a reconcile leaves running is watched by pidfd: an exit requeues its key
        # at once (CrashBackoff spaces out a crash loop), instead of at the next resync.
        self.crash_backoff = CrashBackoff()
        self._watcher: PidWatcher | None = None
        # Where this agent's proxies log when the host has no /dev/log (linux/logsink.py).
        self.log_sink_path: str | None = None

    # -- hooks ---------------------------------------------------------------------------

    @abc.abstractmethod
    def keys(self, snap: Snapshot) -> set[str]:
        """Every key the inventory wants to exist."""

    @abc.abstractmethod
    def owners(self, snap: Snapshot) -> Owners:
        """(resource singular, id) -> keys whose desired state depends on that row. The sets
        are read-only once returned and may be shared between rows (one per network)."""

    @abc.abstractmethod
    def orphan_keys(self) -> set[str]:
        """Keys that have something on this host (namespaces, files, processes)."""

    @abc.abstractmethod
    def reconcile_key(
        self, key: str, snap: Snapshot, now: datetime, log: logging.LoggerAdapter[Any]
    ) -> datetime | None:
        """Make `key` match `snap`; return when the desired state changes by time alone."""

    def row_owners(self, snap: Snapshot, resource: str, rid: str) -> AbstractSet[str] | None:
        """Keys whose desired state depends on the row (resource singular, id) of `snap`;
        None when `snap` does not know the row. By default from the whole owners map (made
        once per snapshot); agents with `incremental_owners` answer from the row itself."""
        return self._owners_of(snap).get((resource, rid))

    def children(self, key: str) -> list[int]:
        """Pids of the long-running processes `key` has on this host (dnsmasq, haproxy),
        verified as ours; they are watched, and an exit reconciles `key` at once."""
        return []

    def prepare(self) -> None:  # noqa: B027 - optional hook
        """Once before the first reconcile (e.g. create the fabric namespace)."""

    # -- driving ---------------------------------------------------------------------------

    def _take(self, snap: Snapshot) -> None:
        # The watcher and the periodic resync both take snapshots, concurrently: never let an
        # older one replace a newer one (the watcher has already moved past its changes).
        previous = self.snapshot
        if self.snapshot is None or snap.revision >= self.snapshot.revision:
            self.snapshot = snap
        if self.incremental_owners:
            if self.snapshot is snap:  # an older snapshot taken late replaces nothing
                self._remember_gone(previous, snap)
            return
        owners = self._owners_of(snap)
        memo = self._memo
        for k, v in owners.items():
            seen = memo.get(k)
            if seen is None or seen is v:
                memo[k] = v
            elif not v <= seen:
                memo[k] = frozenset(seen | v)
        if self._memo_gone:
            for k in owners.keys() & self._memo_gone.keys():
                del self._memo_gone[k]
        now = time.monotonic()
        for k in self._memo.keys() - owners.keys():
            if now - self._memo_gone.setdefault(k, now) > MEMO_RETENTION:
                del self._memo[k], self._memo_gone[k]

    def _remember_gone(self, old: Snapshot | None, new: Snapshot,
                       refs: Iterable[tuple[str, str]] | None = None) -> None:
        """The memo of an agent with `incremental_owners`: the rows of `old` that `new`
        lacks (among `refs`, or all of them after a full listing), with their owners in
        `old`, kept MEMO_RETENTION seconds so a late change of theirs still finds them."""
        now = time.monotonic()
        if old is not None and old is not new:
            if refs is None:
                gone = [(Kind.of_collection(t).value, rid) for t in SNAPSHOT_TABLES
                        for rid in old.row_ids(t) if new.find(t, rid) is None]
            else:
                gone = [(r, rid) for r, rid in refs
                        if new.find(Kind(r).collection, rid) is None]
            for ref in gone:
                found = self.row_owners(old, *ref)
                if found is not None:
                    seen = self._memo.get(ref)
                    self._memo[ref] = found if seen is None else frozenset(seen | found)
                    self._memo_gone.setdefault(ref, now)
        for ref, since in list(self._memo_gone.items()):
            if new.find(Kind(ref[0]).collection, ref[1]) is not None:
                del self._memo_gone[ref], self._memo[ref]  # back: its rows answer again
            elif now - since > MEMO_RETENTION:
                del self._memo[ref], self._memo_gone[ref]

    def _owners_of(self, snap: Snapshot) -> Owners:
        # Computed once per snapshot, not once per change of a batch (a batch asks for the
        # old and the new snapshot's owners for every change it carries).
        for cached, owners in self._owners_cache:
            if cached is snap:
                return owners
        owners = self.owners(snap)
        # The old and the new snapshot of a batch are all keys_for asks for: keep two.
        self._owners_cache = [(snap, owners), *self._owners_cache[:1]]
        return owners

    def keys_for(self, change: ChangeRecord, old: Snapshot | None, new: Snapshot) -> set[str]:
        """Keys a change touches: its owners in the old and new snapshots and in the memo.
        A row known to touch nothing maps to nothing; a row never seen maps to every key."""
        ref = (change.resource, change.resource_id)
        known = False
        found: set[str] = set()
        if change.resource in NETWORK_KINDS:
            for snap in (old, new):
                if snap is not None:
                    owners = self.row_owners(snap, *ref)
                    if owners is not None:
                        known = True
                        found |= owners
        if ref in self._memo:
            known = True
            found |= self._memo[ref]
        if not known and change.resource in NETWORK_KINDS:
            found = self.keys(new) | (self.keys(old) if old else set())
        return found

    async def full_sync(self) -> None:
        """Fresh snapshot, then every wanted key and every orphan."""
        snap = await read_snapshot(self.reader, _reusing(self.listing, self.snapshot))
        orphans = await asyncio.to_thread(self.orphan_keys)
        # Take the snapshot and queue its keys in one step (no await between), so nobody
        # sees the new revision with an idle queue before its keys are queued.
        self._take(snap)
        for key in sorted(self.keys(snap) | orphans):
            self.queue.add(key)

    async def run(self) -> None:
        """Run until `stop()`; startup = prepare + full sync, then watch, work and resync."""
        await asyncio.to_thread(self.prepare)
        self._watcher = PidWatcher(self._child_exited)
        sink = LogSink(self.log_sink_path) if self.log_sink_path else None
        if sink is not None:
            await sink.start()
        while not self._stopping.is_set():
            try:
                await self.full_sync()
                self._outage.succeeded()
                break
            except FeedUnavailable as exc:
                self._outage.failed(exc)  # e.g. started before the control plane
                await self._sleep(2.0)
            except Exception:
                self.log.exception("%s: initial inventory read failed; retrying", self.name)
                await self._sleep(2.0)
        tasks = [
            asyncio.create_task(self._worker(), name=f"{self.name}-worker"),
            asyncio.create_task(self._watch(), name=f"{self.name}-watch"),
            asyncio.create_task(self._resync(), name=f"{self.name}-resync"),
        ]
        try:
            await self._stopping.wait()
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self.queue.close()
            if self._watcher is not None:
                self._watcher.close()
                self._watcher = None
            if sink is not None:
                sink.close()

    def _child_exited(self, key: str, pid: int) -> None:
        """A watched child is gone (crash, kill -9, OOM, or our own stop/reload)."""
        if self._stopping.is_set():
            return
        if self.queue.is_active(key):
            # Most likely the running reconcile replaced it; look again right after anyway.
            self.queue.add(key)
            return
        delay = self.crash_backoff.record(key, time.monotonic())
        self.counters.child_exits[key] += 1
        self.log.warning("[%s] child pid %d exited; reconciling in %.2fs", key, pid, delay)
        if delay <= 0:
            self.queue.add(key)
        else:
            self.queue.add_after(key, delay)

    def stop(self) -> None:
        self._stopping.set()

    async def _sleep(self, seconds: float) -> None:
        # Loops check `_stopping` themselves: asyncio.wait_for (3.11) can swallow a cancel
        # when the awaited event is already set, so never rely on cancellation alone.
        if self._stopping.is_set():
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _watch(self) -> None:
        # 1 s, 2 s, 4 s ... 30 s after consecutive failures; without jitter, as it always was.
        backoff = Backoff(initial=1.0, maximum=30.0, jitter=0.0)
        # Follow the feed's own revision, not the snapshot's: a change committed between the
        # feed answer and the snapshot is in the snapshot but its keys were never queued, so
        # it must still come through the feed.
        since = self.snapshot.revision if self.snapshot else 0
        while not self._stopping.is_set():
            try:
                batch = await self.reader.changes(since, self.watch_timeout)
                changes, rev = batch.records, batch.revision
                if not changes:
                    since = max(since, rev)
                    continue
                old = self.snapshot
                new = await self._advance(old, changes, rev)
                backoff.reset()
                self._outage.succeeded()
            except FeedGap as exc:
                self.log.warning("%s: %s; resynchronising from a full listing", self.name, exc)
                try:
                    await self.full_sync()
                except FeedUnavailable as down:
                    self._outage.failed(down)
                    await self._sleep(backoff.next_delay())
                    continue
                backoff.reset()
                since = self.snapshot.revision if self.snapshot else since
                continue
            except FeedUnavailable as exc:
                self._outage.failed(exc)
                await self._sleep(backoff.next_delay())
                continue
            except Exception:
                delay = backoff.next_delay()
                self.log.exception("%s: change feed failed (%d in a row)", self.name,
                                   backoff.attempts)
                await self._sleep(delay)
                continue
            if self.incremental_owners and old is not None:
                self._take_advanced(old, new, changes)
            else:
                self._take(new)
            since = rev
            keys: set[str] = set()
            for c in changes:
                keys |= self.keys_for(c, old, new)
            self.log.debug("feed: %d changes up to r%d -> %s", len(changes), new.revision, keys)
            for key in sorted(keys):
                self.queue.add(key)

    def _take_advanced(self, old: Snapshot, new: Snapshot,
                       changes: Sequence[ChangeRecord]) -> None:
        """`_take` for a snapshot advanced by a batch: the memo looks only at its rows."""
        if self.snapshot is None or new.revision >= self.snapshot.revision:
            self.snapshot = new
        self._remember_gone(old, new, {(c.resource, c.resource_id) for c in changes
                                       if c.resource in NETWORK_KINDS})

    async def _advance(self, old: Snapshot | None, changes: Sequence[ChangeRecord],
                       rev: int) -> Snapshot:
        rows = changed_rows(changes)
        if old is None or len(rows) > self.incremental_limit:
            return await read_snapshot(self.reader, _reusing(self.listing, old))
        fetched: dict[tuple[str, str], Mapping[str, Any] | None] = {}
        for (resource, rid), op in rows.items():
            fetched[(resource, rid)] = (
                None if op == "delete" else await self._fetch(Kind.of_collection(resource), rid))
        # A network lists its subnets' ids, but a subnet's create or delete records no change
        # of the network row: refresh those networks too, so the result equals a listing.
        networks = Kind.NETWORK.collection
        for network_id in subnet_networks(old, fetched):
            if (networks, network_id) not in fetched:
                fetched[(networks, network_id)] = await self._fetch(Kind.NETWORK, network_id)
        return advance_snapshot(old, fetched, rev)

    async def _fetch(self, kind: Kind, rid: str) -> Mapping[str, Any] | None:
        row = await self.reader.fetch(kind, rid)
        if row is None:
            return None
        spec = self.listing.get(kind)
        if spec is not None and spec.fields is not None:
            row = {k: row[k] for k in spec.fields if k in row}
        return compact_row(row)

    async def _resync(self) -> None:
        while not self._stopping.is_set():
            await self._sleep(self.resync_interval)
            if self._stopping.is_set():
                return
            try:
                await self.full_sync()
                self._outage.succeeded()
            except FeedUnavailable as exc:
                self._outage.failed(exc)
            except Exception:
                self.log.exception("%s: periodic resync failed", self.name)

    async def _worker(self) -> None:
        while not self._stopping.is_set():
            key = await self.queue.get()
            try:
                await self.reconcile_once(key)
            finally:
                self.queue.done(key)

    async def reconcile_once(self, key: str) -> str:
        """Reconcile one key against the current snapshot; returns the outcome name."""
        snap = self.snapshot
        if snap is None:
            raise RuntimeError("reconcile before the first snapshot")
        run_id = uuid.uuid4().hex[:8]
        log = _RunLog(self.log, {"run": run_id, "key": key})
        started = time.monotonic()
        try:
            next_at = await asyncio.to_thread(self.reconcile_key, key, snap, self.clock(), log)
        except TerminalError as exc:
            outcome = "terminal"
            log.error("not retried until the inventory changes: %s", exc)
            self.queue.forget(key)
        except Exception as exc:
            outcome = "error"
            delay = self.queue.add_rate_limited(key)
            log.warning("failed (%s); retry in %.1fs", exc, delay, exc_info=True)
        else:
            outcome = "ok"
            self.queue.forget(key)
            if next_at is not None:
                delay = (next_at - self.clock()).total_seconds()
                # A little after the boundary: the plan's window is half-open.
                self.queue.add_after(key, max(0.0, delay) + 0.05)
                log.info("requeued for %s (in %.1fs)", next_at.isoformat(), delay)
        self.counters.by_outcome[outcome] += 1
        await self._watch_children(key, log)
        log.debug("%s in %.0f ms (r%d)", outcome, (time.monotonic() - started) * 1000, snap.revision)
        return outcome

    async def _watch_children(self, key: str, log: logging.LoggerAdapter[Any]) -> None:
        if self._watcher is None:
            return
        try:
            pids = await asyncio.to_thread(self.children, key)
        except Exception as exc:  # a /proc race: the next reconcile looks again
            log.warning("could not list children: %s", exc)
            return
        self._watcher.sync(key, pids)

    def synced_revision(self) -> int | None:
        """The inventory revision this agent has fully applied: its snapshot's, once every key
        is reconciled (queue idle); None before the first pass is done. Reported in the
        agent's `configurations` so operators (and tests) can tell when it has caught up."""
        snap = self.snapshot
        if snap is None or not self.queue.idle():
            return None
        return snap.revision

    async def wait_synced(self, revision: int, timeout: float = 10.0) -> None:
        """Until the agent has seen `revision` and its queue is idle (for tests and demos)."""
        deadline = time.monotonic() + timeout
        while True:
            snap = self.snapshot
            if snap is not None and snap.revision >= revision and self.queue.idle():
                return
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{self.name} not synced to r{revision} after {timeout}s "
                    f"(at r{snap.revision if snap else None}, idle={self.queue.idle()})"
                )
            await asyncio.sleep(0.02)
