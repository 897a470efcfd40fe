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
* After each feed batch the agent takes a fresh snapshot: deleted rows are then gone, so a
  memo of (resource, id) → keys from earlier snapshots maps a deleted port or subnet to its
  network or router; a change that maps to nothing known enqueues every key (safe, rare).
* The inventory is declared here as the narrow `InventoryReader` protocol; `MemoryInventory`
  implements it for tests and demos, `ControlInventory` over the control-plane HTTP client.
"""

from __future__ import annotations

import abc
import asyncio
import collections
import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from openimds.linux.logsink import LogSink
from openimds.linux.pidwatch import CrashBackoff, PidWatcher

__all__ = [
    "RESOURCES",
    "Change",
    "ControlInventory",
    "InventoryAgent",
    "InventoryReader",
    "MemoryInventory",
    "Snapshot",
    "TerminalError",
    "WorkQueue",
]

LOG = logging.getLogger(__name__)

RESOURCES = ("networks", "subnets", "ports", "routers")
_SINGULAR = {"network": "networks", "subnet": "subnets", "port": "ports", "router": "routers"}


class TerminalError(Exception):
    """The inventory asks for something that cannot be made real; retrying will not help."""


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

    def ids(self, resource: str) -> set[str]:
        return {d["id"] for d in getattr(self, resource)}

    def find(self, resource: str, rid: str) -> Mapping[str, Any] | None:
        return next((d for d in getattr(self, resource) if d["id"] == rid), None)


class InventoryReader(Protocol):
    async def snapshot(self) -> Snapshot: ...

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

    def _record(self, plural: str, rid: str, op: str) -> int:
        self.revision += 1
        self._log.append(Change(self.revision, plural[:-1], rid, op))
        if self._wake is not None:
            self._wake.set()
        return self.revision

    async def snapshot(self) -> Snapshot:
        return Snapshot(
            self.revision, *(tuple(dict(x) for x in self._rows[r].values()) for r in RESOURCES)
        )

    async def changes(self, since: int, timeout: float) -> tuple[list[Change], int]:
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
        body = await self.client.changes(since=0, timeout=0, limit=0)
        revision = int(_get(body, "current_revision") or 0)
        lists = [_unwrap(await self.client.list(r), r) for r in RESOURCES]
        return Snapshot(revision, *(tuple(x) for x in lists))

    async def changes(self, since: int, timeout: float) -> tuple[list[Change], int]:
        body = await self.client.changes(since=since, timeout=timeout)
        items = [
            Change(int(c["revision"]), c["resource"], c["resource_id"], c["op"])
            for c in _get(body, "changes") or ()
        ]
        return items, int(_get(body, "revision") or since)


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
    ) -> None:
        self.reader = reader
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
        # (resource, id) -> keys seen in any snapshot; maps deletes to their former owner.
        # Rows gone from the inventory are forgotten after MEMO_RETENTION seconds (their
        # delete has long been handled), so the memo does not grow with churn forever.
        self._memo: dict[tuple[str, str], set[str]] = {}
        self._memo_gone: dict[tuple[str, str], float] = {}
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
    def owners(self, snap: Snapshot) -> dict[tuple[str, str], set[str]]:
        """(resource singular, id) -> keys whose desired state depends on that row."""

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
        owners = self.owners(snap)
        for k, v in owners.items():
            self._memo.setdefault(k, set()).update(v)
            self._memo_gone.pop(k, None)
        now = time.monotonic()
        for k in self._memo.keys() - owners.keys():
            if now - self._memo_gone.setdefault(k, now) > MEMO_RETENTION:
                del self._memo[k], self._memo_gone[k]

    def keys_for(self, change: Change, old: Snapshot | None, new: Snapshot) -> set[str]:
        """Keys a change touches: its owners in the old and new snapshots and in the memo.
        A row known to touch nothing maps to nothing; a row never seen maps to every key."""
        ref = (change.resource, change.resource_id)
        known = False
        found: set[str] = set()
        for table in [self.owners(s) for s in (old, new) if s is not None] + [self._memo]:
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
                break
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
                new = await self.reader.snapshot()
                failures = 0
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

    async def _resync(self) -> None:
        while not self._stopping.is_set():
            await self._sleep(self.resync_interval)
            if self._stopping.is_set():
                return
            try:
                await self.full_sync()
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
