"""A syslog sink for the proxies when the host has no /dev/log: a unix datagram socket the agent
binds, whose messages go to the agent's own log (logger `openimds.haproxy`).

haproxy can only log to syslog targets (and to stdout/stderr, which it closes once it
daemonises), so without a syslog daemon its logs would vanish. Each DHCP/L3 agent binds its own
socket under the state path and writes the proxies' lines wherever its log goes (its log file or
stderr). The socket is a file, so haproxy reaches it from inside any network namespace; it is
mode 0660, enough for a proxy that dropped to another user but kept the agent's group.

    parse_syslog(datagram) -> (level, text)          pure
    LogSink(path).start() / .close()                  read on the agent's event loop
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


# After a wake-up the socket is read again only this much later: a proxy logs one line per
# guest request, and one wake-up per line cost the agent ~20 µs of CPU per request; coalesced,
# a busy proxy's lines arrive ~a hundred at a time. An idle socket waits with no timer.
COALESCE_SECONDS = 0.01
# Room for a busy moment between two reads (SO_RCVBUFFORCE as root, else what the host allows):
# the kernel's unix datagram queue (net.unix.max_dgram_qlen, 512 by default) bounds it too.
_RECEIVE_BUFFER = 4 << 20
_MAX_DATAGRAM = 65536
# Linux's value; the socket module does not name it.
_SO_RCVBUFFORCE = 33


class _Reader:
    """Every queued datagram, one line each, on each wake-up; INFO lines through a `LineBatch`
    when the logging setup allows one (one write(2) for many lines)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket,
                 batch: LineBatch | None) -> None:
        self._loop = loop
        self._sock = sock
        self._batch = batch
        self._rearm: asyncio.TimerHandle | None = None
        self.closed = False
        loop.add_reader(sock.fileno(), self._ready)

    def _ready(self) -> None:
        self._loop.remove_reader(self._sock.fileno())
        recv = self._sock.recv
        while True:
            try:
                data = recv(_MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as err:
                LOG.warning("proxy log socket: %s", err)
                break
            self._line(data)
        self._rearm = self._loop.call_later(COALESCE_SECONDS, self._listen)

    def _listen(self) -> None:
        self._rearm = None
        if not self.closed:
            self._loop.add_reader(self._sock.fileno(), self._ready)

    def _line(self, data: bytes) -> None:
        level, text = parse_syslog(data)
        batch = self._batch
        if batch is not None and level == logging.INFO:
            if LOG.isEnabledFor(logging.INFO):
                batch.add(text)
            return
        if batch is not None:
            batch.flush()  # lines stay in the order they came
        LOG.log(level, "%s", text)

    def close(self) -> None:
        self.closed = True
        if self._rearm is not None:
            self._rearm.cancel()
        self._loop.remove_reader(self._sock.fileno())
        if self._batch is not None:
            self._batch.flush()
        self._sock.close()


class LogSink:
    """The bound socket at `path` while started (a stale file from a dead agent is replaced)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._reader: _Reader | None = None

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
        try:
            sock.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, _RECEIVE_BUFFER)
        except OSError:  # not privileged: as much as net.core.rmem_max allows
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RECEIVE_BUFFER)
        loop = asyncio.get_running_loop()
        self._reader = _Reader(loop, sock, line_batch(LOG, loop))

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
