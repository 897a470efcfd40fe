"""What our three HTTP servers (metadata API, metadata agent, control API) share at the edge.

* `edge_logger(name)`: the logger handed to aiohttp's request handler (`logger=`). A request
  aiohttp cannot parse (an unknown method, a request line or header over its limit, HTTP/1.1
  without Host, malformed bytes) is the client's mistake: aiohttp answers 400 itself, and this
  logger turns its "Error handling request" ERROR with a traceback into one INFO line naming the
  client and the reason. Anything else (a 5xx-class failure) keeps its traceback.
* `origin_form(target)`: the path (and query) a request target asks for. Absolute-form
  (`GET http://host/path`) is reduced to its path, as RFC 9112 section 3.2.2 requires servers to
  accept; authority-form (CONNECT) and asterisk-form (`*`) name no path: None.
"""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

from aiohttp.http_exceptions import HttpProcessingError

__all__ = ["edge_logger", "origin_form"]


class _ClientErrorsWithoutTraceback(logging.Filter):
    """Rewrite aiohttp's records about requests it refused as 4xx into one plain line."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError) and 400 <= (exc.code or 0) < 500:
            # The message and its args are aiohttp's ("Error handling request from %s", peer).
            peer = record.args[0] if isinstance(record.args, tuple) and record.args else "-"
            record.msg = "refused a malformed request from %s with %d: %s"
            record.args = (peer or "-", exc.code, _reason(exc))
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.exc_info = None
            record.exc_text = None
        return True


def _reason(exc: HttpProcessingError) -> str:
    # `message` may echo the client's bytes: keep the line short and printable.
    text = exc.message or type(exc).__name__
    return text.encode("ascii", "backslashreplace").decode()[:200].replace("\n", " ")


def edge_logger(name: str) -> logging.Logger:
    """The logger `name` with the client-error filter attached (once)."""
    logger = logging.getLogger(name)
    if not any(isinstance(f, _ClientErrorsWithoutTraceback) for f in logger.filters):
        logger.addFilter(_ClientErrorsWithoutTraceback())
    return logger


def origin_form(target: str) -> str | None:
    """`/path?query` of a request target, or None when it names no path (see module doc)."""
    if target.startswith("/"):
        return target
    if "://" not in target:
        return None  # authority-form (CONNECT host:port) or asterisk-form (*)
    try:
        parts = urlsplit(target)
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        return None
    path = parts.path or "/"
    return f"{path}?{parts.query}" if parts.query else path
