"""Per-instance session-token usage, added to the inventory once a second.

The request path only adds to in-memory counts (`MetadataMetrics.token_event`); this writer
takes them every `interval` seconds and adds them to `metadata_token_usage` in one transaction
of at most three statements (which rows exist; one UPDATE ... SET n = n + delta executed for
all of them; one INSERT for the new rows), so replicas never overwrite each other and the cost
is a few statements a second whatever the number of instances. While the database is away the counts are kept and added on the next success.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import cast

from sqlalchemy import DateTime, Integer, Table, bindparam, case, insert, select, update
from sqlalchemy.exc import SQLAlchemyError

from openimds.inventory.errors import InventoryError
from openimds.inventory.models import MetadataTokenUsage
from openimds.inventory.store import Store

__all__ = ["TokenUsageWriter"]

LOG = logging.getLogger(__name__)
Counts = dict[str, list[int]]


def _merge(into: Counts, more: Counts) -> None:
    for uuid, (tokenless, invalid) in more.items():
        have = into.setdefault(uuid, [0, 0])
        have[0] += tokenless
        have[1] += invalid


class TokenUsageWriter:
    def __init__(self, store: Store, take: Callable[[], Counts], interval: float = 1.0) -> None:
        self.store = store
        self.take = take
        self.interval = interval
        self._pending: Counts = {}
        self._task: asyncio.Task[None] | None = None

    def write(self, counts: Counts, now: datetime) -> None:
        """Add `counts` ({instance uuid: [tokenless, invalid token]}) in one transaction of at
        most three statements, however many instances: which rows exist, one UPDATE executed
        for all of them (executemany) and one INSERT for the new ones. A boot storm of 1,000
        instances used to cost 1,000 statements a second here, and their ORM overhead held
        the GIL the request path needs."""
        if not counts:
            return
        table = cast(Table, MetadataTokenUsage.__table__)
        col = table.c
        # Typed, so PostgreSQL knows what the CASE compares and returns.
        tokenless = bindparam("b_tokenless", type_=Integer)
        at = bindparam("b_now", type_=DateTime(timezone=True))
        uuids = sorted(counts)
        with self.store.session() as s:
            existing = set(s.scalars(
                select(col.instance_uuid).where(col.instance_uuid.in_(uuids))))
            updates = [{"b_uuid": u, "b_tokenless": counts[u][0], "b_invalid": counts[u][1],
                        "b_now": now} for u in uuids if u in existing]
            inserts = [{"instance_uuid": u, "tokenless_requests": counts[u][0],
                        "invalid_token_requests": counts[u][1], "updated_at": now,
                        "last_tokenless_at": now if counts[u][0] else None}
                       for u in uuids if u not in existing]
            if updates:
                s.execute(
                    update(table)
                    .where(col.instance_uuid == bindparam("b_uuid"))
                    .values(
                        tokenless_requests=col.tokenless_requests + tokenless,
                        invalid_token_requests=(col.invalid_token_requests
                                                + bindparam("b_invalid")),
                        updated_at=at,
                        last_tokenless_at=case((tokenless > 0, at), else_=col.last_tokenless_at),
                    ),
                    updates,
                )
            if inserts:
                # A replica that inserted one of these rows first makes this transaction fail;
                # its counts are then retried next time (as UPDATE).
                s.execute(insert(table), inserts)

    async def flush(self) -> None:
        _merge(self._pending, self.take())
        if not self._pending:
            return
        batch, self._pending = self._pending, {}
        try:
            await asyncio.to_thread(self.write, batch, datetime.now(UTC))
        except (InventoryError, SQLAlchemyError) as exc:
            _merge(self._pending, batch)
            LOG.warning("token usage of %d instance(s) not saved yet (%s); retrying",
                        len(batch), exc)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
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
