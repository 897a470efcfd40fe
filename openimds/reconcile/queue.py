"""WorkQueue: the reconcile loop's dedupe queue of keys, with per-key timers and backoff.

A key is queued at most once; a key re-added while it runs is run again afterwards (it saw
old data); one timer per key is kept (the earliest); failures are requeued after
`exponential_delay` (the feed's one backoff rule), reset by `forget` after a success.
"""

from __future__ import annotations

import asyncio
import collections

from openimds.feed import exponential_delay

__all__ = ["WorkQueue"]


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
        delay = exponential_delay(self._failures[key], self.base_delay, self.max_delay)
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
