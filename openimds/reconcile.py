"""Level-triggered reconciliation by key, shared by the DHCP and L3 agents.

```
 InventoryReader ── snapshot() ──► Agent.snapshot ──► reconcile(key) = plan → observe → diff → apply
        │                                 ▲                 ▲
        └── changes(since, timeout) ──────┘ keys_for(change) │  WorkQueue (dedupe, timers, backoff)
 startup / resync every 60 s: every key of the inventory + orphans found on the host
```
* The feed only says *which* keys to look at (a network id, a router id); what to do is always
  recomputed from the latest snapshot, so create, update, delete, startup, timers and resyncs
  run one code path, and an id absent from the inventory converges to nothing (STYLE item 7).
* `WorkQueue` coalesces bursts (a key is queued at most once; a key re-added while it runs is
  run again afterwards), keeps one timer per key (the earliest), and requeues failures with
  exponential backoff. `TerminalError` means "do not retry until something changes".
* After each feed batch the agent advances its snapshot *incrementally*: it fetches only the
  rows the batch names (`fetch(resource, id)`, None once deleted) and replaces them in a copy
  (`advance_snapshot`, pure), so one port change costs one small GET, not a relisting of the
  inventory. A full listing happens only at start, for a batch over `incremental_limit`
  records, after a pruned feed, and on the periodic resync. Deleted rows are then gone, so a
  memo of (resource, id) → keys from earlier snapshots maps a deleted port or subnet to its
  network or router; a change that maps to nothing known enqueues every key (safe, rare).
* The inventory is declared here as the narrow `InventoryReader` protocol; `MemoryInventory`
  implements it for tests and demos, `ControlInventory` over the control-plane HTTP client.
  A reader raises `InventoryUnavailable` when the inventory cannot be read (the control plane
  is not up yet, restarting, or refuses our credentials): an expected condition, logged as one
  WARNING when it starts and one when it ends, never with a traceback, and retried.
* A reader raises `HistoryPruned` when the feed no longer holds what follows `since` (the
  control plane pruned it: HTTP 410): the agent then runs a full sync and watches from the
  revision of that snapshot, with one WARNING line.
"""

from __future__ import annotations

import abc
import asyncio
import collections
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from openimds.linux.logsink import LogSink
from openimds.linux.pidwatch import CrashBackoff, PidWatcher
from openimds.rows import compact_row

__all__ = [
    "RESOURCES",
    "Change",
    "ControlInventory",
    "HistoryPruned",
    "InventoryAgent",
    "InventoryReader",
    "InventoryUnavailable",
    "MemoryInventory",
    "Owners",
    "Snapshot",
    "TerminalError",
    "WorkQueue",
]

LOG = logging.getLogger(__name__)

RESOURCES = ("networks", "subnets", "ports", "routers")
_SINGULAR = {"network": "networks", "subnet": "subnets", "port": "ports", "router": "routers"}


class TerminalError(Exception):
    """The inventory asks for something that cannot be made real; retrying will not help."""


class HistoryPruned(Exception):
    """The change feed was pruned past the revision asked for: resynchronise from a snapshot."""


class InventoryUnavailable(Exception):
    """The inventory cannot be read right now (control plane down or refusing us); retried."""


class _Outage:
    """One log line when the inventory becomes unreadable and one when it is back."""

    def __init__(self, log: logging.Logger, name: str) -> None:
        self.log = log
        self.name = name
        self.down = False

    def failed(self, exc: InventoryUnavailable) -> None:
        if not self.down:
            self.down = True
            self.log.warning("%s: inventory unavailable (%s); keeping what is in place and "
                             "retrying", self.name, exc)

    def succeeded(self) -> None:
        if self.down:
            self.down = False
            self.log.warning("%s: inventory reachable again", self.name)


@dataclass(frozen=True)
class Change:
    revision: int
    resource: str  # "network" | "subnet" | "port" | "router" | others (ignored by agents)
    resource_id: str
    op: str  # "create" | "update" | "delete"


@dataclass(frozen=True)
class Snapshot:
    """Neutron-shaped dicts of the whole inventory as of `revision`."""

    revision: int
    networks: tuple[Mapping[str, Any], ...] = ()
    subnets: tuple[Mapping[str, Any], ...] = ()
    ports: tuple[Mapping[str, Any], ...] = ()
    routers: tuple[Mapping[str, Any], ...] = ()
    # Groupings made by `grouped`, kept with the snapshot (it never changes once made).
    _groups: dict[tuple[str, str], dict[str, tuple[Mapping[str, Any], ...]]] = field(
        default_factory=dict, init=False, compare=False, repr=False, hash=False)

    def ids(self, resource: str) -> set[str]:
        return {d["id"] for d in getattr(self, resource)}

    def grouped(self, resource: str, key: str) -> Mapping[str, tuple[Mapping[str, Any], ...]]:
        """The rows of `resource` by their `key` value (e.g. ports by network_id), in list
        order; rows without it are left out. Made once per snapshot: one pass over the rows
        instead of one per network (100k ports x 100 networks was seconds per change)."""
        found = self._groups.get((resource, key))
        if found is None:
            lists: dict[str, list[Mapping[str, Any]]] = {}
            for d in getattr(self, resource):
                value = d.get(key)
                if value:
                    lists.setdefault(str(value), []).append(d)
            found = {k: tuple(v) for k, v in lists.items()}
            self._groups[(resource, key)] = found
        return found

    def find(self, resource: str, rid: str) -> Mapping[str, Any] | None:
        return next((d for d in getattr(self, resource) if d["id"] == rid), None)


def changed_rows(changes: Iterable[Change]) -> dict[tuple[str, str], str]:
    """(plural resource, id) -> last op, for the rows of a batch that snapshots hold."""
    rows: dict[tuple[str, str], str] = {}
    for c in changes:
        plural = _SINGULAR.get(c.resource)
        if plural is not None:
            rows[(plural, c.resource_id)] = c.op
    return rows


def subnet_networks(old: Snapshot,
                    rows: Mapping[tuple[str, str], Mapping[str, Any] | None]) -> set[str]:
    """Networks whose row embeds a changed subnet (before or after the change)."""
    found: set[str] = set()
    for (resource, rid), row in rows.items():
        if resource != "subnets":
            continue
        for version in (old.find("subnets", rid), row):
            if version is not None and version.get("network_id"):
                found.add(str(version["network_id"]))
    return found


def advance_snapshot(old: Snapshot, rows: Mapping[tuple[str, str], Mapping[str, Any] | None],
                     revision: int) -> Snapshot:
    """`old` with each (resource, id) replaced by its new row (None = deleted). Updated rows
    keep their place and new ones go last, as the API lists by creation, so a plan that
    follows list order reads the same as after a full listing."""
    tables: dict[str, tuple[Mapping[str, Any], ...]] = {}
    for resource in RESOURCES:
        fresh = {rid: row for (res, rid), row in rows.items() if res == resource}
        current = getattr(old, resource)
        if not fresh:
            tables[resource] = current
            continue
        kept = [fresh.get(d["id"], d) for d in current]
        seen = {d["id"] for d in current}
        added = [row for rid, row in fresh.items() if rid not in seen and row is not None]
        tables[resource] = tuple(d for d in [*kept, *added] if d is not None)
    return Snapshot(max(revision, old.revision), **tables)


class InventoryReader(Protocol):
    async def snapshot(self) -> Snapshot: ...

    async def fetch(self, resource: str, rid: str) -> Mapping[str, Any] | None:
        """One row of `resource` (plural, as in RESOURCES) as listed, or None if gone."""
        ...

    async def changes(self, since: int, timeout: float) -> tuple[list[Change], int]:
        """Changes after `since` (waiting up to `timeout` for one) and the revision to pass
        as the next `since`."""
        ...


class MemoryInventory:
    """An in-memory InventoryReader: the tests' fake and a demo backend.

    `put`/`delete` bump the revision and record a change, like the real store does.
    """

    def __init__(self) -> None:
        self._rows: dict[str, dict[str, dict[str, Any]]] = {r: {} for r in RESOURCES}
        self.revision = 0
        self._log: list[Change] = []
        self._floor = 0  # revisions <= floor were pruned from _log
        self.snapshots = 0  # full listings served (tests check incremental behaviour)
        self.fetches = 0
        self._wake: asyncio.Event | None = None

    def put(self, resource: str, row: Mapping[str, Any]) -> int:
        plural = _SINGULAR.get(resource, resource)
        op = "update" if row["id"] in self._rows[plural] else "create"
        self._rows[plural][row["id"]] = dict(row)
        return self._record(plural, row["id"], op)

    def delete(self, resource: str, rid: str) -> int:
        plural = _SINGULAR.get(resource, resource)
        self._rows[plural].pop(rid, None)
        return self._record(plural, rid, "delete")

    def get(self, resource: str, rid: str) -> dict[str, Any] | None:
        return self._rows[_SINGULAR.get(resource, resource)].get(rid)

    async def fetch(self, resource: str, rid: str) -> Mapping[str, Any] | None:
        self.fetches += 1
        row = self.get(resource, rid)
        return dict(row) if row is not None else None

    def prune(self, upto: int) -> None:
        """Forget the changes up to revision `upto`, like the control plane's retention."""
        self._floor = max(self._floor, min(upto, self.revision))
        self._log = [c for c in self._log if c.revision > self._floor]

    def _record(self, plural: str, rid: str, op: str) -> int:
        self.revision += 1
        self._log.append(Change(self.revision, plural[:-1], rid, op))
        if self._wake is not None:
            self._wake.set()
        return self.revision

    async def snapshot(self) -> Snapshot:
        self.snapshots += 1
        return Snapshot(
            self.revision, *(tuple(dict(x) for x in self._rows[r].values()) for r in RESOURCES)
        )

    async def changes(self, since: int, timeout: float) -> tuple[list[Change], int]:
        if since < self._floor:
            raise HistoryPruned(f"revisions up to {self._floor} were pruned")
        deadline = time.monotonic() + timeout
        while True:
            found = [c for c in self._log if c.revision > since]
            remaining = deadline - time.monotonic()
            if found or remaining <= 0:
                return found, (found[-1].revision if found else since)
            self._wake = self._wake or asyncio.Event()
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), remaining)


class ControlInventory:
    """InventoryReader over `openimds.control.client.ControlClient` (`list(resource)` and
    `changes(since, timeout, limit)` returning a `ChangesPage`)."""

    def __init__(self, client: Any) -> None:
        self.client = client

    async def snapshot(self) -> Snapshot:
        # Read the revision *before* listing: a change committed during the listing then shows
        # up again in the feed instead of being missed.
        async with _client_errors("listing the inventory"):
            body = await self.client.changes(since=0, timeout=0, limit=0)
            revision = int(_get(body, "current_revision") or 0)
            # Compacted page by page: 100k ports as plain dicts were ~250 MB at once.
            lists = [_unwrap(await self.client.list(r, each=compact_row), r)
                     for r in RESOURCES]
        return Snapshot(revision, *(tuple(x) for x in lists))

    async def fetch(self, resource: str, rid: str) -> Mapping[str, Any] | None:
        from openimds.control.client import ApiError

        async with _client_errors(f"reading {resource} {rid}"):
            try:
                return compact_row(await self.client.get(resource, rid))
            except ApiError as exc:
                if exc.status == 404:  # deleted since the change was recorded
                    return None
                raise

    async def changes(self, since: int, timeout: float) -> tuple[list[Change], int]:
        async with _client_errors("reading the change feed"):
            body = await self.client.changes(since=since, timeout=timeout)
        items = [
            Change(int(c["revision"]), c["resource"], c["resource_id"], c["op"])
            for c in _get(body, "changes") or ()
        ]
        return items, int(_get(body, "revision") or since)


@contextlib.asynccontextmanager
async def _client_errors(what: str) -> AsyncIterator[None]:
    """The control-plane client's failures, translated once: InventoryUnavailable."""
    from openimds.control.client import ApiConnectionError, ApiError

    try:
        yield
    except ApiConnectionError as exc:
        raise InventoryUnavailable(f"{what}: {exc}") from exc
    except ApiError as exc:
        if exc.status == 410:
            raise HistoryPruned(f"{what}: {exc}") from exc
        hint = ""
        if exc.status in (401, 403):
            hint = (" (check auth_url/admin_user/admin_password/admin_tenant_name; the user "
                    "needs the service or admin role)")
        raise InventoryUnavailable(f"{what}: {exc}{hint}") from exc


def _get(body: Any, key: str) -> Any:
    return body.get(key) if isinstance(body, Mapping) else getattr(body, key, None)


def _unwrap(body: Any, key: str) -> list[Mapping[str, Any]]:
    if isinstance(body, Mapping):
        return list(body.get(key) or ())
    return list(body)


class WorkQueue:
    """Dedupe queue of keys with per-key timers and failure backoff (one asyncio loop)."""

    def __init__(self, *, base_delay: float = 0.5, max_delay: float = 60.0) -> None:
        self.base_delay = base_delay
        self.max_delay = max_delay
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._pending: set[str] = set()
        self._active: set[str] = set()
        self._again: set[str] = set()
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._failures: collections.Counter[str] = collections.Counter()

    def add(self, key: str) -> None:
        if key in self._active:
            self._again.add(key)  # run once more after the current run: it saw old data
        elif key not in self._pending:
            self._pending.add(key)
            self._queue.put_nowait(key)

    def add_after(self, key: str, delay: float) -> None:
        """Queue `key` in `delay` seconds; only the earliest timer per key is kept."""
        loop = asyncio.get_running_loop()
        when = loop.time() + max(0.0, delay)
        old = self._timers.get(key)
        if old is not None and not old.cancelled() and old.when() <= when:
            return
        if old is not None:
            old.cancel()
        self._timers[key] = loop.call_at(when, self._fire, key)

    def _fire(self, key: str) -> None:
        self._timers.pop(key, None)
        self.add(key)

    def add_rate_limited(self, key: str) -> float:
        self._failures[key] += 1
        delay = min(self.base_delay * 2 ** (self._failures[key] - 1), self.max_delay)
        self.add_after(key, delay)
        return delay

    def forget(self, key: str) -> None:
        self._failures.pop(key, None)

    async def get(self) -> str:
        key = await self._queue.get()
        self._pending.discard(key)
        self._active.add(key)
        return key

    def done(self, key: str) -> None:
        self._active.discard(key)
        if key in self._again:
            self._again.discard(key)
            self.add(key)

    def is_active(self, key: str) -> bool:
        return key in self._active

    def idle(self) -> bool:
        return not self._pending and not self._active and not self._again

    def scheduled(self) -> dict[str, float]:
        """key -> seconds until its timer fires (for logs and tests)."""
        loop = asyncio.get_running_loop()
        return {k: t.when() - loop.time() for k, t in self._timers.items() if not t.cancelled()}

    def close(self) -> None:
        for t in self._timers.values():
            t.cancel()
        self._timers.clear()


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


class InventoryAgent(abc.ABC):
    """Feed watcher + work queue + one worker running `reconcile_key` in a thread.

    Subclasses say which keys exist (`keys`), which keys a change touches (`owners`), which
    keys exist on the host (`orphan_keys`, e.g. namespaces and state dirs), and how to
    reconcile one key (`reconcile_key`: sync, may block on the kernel; returns when it
    wants to run again by time alone, or None).
    """

    name = "agent"

    def __init__(
        self,
        reader: InventoryReader,
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
        self._applied_revision = -1
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
        if self.snapshot is None or snap.revision >= self.snapshot.revision:
            self.snapshot = snap
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

    def keys_for(self, change: Change, old: Snapshot | None, new: Snapshot) -> set[str]:
        """Keys a change touches: its owners in the old and new snapshots and in the memo.
        A row known to touch nothing maps to nothing; a row never seen maps to every key."""
        ref = (change.resource, change.resource_id)
        known = False
        found: set[str] = set()
        for table in [self._owners_of(s) for s in (old, new) if s is not None] + [self._memo]:
            if ref in table:
                known = True
                found |= table[ref]
        if not known and change.resource in _SINGULAR:
            found = self.keys(new) | (self.keys(old) if old else set())
        return found

    async def full_sync(self) -> None:
        """Fresh snapshot, then every wanted key and every orphan."""
        snap = await self.reader.snapshot()
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
            except InventoryUnavailable as exc:
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
        failures = 0
        # Follow the feed's own revision, not the snapshot's: a change committed between the
        # feed answer and the snapshot is in the snapshot but its keys were never queued, so
        # it must still come through the feed.
        since = self.snapshot.revision if self.snapshot else 0
        while not self._stopping.is_set():
            try:
                changes, rev = await self.reader.changes(since, self.watch_timeout)
                if not changes:
                    since = max(since, rev)
                    continue
                old = self.snapshot
                new = await self._advance(old, changes, rev)
                failures = 0
                self._outage.succeeded()
            except HistoryPruned as exc:
                self.log.warning("%s: %s; resynchronising from a full listing", self.name, exc)
                try:
                    await self.full_sync()
                except InventoryUnavailable as down:
                    failures += 1
                    self._outage.failed(down)
                    await self._sleep(min(0.5 * 2**failures, 30.0))
                    continue
                failures = 0
                since = self.snapshot.revision if self.snapshot else since
                continue
            except InventoryUnavailable as exc:
                failures += 1
                self._outage.failed(exc)
                await self._sleep(min(0.5 * 2**failures, 30.0))
                continue
            except Exception:
                failures += 1
                self.log.exception("%s: change feed failed (%d in a row)", self.name, failures)
                await self._sleep(min(0.5 * 2**failures, 30.0))
                continue
            self._take(new)
            since = rev
            keys: set[str] = set()
            for c in changes:
                keys |= self.keys_for(c, old, new)
            self.log.debug("feed: %d changes up to r%d -> %s", len(changes), new.revision, keys)
            for key in sorted(keys):
                self.queue.add(key)

    async def _advance(self, old: Snapshot | None, changes: list[Change], rev: int) -> Snapshot:
        rows = changed_rows(changes)
        if old is None or len(rows) > self.incremental_limit:
            return await self.reader.snapshot()
        fetched: dict[tuple[str, str], Mapping[str, Any] | None] = {}
        for (resource, rid), op in rows.items():
            fetched[(resource, rid)] = (
                None if op == "delete" else await self.reader.fetch(resource, rid))
        # A network lists its subnets' ids, but a subnet's create or delete records no change
        # of the network row: refresh those networks too, so the result equals a listing.
        for network_id in subnet_networks(old, fetched):
            if ("networks", network_id) not in fetched:
                fetched[("networks", network_id)] = await self.reader.fetch("networks",
                                                                            network_id)
        return advance_snapshot(old, fetched, rev)

    async def _resync(self) -> None:
        while not self._stopping.is_set():
            await self._sleep(self.resync_interval)
            if self._stopping.is_set():
                return
            try:
                await self.full_sync()
                self._outage.succeeded()
            except InventoryUnavailable as exc:
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
        self._applied_revision = snap.revision
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


def ids_by_key(rows: Iterable[Mapping[str, Any]], key: str) -> dict[str, str]:
    """id -> row[key] for rows that have it (e.g. port id -> network id)."""
    return {r["id"]: r[key] for r in rows if r.get(key)}
