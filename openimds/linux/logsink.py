"""A syslog sink for the proxies when the host has no /dev/log: a unix datagram socket the agent
binds, whose messages go to the agent's own log (logger `openimds.haproxy`).

haproxy can only log to syslog targets (and to stdout/stderr, which it closes once it
daemonises), so without a syslog daemon its logs would vanish. Each DHCP/L3 agent binds its own
socket under the state path and writes the proxies' lines wherever its log goes (its log file or
stderr). The socket is a file, so haproxy reaches it from inside any network namespace; it is
mode 0660, enough for a proxy that dropped to another user but kept the agent's group.

    parse_syslog(datagram) -> (level, text)          pure
    LogSink(path).start() / .close()                  asyncio datagram endpoint
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import socket

from openimds.loglines import LineBatch, line_batch

__all__ = ["LogSink", "parse_syslog"]

LOG = logging.getLogger("openimds.haproxy")

# RFC 3164 as haproxy writes it: "<PRI>Mmm dd hh:mm:ss tag[pid]: message".
_RFC3164 = re.compile(r"^<(\d{1,3})>(?:\w{3} [ \d]\d \d\d:\d\d:\d\d )?(.*)$", re.DOTALL)
_LEVELS = {0: logging.CRITICAL, 1: logging.CRITICAL, 2: logging.CRITICAL, 3: logging.ERROR,
           4: logging.WARNING, 5: logging.INFO, 6: logging.INFO, 7: logging.DEBUG}


def parse_syslog(data: bytes) -> tuple[int, str]:
    """(logging level, text) of one syslog datagram; unknown shapes are INFO, as received."""
    text = data.decode("utf-8", "replace").rstrip("\n")
    m = _RFC3164.match(text)
    if not m:
        return logging.INFO, text
    return _LEVELS[int(m.group(1)) & 7], m.group(2)


class _Protocol(asyncio.DatagramProtocol):
    """One line per datagram. A proxy logs a line per request, so INFO lines go through a
    `LineBatch` when the logging setup allows one (a record per line cost the agent ~23 µs of
    CPU per guest request; the batch writes many lines per write(2))."""

    def __init__(self, batch: LineBatch | None) -> None:
        self._batch = batch

    def datagram_received(self, data: bytes, addr: object) -> None:
        level, text = parse_syslog(data)
        batch = self._batch
        if batch is not None and level == logging.INFO:
            if LOG.isEnabledFor(logging.INFO):
                batch.add(text)
            return
        if batch is not None:
            batch.flush()  # lines stay in the order they came
        LOG.log(level, "%s", text)


class LogSink:
    """The bound socket at `path` while started (a stale file from a dead agent is replaced)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._transport: asyncio.BaseTransport | None = None

    async def start(self) -> None:
        os.makedirs(os.path.dirname(self.path), mode=0o755, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        old = os.umask(0o117)  # 0660 from the start: no window with a wider mode
        try:
            sock.bind(self.path)
        finally:
            os.umask(old)
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        batch = line_batch(LOG, loop)
        self._transport, _ = await loop.create_datagram_endpoint(
            lambda: _Protocol(batch), sock=sock)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
