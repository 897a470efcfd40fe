"""The access log of the metadata API: one INFO line per request on `openimds.metadata.access`.

    <peer> "<method> <path>" <status> <bytes> instance=<uuid|-> outcome=<outcome> <ms>ms

Through `Logger.info` a line cost 15-30 µs on the event loop under load, about a third of a
whole request: the caller lookup (`findCaller`), a LogRecord, the formatter's timestamp, the
handler's lock and one write(2) per line. Two paths, same text:

* **records** (default): the record is built directly (no caller lookup, which is meaningless
  here) and handed to the logger, so any handler, filter or test capture sees it as before;
* **batched** (`batch_on(loop)`, the service): when the line would end up in exactly one plain
  `StreamHandler`/`FileHandler` (what `setup_logging` installs) and no filter is involved, the
  handler's own formatter is run once per millisecond on a template record to get the text
  around the message; lines are kept in a list and written after the current event loop
  iteration, whole lines at up to 1024 characters per write(2), so a line reaches the file
  at most one iteration after its response was sent, and under load one write serves ~5.

Measured and rejected: a background thread building the records. It needs the GIL for the same
work and added ~8 µs of thread hand-offs per request.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

__all__ = ["ACCESS", "AccessLog"]

ACCESS = logging.getLogger("openimds.metadata.access")

_FORMAT = '%s "%s %s" %d %d instance=%s outcome=%s %.1fms'
# Characters per write(2): at most 4 bytes each in UTF-8, so never above PIPE_BUF (4096).
_CHUNK = 1024
# Stands in for the message when the handler's formatter renders the template record.
_MARK = "\x00openimds-access\x00"


def _single_plain_handler(logger: logging.Logger) -> logging.StreamHandler[Any] | None:
    """The one handler an INFO record of `logger` would reach, if batching it is equivalent.

    Exact types only: subclasses (pytest's capture handler, rotating handlers) keep records.
    """
    if logger.filters:
        return None
    found: list[logging.Handler] = []
    current: logging.Logger | None = logger
    while current is not None:
        found += [h for h in current.handlers if h.level <= logging.INFO]
        if not current.propagate:
            break
        current = current.parent
    if len(found) != 1:
        return None
    handler = found[0]
    if type(handler) not in (logging.StreamHandler, logging.FileHandler) or handler.filters:
        return None
    assert isinstance(handler, logging.StreamHandler)
    return handler if handler.stream is not None else None


class _Batch:
    """Lines for one plain stream handler, written once per event loop iteration."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        logger: logging.Logger,
        handler: logging.StreamHandler[Any],
        prefix: str,
        suffix: str,
    ) -> None:
        self._loop = loop
        self._logger = logger
        self._handler = handler
        self._lines: list[str] = []
        self._scheduled = False
        self._ms = -1
        self._prefix = prefix
        self._suffix = suffix + handler.terminator

    def add(self, message: str) -> None:
        ms = int(time.time() * 1000)
        if ms != self._ms:
            affixes = _affixes(self._logger, self._handler)
            if affixes is not None:
                self._prefix, suffix = affixes
                self._suffix = suffix + self._handler.terminator
            self._ms = ms
        self._lines.append(self._prefix + message + self._suffix)
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self.flush)

    def flush(self) -> None:
        self._scheduled = False
        lines, self._lines = self._lines, []
        if not lines:
            return
        handler = self._handler
        handler.acquire()
        try:
            stream = handler.stream
            # None once logging.shutdown() closed a FileHandler at exit: nothing to write to.
            if stream is not None:
                # Whole lines, under PIPE_BUF (4096 bytes) per write(2): several workers share
                # stderr, and a pipe keeps only writes that small from interleaving.
                chunk: list[str] = []
                size = 0
                for text in lines:
                    if chunk and size + len(text) > _CHUNK:
                        stream.write("".join(chunk))
                        stream.flush()
                        chunk, size = [], 0
                    chunk.append(text)
                    size += len(text)
                stream.write("".join(chunk))
                stream.flush()
        except Exception:
            # As logging does for a failing handler: report on stderr, keep serving.
            handler.handleError(
                self._logger.makeRecord(
                    self._logger.name, logging.INFO, "(unknown file)", 0, lines[0], (), None
                )
            )
        finally:
            handler.release()


def _affixes(
    logger: logging.Logger,
    handler: logging.Handler,
) -> tuple[str, str] | None:
    """The handler's rendering of a record now, split around its message."""
    record = logger.makeRecord(logger.name, logging.INFO, "(unknown file)", 0, _MARK, (), None)
    prefix, mark, suffix = handler.format(record).partition(_MARK)
    return (prefix, suffix) if mark else None


class AccessLog:
    """Call once per response; see the module docstring for the two ways lines are written."""

    __slots__ = ("_batch", "_logger")

    def __init__(self, logger: logging.Logger = ACCESS) -> None:
        self._logger = logger
        self._batch: _Batch | None = None

    def batch_on(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Batch lines on `loop` (the thread that calls this object) if the logging setup
        allows it; returns whether it does. Decided once: call after logging is configured."""
        handler = _single_plain_handler(self._logger)
        affixes = _affixes(self._logger, handler) if handler is not None else None
        if handler is None or affixes is None:
            self._batch = None
            return False
        self._batch = _Batch(loop, self._logger, handler, *affixes)
        return True

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
