"""The inventory store: transactions, constraint enforcement, revisions and the change feed.

One `Store` per process. Writers use `with store.session() as s:`; the transaction commits on
exit or rolls back entirely on any exception, so nothing is ever half-written. Each committed
write allocates one global revision per changed row (under the revision counter's row lock, so
revisions become visible in commit order) and records it in `changes`.

`changes_since(rev, timeout)` returns newer changes at once or waits up to `timeout` seconds,
and raises `ChangesPruned` when `prune_changes` already removed part of what follows `rev`.
Waiters wake on an in-process condition (any commit through this Store), on PostgreSQL
LISTEN/NOTIFY (commits from any process), and otherwise on a short poll (SQLite written by
another process).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, delete, event, func, select, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from openimds.feed.records import ChangeRecord
from openimds.inventory.errors import (
    ChangesPruned,
    Conflict,
    InUse,
    InvalidValue,
    IpAddressInUse,
    MacAddressInUse,
    SegmentInUse,
    StoreUnavailable,
)
from openimds.inventory.models import TRACKED, Change, FixedIP, RevisionCounter
from openimds.inventory.retention import Retention, first_gap, prune_upto
from openimds.inventory.validate import validate_flush

LOG = logging.getLogger(__name__)
NOTIFY_CHANNEL = "openimds_changes"
# Cross-process SQLite writers cannot signal us; this bounds how late a waiter notices them.
POLL_INTERVAL = 0.1


def sqlite_url_for_state_dir(state_path: str) -> str:
    return f"sqlite:///{Path(state_path) / 'openimds.sqlite'}"


def normalize_url(url: str) -> str:
    """Accept `postgresql://` URLs (and OpenStack's `postgresql+psycopg2://`) with psycopg 3."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def _make_engine(url: str, *, immediate: bool) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Take over transaction control so we can BEGIN IMMEDIATE for writers: a deferred
        # transaction that reads then writes can fail with SQLITE_BUSY instead of waiting.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


def _translate(exc: DBAPIError, had_deletes: bool) -> Exception:
    text = str(exc.orig).lower()
    if isinstance(exc, IntegrityError):
        if "fixed_ips" in text and "ip_address" in text:
            return IpAddressInUse("IP address already in use on this subnet")
        if "segment_key" in text:
            return SegmentInUse("the network segment is already in use")
        if "ports" in text and "mac_address" in text:
            return MacAddressInUse("MAC address already in use on this network")
        if "foreign key" in text:
            if had_deletes:
                return InUse("the resource is still in use by other resources")
            return InvalidValue("a referenced resource does not exist")
        if "unique" in text or "duplicate" in text:
            return Conflict("a resource with these unique values already exists")
        return InvalidValue("the change violates a database constraint")
    if isinstance(exc, OperationalError):
        return StoreUnavailable("the inventory database is unavailable; retry shortly")
    return StoreUnavailable("the inventory database failed; retry shortly")


class Store:
    """Access to the inventory database; see the module docstring."""

    def __init__(self, url: str) -> None:
        self.url = normalize_url(url)
        self.backend = make_url(self.url).get_backend_name()
        self._write_engine = _make_engine(self.url, immediate=True)
        self._read_engine = (
            _make_engine(self.url, immediate=False)
            if self.backend == "sqlite"
            else self._write_engine
        )
        self._writer = sessionmaker(self._write_engine, expire_on_commit=False)
        self._reader = sessionmaker(self._read_engine, expire_on_commit=False)
        self._cond = threading.Condition()
        self._generation = 0
        self._listener: threading.Thread | None = None
        self._listener_lock = threading.Lock()
        self._closed = threading.Event()
        event.listen(self._writer, "before_flush", self._before_flush)
        event.listen(self._writer, "after_flush", self._after_flush)
        event.listen(self._writer, "before_commit", self._before_commit)
        event.listen(self._writer, "after_commit", self._after_commit)

    # ---- transactions -------------------------------------------------------------------
    @contextmanager
    def session(self) -> Iterator[Session]:
        """A write transaction: commit on success, roll back everything on error."""
        session = self._writer()
        try:
            yield session
            session.commit()
        except DBAPIError as exc:
            _end(session)
            had_deletes = bool(session.info.get("had_deletes"))
            raise _translate(exc, had_deletes) from exc
        except BaseException:
            _end(session)
            raise
        finally:
            session.close()

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A read-only session (never commits)."""
        session = self._reader()
        try:
            yield session
        except DBAPIError as exc:
            raise _translate(exc, False) from exc
        finally:
            _end(session)
            session.close()

    def release_waiters(self) -> None:
        """Make every pending and future `changes_since` return at once (process shutdown)."""
        self._closed.set()
        with self._cond:
            self._cond.notify_all()

    def dispose(self) -> None:
        self.release_waiters()
        self._write_engine.dispose()
        self._read_engine.dispose()

    # ---- change recording -------------------------------------------------------------------
    @staticmethod
    def _before_flush(session: Session, _ctx: Any, _instances: Any) -> None:
        validate_flush(session)
        if session.deleted:
            session.info["had_deletes"] = True

    @staticmethod
    def _after_flush(session: Session, _ctx: Any) -> None:
        # new/dirty/deleted still show the pre-flush state here, and generated ids are set.
        pending: dict[tuple[str, str], str] = session.info.setdefault("changes", {})

        def note(resource: str, rid: str, op: str) -> None:
            key = (resource, rid)
            previous = pending.get(key)
            # A row's own create/delete outranks an "update" implied by its child rows.
            if previous in ("create", "delete") and op == "update":
                return
            if previous == "create" and op == "delete":
                pending.pop(key)
                return
            pending[key] = op

        for obj in session.new:
            name = TRACKED.get(type(obj))
            if name:
                note(name, _resource_id(obj), "create")
            elif isinstance(obj, FixedIP):
                note("port", obj.port_id, "update")
        for obj in session.dirty:
            name = TRACKED.get(type(obj))
            if name and session.is_modified(obj):
                note(name, _resource_id(obj), "update")
            elif isinstance(obj, FixedIP) and session.is_modified(obj):
                note("port", obj.port_id, "update")
        for obj in session.deleted:
            name = TRACKED.get(type(obj))
            if name:
                note(name, _resource_id(obj), "delete")
            elif isinstance(obj, FixedIP):
                note("port", obj.port_id, "update")

    def _before_commit(self, session: Session) -> None:
        session.flush()
        pending: dict[tuple[str, str], str] = session.info.pop("changes", {})
        if not pending:
            return
        # Row lock on the counter: concurrent writers serialise here, so a reader that has
        # seen revision N can never later find a commit with a revision below N.
        top = session.execute(
            update(RevisionCounter)
            .where(RevisionCounter.id == 1)
            .values(value=RevisionCounter.value + len(pending))
            .returning(RevisionCounter.value)
        ).scalar_one()
        first = top - len(pending) + 1
        for offset, ((resource, rid), op) in enumerate(pending.items()):
            session.add(Change(revision=first + offset, resource=str(resource), resource_id=rid,
                               op=op))
        session.info["committed_revision"] = top
        session.flush()
        if self.backend == "postgresql":
            session.execute(select(_pg_notify(str(top))))

    def _after_commit(self, session: Session) -> None:
        if session.info.pop("committed_revision", None) is not None:
            self._wake()

    def _wake(self) -> None:
        with self._cond:
            self._generation += 1
            self._cond.notify_all()

    # ---- the change feed -------------------------------------------------------------------
    def current_revision(self) -> int:
        with self.read() as s:
            return int(
                s.scalar(select(RevisionCounter.value).where(RevisionCounter.id == 1)) or 0
            )

    def _fetch_since(self, revision: int, limit: int) -> list[ChangeRecord]:
        with self.read() as s:
            rows = s.scalars(
                select(Change).where(Change.revision > revision).order_by(Change.revision).limit(limit)
            ).all()
            return [ChangeRecord(r.revision, r.resource, r.resource_id, r.op) for r in rows]

    def changes_since(
        self, revision: int, timeout: float = 0.0, limit: int = 1000
    ) -> list[ChangeRecord]:
        """Changes with revision > `revision`, oldest first; waits up to `timeout` for one."""
        deadline = time.monotonic() + max(0.0, timeout)
        if timeout > 0 and self.backend == "postgresql":
            self._ensure_listener()
        while True:
            with self._cond:
                generation = self._generation
            found = self._fetch_since(revision, limit)
            if first_gap(revision, found[0].revision if found else None):
                raise ChangesPruned(revision, found[0].revision - 1)
            remaining = deadline - time.monotonic()
            if found or remaining <= 0 or self._closed.is_set():
                return found
            with self._cond:
                if self._generation == generation:
                    self._cond.wait(min(remaining, POLL_INTERVAL))

    def prune_changes(self, retention: Retention, *, now: datetime | None = None,
                      batch: int = 10_000) -> int:
        """Delete the changes `retention` no longer keeps, oldest first, in batches (short
        transactions, so writers never wait long); returns how many rows went."""
        cutoff = (now or datetime.now(UTC)) - timedelta(seconds=retention.max_age_seconds)
        with self.read() as s:
            top = int(s.scalar(select(RevisionCounter.value).where(RevisionCounter.id == 1)) or 0)
            newest_expired = s.scalar(select(func.max(Change.revision)).where(Change.at < cutoff))
            oldest = s.scalar(select(func.min(Change.revision)))
        upto = prune_upto(top, newest_expired, retention)
        if oldest is None or upto < oldest:
            return 0
        removed = 0
        start = int(oldest)
        while start <= upto:
            end = min(upto, start + batch - 1)
            with self.session() as s:
                result = s.execute(
                    delete(Change).where(Change.revision >= start, Change.revision <= end)
                )
                removed += int(getattr(result, "rowcount", 0) or 0)
            start = end + 1
        return removed

    def _ensure_listener(self) -> None:
        with self._listener_lock:
            if self._listener is None or not self._listener.is_alive():
                self._listener = threading.Thread(
                    target=self._listen_loop, name="openimds-pg-listen", daemon=True
                )
                self._listener.start()

    def _listen_loop(self) -> None:
        import psycopg

        conninfo = make_url(self.url).set(drivername="postgresql").render_as_string(
            hide_password=False
        )
        lost = False
        while not self._closed.is_set():
            try:
                with psycopg.connect(conninfo, autocommit=True) as conn:
                    conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                    if lost:
                        LOG.warning("change-feed listener connected again")
                        lost = False
                    # A commit may have landed between our last fetch and LISTEN.
                    self._wake()
                    while not self._closed.is_set():
                        for _ in conn.notifies(timeout=1.0, stop_after=1):
                            self._wake()
            except Exception as exc:  # the loop must survive a database restart
                # One line when the connection goes, one when it is back: not one per retry.
                if not lost:
                    LOG.warning("change-feed listener lost its connection (%s); retrying "
                                "every second", str(exc).strip().splitlines()[0][:200]
                                if str(exc).strip() else type(exc).__name__)
                    lost = True
                with suppress(Exception):
                    self._wake()
                self._closed.wait(1.0)


def _end(session: Session) -> None:
    """Roll back `session`'s transaction. When its connection died meanwhile (a database
    restart, a killed backend) the ROLLBACK fails, but the server already discarded the
    transaction: nothing is left to undo. The connection is then invalidated (never handed
    out again) and the failure goes no further, so what the caller raises or returns stands:
    rows already read, the body's own error, StoreUnavailable for a commit that failed."""
    try:
        session.rollback()
    except DBAPIError as exc:
        LOG.debug("rollback on a lost database connection: %s",
                  str(exc.orig).strip().splitlines()[0][:200] if str(exc.orig).strip()
                  else type(exc.orig).__name__)
        session.invalidate()


def _pg_notify(payload: str) -> Any:
    from sqlalchemy import func

    return func.pg_notify(NOTIFY_CHANNEL, payload)


def _resource_id(obj: Any) -> str:
    # Instances are known to the outside world by uuid; the integer id is internal (EC2 id).
    return str(getattr(obj, "uuid", None) or obj.id)
