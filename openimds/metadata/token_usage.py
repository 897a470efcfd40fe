"""Per-instance session-token usage, added to the inventory once a second.

The request path only adds to in-memory counts (`MetadataMetrics.token_event`); this writer
takes them every `interval` seconds and adds them to `metadata_token_usage` in one transaction
(UPDATE ... SET n = n + delta, INSERT when the row is new), so replicas never overwrite each
other. While the database is away the counts are kept and added on the next success.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy import update
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
        """Add `counts` ({instance uuid: [tokenless, invalid token]}) in one transaction."""
        with self.store.session() as s:
            for uuid, (tokenless, invalid) in sorted(counts.items()):
                values: dict[str, object] = {
                    "tokenless_requests": MetadataTokenUsage.tokenless_requests + tokenless,
                    "invalid_token_requests": MetadataTokenUsage.invalid_token_requests + invalid,
                    "updated_at": now,
                }
                if tokenless:
                    values["last_tokenless_at"] = now
                done = s.execute(
                    update(MetadataTokenUsage)
                    .where(MetadataTokenUsage.instance_uuid == uuid)
                    .values(**values)
                )
                if not done.rowcount:  # type: ignore[attr-defined]
                    s.add(MetadataTokenUsage(
                        instance_uuid=uuid, tokenless_requests=tokenless,
                        invalid_token_requests=invalid, updated_at=now,
                        last_tokenless_at=now if tokenless else None))
                    # Flushed per row: a replica that inserted the same row first makes this
                    # transaction fail, and its counts are retried next time (then as UPDATE).
                    s.flush()

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
