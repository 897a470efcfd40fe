"""The access log of the metadata API: one INFO line per request on `openimds.metadata.access`.

    <peer> "<method> <path>" <status> <bytes> instance=<uuid|-> outcome=<outcome> <ms>ms

Through `Logger.info` a line cost 15-30 µs on the event loop under load, about a third of a
whole request: the caller lookup (`findCaller`), a LogRecord, the formatter's timestamp, the
handler's lock and one write(2) per line. Two paths, same text:

* **records** (default): the record is built directly (no caller lookup, which is meaningless
  here) and handed to the logger, so any handler, filter or test capture sees it as before;
* **batched** (`batch_on(loop)`, the service): when the line would end up in exactly one plain
  `StreamHandler`/`FileHandler` and no filter is involved, lines are written by
  `openimds.loglines.LineBatch`: same text, the handler's formatter run once per millisecond,
  whole lines up to PIPE_BUF per write(2) after the current event loop iteration.

Measured and rejected: a background thread building the records. It needs the GIL for the same
work and added ~8 µs of thread hand-offs per request.
"""

from __future__ import annotations

import asyncio
import logging

from openimds.loglines import LineBatch, line_batch

__all__ = ["ACCESS", "AccessLog"]

ACCESS = logging.getLogger("openimds.metadata.access")

_FORMAT = '%s "%s %s" %d %d instance=%s outcome=%s %.1fms'
class AccessLog:
    """Call once per response; see the module docstring for the two ways lines are written."""

    __slots__ = ("_batch", "_logger")

    def __init__(self, logger: logging.Logger = ACCESS) -> None:
        self._logger = logger
        self._batch: LineBatch | None = None

    def batch_on(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Batch lines on `loop` (the thread that calls this object) if the logging setup
        allows it; returns whether it does. Decided once: call after logging is configured."""
        self._batch = line_batch(self._logger, loop)
        return self._batch is not None

    def flush(self) -> None:
        """Write batched lines now (at shutdown)."""
        if self._batch is not None:
            self._batch.flush()

    def again(
        self,
        peer: str | None,
        entry: str,
        fields: tuple[str, str, int, int, str | None, str],
        seconds: float,
    ) -> None:
        """The line `self(peer, *fields, seconds)` writes, for an answer given again from bytes
        (`answers.py`): `entry` is its middle part, formatted once when the answer was kept."""
        batch = self._batch
        if batch is not None:
            if self._logger.isEnabledFor(logging.INFO):
                ms = seconds * 1000
                # What "%.1f" makes of it: answers from bytes take a few microseconds.
                batch.add(f"{peer} {entry} {'0.0' if ms < 0.04 else format(ms, '.1f')}ms")
            return
        self(peer, *fields, seconds)

    def __call__(
        self,
        peer: str | None,
        method: str,
        path: str,
        status: int,
        size: int,
        instance_id: str | None,
        outcome: str,
        seconds: float,
    ) -> None:
        logger = self._logger
        if not logger.isEnabledFor(logging.INFO):
            return
        args = (peer, method, path, status, size, instance_id or "-", outcome, seconds * 1000)
        if self._batch is not None:
            self._batch.add(_FORMAT % args)
            return
        logger.handle(
            logger.makeRecord(logger.name, logging.INFO, "(unknown file)", 0, _FORMAT, args, None)
        )
