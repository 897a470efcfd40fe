"""Log lines written in batches: one write(2) for many INFO lines of one logger.

Through `Logger.info` a line costs 15-30 µs on a busy event loop: the caller lookup
(`findCaller`), a LogRecord, the formatter's timestamp, the handler's lock and one write(2)
per line. Where a line would end up in exactly one plain `StreamHandler`/`FileHandler` (what
`setup_logging` installs) with no filter involved, `line_batch` returns a `LineBatch` that
gives the same text: the handler's own formatter is run once per millisecond on a template
record to get the text around the message; lines are kept in a list and written after the
current event loop iteration, whole lines up to 4096 bytes (PIPE_BUF) per write(2), so a line
reaches the file at most one iteration after it was made. Used by the metadata API's access
log and by the agents' syslog sink for their proxies (`linux/logsink.py`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

__all__ = ["LineBatch", "affixes", "line_batch", "single_plain_handler"]

# Bytes per write(2): PIPE_BUF, so writes from several workers to one pipe never interleave.
_CHUNK = 4096
# Stands in for the message when the handler's formatter renders the template record.
_MARK = "\x00openimds-access\x00"


def single_plain_handler(logger: logging.Logger) -> logging.StreamHandler[Any] | None:
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


class LineBatch:
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
            rendered = affixes(self._logger, self._handler)
            if rendered is not None:
                self._prefix, suffix = rendered
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
                    # Encoded size: exact for ASCII (nearly every line), else the UTF-8 bound.
                    length = len(text) if text.isascii() else 4 * len(text)
                    if chunk and size + length > _CHUNK:
                        stream.write("".join(chunk))
                        stream.flush()
                        chunk, size = [], 0
                    chunk.append(text)
                    size += length
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


def affixes(
    logger: logging.Logger,
    handler: logging.Handler,
) -> tuple[str, str] | None:
    """The handler's rendering of a record now, split around its message."""
    record = logger.makeRecord(logger.name, logging.INFO, "(unknown file)", 0, _MARK, (), None)
    prefix, mark, suffix = handler.format(record).partition(_MARK)
    return (prefix, suffix) if mark else None


def line_batch(logger: logging.Logger, loop: asyncio.AbstractEventLoop) -> LineBatch | None:
    """A batch for `logger`'s INFO lines on `loop` (the thread that will add them), or None
    when the logging setup does not allow one (the caller then logs records as usual).
    Decided once: call after logging is configured."""
    handler = single_plain_handler(logger)
    rendered = affixes(logger, handler) if handler is not None else None
    if handler is None or rendered is None:
        return None
    return LineBatch(loop, logger, handler, *rendered)
