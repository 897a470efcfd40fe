"""Per-instance session-token usage, added to the inventory every second or less often.

The request path only adds to in-memory counts (`MetadataMetrics.token_event`); this writer
takes them and adds them to `metadata_token_usage` in one transaction of a few set-based
statements (which rows exist; one UPDATE executed for every instance counted; one INSERT for
the new rows) per 5,000 instances, so replicas never overwrite each other.

How often (`next_wait`): every `interval` seconds (`metadata_token_usage_interval`, 1 s), as long
as a write costs little. The cost is per instance written (~10 µs of CPU a row), so a cloud
whose instances all poll without a token (100k instances answered round robin: ~12,600 rows a
second) would spend a tenth of the service's CPU here; the wait then stretches until writing
takes at most `WRITE_SHARE` of one core, up to `max_interval` seconds
(`metadata_token_usage_max_interval`, 60 s). Counts are kept in memory meanwhile, one int per
instance, so the control API and the CLI show each instance's usage at most `max_interval`
seconds (plus one write) late, never lost: while the database is away the counts are kept and
added on the next success, and `stop` writes what was counted since the last write.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import cast

from sqlalchemy import DateTime, Table, insert, select
from sqlalchemy.exc import SQLAlchemyError

from openimds.inventory.errors import InventoryError
from openimds.inventory.models import MetadataTokenUsage
from openimds.inventory.store import Store

__all__ = ["WRITE_SHARE", "TokenUsageWriter", "next_wait"]

LOG = logging.getLogger(__name__)
Counts = dict[str, list[int]]
# Instances per IN list: under SQLite's limit of bound parameters.
CHUNK = 5000
# The most of one core writing usage may take, averaged over a write and the wait after it.
WRITE_SHARE = 0.02
_ADD_USAGE = (
    "UPDATE metadata_token_usage SET"
    " tokenless_requests = tokenless_requests + {p},"
    " invalid_token_requests = invalid_token_requests + {p},"
    " updated_at = {p},"
    " last_tokenless_at = CASE WHEN {p} > 0 THEN {p} ELSE last_tokenless_at END"
    " WHERE instance_uuid = {p}"
)


def _merge(into: Counts, more: Counts) -> None:
    for uuid, (tokenless, invalid) in more.items():
        have = into.setdefault(uuid, [0, 0])
        have[0] += tokenless
        have[1] += invalid


def next_wait(interval: float, max_interval: float, spent: float,
              share: float = WRITE_SHARE) -> float:
    """Seconds to wait before the next write, after one that took `spent` seconds of CPU:
    `interval`, or longer so that writing takes at most `share` of one core, but never longer
    than `max_interval` (what readers may lag at most; not below `interval`)."""
    return min(max(interval, spent / share), max(interval, max_interval))


class TokenUsageWriter:
    def __init__(self, store: Store, take: Callable[[], Counts], interval: float = 1.0,
                 max_interval: float = 60.0) -> None:
        self.store = store
        self.take = take
        self.interval = interval
        self.max_interval = max_interval
        # CPU seconds the last write took (its thread's own time).
        self.spent = 0.0
        self._pending: Counts = {}
        self._task: asyncio.Task[None] | None = None

    def write(self, counts: Counts, now: datetime) -> None:
        """Add `counts` ({instance uuid: [tokenless, invalid token]}) in one transaction of a
        few set-based statements per `CHUNK` instances: which rows exist, one UPDATE ... FROM
        (VALUES ...) adding every delta at once, and one INSERT for the new rows.

        A statement per instance cost 1,000 statements a second in a boot storm; an UPDATE
        executed for every row (executemany) still cost ~18 µs of CPU per instance, which at
        100k instances polled round robin was ~18 µs per request of a GIL the request path
        needs. Chunks keep every statement under SQLite's 32,766 bound parameters (counts kept
        through a database outage can name every instance)."""
        if not counts:
            return
        table = cast(Table, MetadataTokenUsage.__table__)
        col = table.c
        uuids = sorted(counts)
        with self.store.session() as s:
            dialect = s.get_bind().dialect
            # The timestamp as the column type stores it, converted once.
            convert = DateTime(timezone=True).dialect_impl(dialect).bind_processor(dialect)
            stamp = convert(now) if convert is not None else now
            update_sql = _ADD_USAGE.format(p="?" if dialect.paramstyle == "qmark" else "%s")
            for start in range(0, len(uuids), CHUNK):
                part = uuids[start : start + CHUNK]
                existing = set(s.scalars(
                    select(col.instance_uuid).where(col.instance_uuid.in_(part))))
                deltas = [(counts[u][0], counts[u][1], stamp, counts[u][0], stamp, u)
                          for u in part if u in existing]
                if deltas:
                    # Executed for every row by the driver itself: through SQLAlchemy each row
                    # cost ~18 µs of parameter processing (the timestamp converted per row).
                    s.connection().exec_driver_sql(update_sql, deltas)
                inserts = [{"instance_uuid": u, "tokenless_requests": counts[u][0],
                            "invalid_token_requests": counts[u][1], "updated_at": now,
                            "last_tokenless_at": now if counts[u][0] else None}
                           for u in part if u not in existing]
                if inserts:
                    # A replica that inserted one of these rows first makes this transaction
                    # fail; its counts are then retried next time (as UPDATE).
                    s.execute(insert(table), inserts)

    async def flush(self) -> None:
        _merge(self._pending, self.take())
        if not self._pending:
            return
        batch, self._pending = self._pending, {}
        try:
            self.spent = await asyncio.to_thread(self._timed_write, batch, datetime.now(UTC))
        except (InventoryError, SQLAlchemyError) as exc:
            _merge(self._pending, batch)
            LOG.warning("token usage of %d instance(s) not saved yet (%s); retrying",
                        len(batch), exc)

    def _timed_write(self, counts: Counts, now: datetime) -> float:
        """`write`, returning the CPU seconds it took (of its own thread: other threads and
        processes on the machine do not stretch it)."""
        started = time.thread_time()
        self.write(counts, now)
        return time.thread_time() - started

    def wait(self) -> float:
        """Seconds until the next write (`next_wait` after the last one)."""
        return next_wait(self.interval, self.max_interval, self.spent)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.wait())
            await self.flush()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        # What was counted since the last tick is not lost on a clean shutdown.
        await self.flush()
