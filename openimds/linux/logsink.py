"""A syslog sink for the proxies when the host has no /dev/log: sockets the agent binds, whose
lines go to the agent's own log (logger `openimds.haproxy`).

haproxy can only log to syslog targets (and to stdout/stderr, which it closes once it
daemonises), so without a syslog daemon its logs would vanish. Each DHCP/L3/L2 agent binds its
own sockets under the state path and writes the proxies' lines wherever its log goes (its log
file or stderr). They are files, so haproxy reaches them from inside any network namespace;
mode 0660, enough for a proxy that dropped to another user but kept the agent's group.

Two sockets: the unix datagram socket at `path` takes one syslog message per datagram (the
documented target, for any sender); the stream socket at `stream_socket_path(path)` takes the
agent's own proxies, which log into a ring buffer that haproxy forwards over one connection,
many newline-terminated lines per send. Per request that saves haproxy a sendto(2) with a path
lookup (~4 µs of the proxy's CPU, the bottleneck of the chain; docs/benchmarks.md).

    parse_syslog(datagram) -> (level, text)          pure
    stream_socket_path(path) -> str                   pure
    coalesce_delay(lines_read) -> seconds             pure
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

__all__ = ["LogSink", "coalesce_delay", "parse_syslog", "stream_socket_path"]

LOG = logging.getLogger("openimds.haproxy")

# RFC 3164 as haproxy writes it: "<PRI>Mmm dd hh:mm:ss tag[pid]: message"; from a ring
# buffer with the host name after the time ("... hh:mm:ss host tag[pid]: message").
_RFC3164 = re.compile(
    r"^<(\d{1,3})>(?:\w{3} [ \d]\d \d\d:\d\d:\d\d (?:\S+ (?=\S+\[\d+\]: ))?)?(.*)$", re.DOTALL)
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
# A read that brought fewer than QUIET_LINES lines waits longer: many proxies each logging a
# little (a boot storm over 20 networks: ~2 lines per read at 10 ms) cost a wake-up, a timer
# and two epoll_ctl(2) per read, ~20 µs of the agent's CPU per request. At that pace 30 ms
# of lines is far below what the ring (256 KB) and the datagram queue (512) hold.
QUIET_COALESCE_SECONDS = 0.03
QUIET_LINES = 32
# Room for a busy moment between two reads (SO_RCVBUFFORCE as root, else what the host allows):
# the kernel's unix datagram queue (net.unix.max_dgram_qlen, 512 by default) bounds it too.
_RECEIVE_BUFFER = 4 << 20
_MAX_DATAGRAM = 65536
# Linux's value; the socket module does not name it.
_SO_RCVBUFFORCE = 33


# A stream line longer than this without a newline is logged as it is (haproxy's lines are at
# most `maxlen` of the ring, 1024 bytes).
_MAX_LINE = 65536


def coalesce_delay(lines_read: int) -> float:
    """Seconds before a socket is read again after a read that brought `lines_read` lines."""
    return COALESCE_SECONDS if lines_read >= QUIET_LINES else QUIET_COALESCE_SECONDS


def stream_socket_path(path: str) -> str:
    """The stream socket beside the datagram socket `path` (`x-log.sock` -> `x-log.stream.sock`)."""
    stem = path[: -len(".sock")] if path.endswith(".sock") else path
    return f"{stem}.stream.sock"


class _Lines:
    """One syslog message -> the agent's log: INFO lines through a `LineBatch` when the logging
    setup allows one (one write(2) for many lines), other levels as records."""

    def __init__(self, batch: LineBatch | None) -> None:
        self._batch = batch

    def line(self, data: bytes) -> None:
        level, text = parse_syslog(data)
        batch = self._batch
        if batch is not None and level == logging.INFO:
            if LOG.isEnabledFor(logging.INFO):
                batch.add(text)
            return
        if batch is not None:
            batch.flush()  # lines stay in the order they came
        LOG.log(level, "%s", text)

    def flush(self) -> None:
        if self._batch is not None:
            self._batch.flush()


class _Reader:
    """Every queued datagram, one line each, on each wake-up."""

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket,
                 lines: _Lines) -> None:
        self._loop = loop
        self._sock = sock
        self._line = lines.line
        self._rearm: asyncio.TimerHandle | None = None
        self.closed = False
        loop.add_reader(sock.fileno(), self._ready)

    def _ready(self) -> None:
        self._loop.remove_reader(self._sock.fileno())
        recv = self._sock.recv
        count = 0
        while True:
            try:
                data = recv(_MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as err:
                LOG.warning("proxy log socket: %s", err)
                break
            self._line(data)
            count += 1
        self._rearm = self._loop.call_later(coalesce_delay(count), self._listen)

    def _listen(self) -> None:
        self._rearm = None
        if not self.closed:
            self._loop.add_reader(self._sock.fileno(), self._ready)

    def close(self) -> None:
        self.closed = True
        if self._rearm is not None:
            self._rearm.cancel()
        self._loop.remove_reader(self._sock.fileno())
        self._sock.close()


class _StreamReader(asyncio.Protocol):
    """One proxy's connection: newline-terminated syslog lines, many per read. After a read the
    connection is paused for COALESCE_SECONDS, so a busy proxy's lines arrive in bulk (the
    lines wait in haproxy's ring meanwhile)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, lines: _Lines,
                 open_readers: set[_StreamReader]) -> None:
        self._loop = loop
        self._line = lines.line
        self._open = open_readers
        self._tail = b""
        self._transport: asyncio.Transport | None = None
        self._rearm: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._open.add(self)

    def data_received(self, data: bytes) -> None:
        *lines, tail = (self._tail + data).split(b"\n") if self._tail else data.split(b"\n")
        if len(tail) > _MAX_LINE:
            lines.append(tail)
            tail = b""
        self._tail = tail
        line = self._line
        for one in lines:
            if one:
                line(one)
        if self._transport is not None and self._rearm is None:
            self._transport.pause_reading()
            self._rearm = self._loop.call_later(coalesce_delay(len(lines)), self._resume)

    def _resume(self) -> None:
        self._rearm = None
        if self._transport is not None and not self._transport.is_closing():
            self._transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._tail:
            self._line(self._tail)
            self._tail = b""
        self.close()

    def close(self) -> None:
        self._open.discard(self)
        if self._rearm is not None:
            self._rearm.cancel()
            self._rearm = None
        if self._transport is not None:
            self._transport.close()
            self._transport = None


class LogSink:
    """The bound sockets at `path` (datagrams) and `stream_socket_path(path)` while started (a
    stale file from a dead agent is replaced)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.stream_path = stream_socket_path(path)
        self._reader: _Reader | None = None
        self._lines: _Lines | None = None
        self._server: asyncio.AbstractServer | None = None
        self._streams: set[_StreamReader] = set()

    async def start(self) -> None:
        os.makedirs(os.path.dirname(self.path), mode=0o755, exist_ok=True)
        for stale in (self.path, self.stream_path):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(stale)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        stream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o117)  # 0660 from the start: no window with a wider mode
        try:
            sock.bind(self.path)
            stream.bind(self.stream_path)
        finally:
            os.umask(old)
        sock.setblocking(False)
        try:
            sock.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, _RECEIVE_BUFFER)
        except OSError:  # not privileged: as much as net.core.rmem_max allows
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RECEIVE_BUFFER)
        loop = asyncio.get_running_loop()
        lines = self._lines = _Lines(line_batch(LOG, loop))
        self._reader = _Reader(loop, sock, lines)
        self._server = await loop.create_unix_server(
            lambda: _StreamReader(loop, lines, self._streams), sock=stream)

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        if self._server is not None:
            self._server.close()
            self._server = None
        for reader in list(self._streams):
            reader.close()
        if self._lines is not None:
            self._lines.flush()
            self._lines = None
        for path in (self.path, self.stream_path):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
