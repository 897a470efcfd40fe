"""A lean HTTP/1.1 server: an `asyncio.Protocol` around the httptools (llhttp) parser.

Shared by the metadata API (`metadata/fastserver.py`) and the metadata agent. The handler is a
coroutine function `handler(Request) -> (head, body)`: `head` is the status line and headers
(each ending in CRLF, without the blank line), `body` the content; this layer adds the
`Connection` header when it closes or keeps an HTTP/1.0 connection, the blank line, and leaves
the body out for HEAD. Per request it costs one parser callback set and one write(2).

What it keeps of a full server (aiohttp's behaviour, where the tests pin it):

* keep-alive (HTTP/1.1 by default, HTTP/1.0 on request) and pipelining: responses leave in
  request order; while a handler awaits, later requests wait in a short queue (reading pauses
  when it is full);
* HEAD: the GET head with its Content-Length, no body;
* limits: request target 8190 bytes (414), one header line 16 KiB, 100 headers, 64 KiB of
  head (431); a body is collected only for the methods in `body_methods` (None: all), up to
  `body_limit` bytes: then the handler runs at once with what came so far and the connection
  closes after its answer (the metadata API's password: "too large" needs no more bytes), or,
  with `refuse_larger_body`, the request is a 413; other bodies are read and dropped, up to
  `max_body` (413 beyond);
* HTTP/1.1 without Host, malformed bytes, unknown methods: 400 and close, logged as one INFO
  line on the given logger (never a traceback);
* `Expect: 100-continue` is answered before the body is read;
* timeouts, checked by one timer per server per second (nothing per request): a connection
  idle for `idle_timeout` is closed; a request whose head and body have not arrived within
  `request_timeout` of its first byte gets 408 and the connection closes;
* back-pressure: reading pauses while the transport's write buffer is full.

A `shortcut` (optional) sees every complete request first, inside the parser callback, with
the raw header bytes, and may answer it from memory with no handler, Request or coroutine at
all (the metadata API's answers kept as bytes); it returns None to leave the request to the
handler. It runs only when no earlier request of the connection is still being answered, so
responses keep their order.

With a `replay` as well, a request the shortcut answered is remembered by its exact bytes
(bounded, `replay_size`) when it arrived alone in one read, starting and ending at a message
boundary: the common case of a keep-alive client, and of haproxy, asking again for the same
thing. The next read of exactly the same bytes at a message boundary skips the parser and goes
straight to `replay(token, peer)`, the token being what the shortcut returned with its answer;
the same bytes parse the same way, so nothing HTTP decides is lost, and `replay` re-checks all
that may have changed since (returning None sends the bytes through the parser as usual).

With `eager` (the default), handlers that finish without suspending (the common case: answers
from memory) are run to completion inside the parser callback with `coroutine.send(None)`, so
no Task is created and no event-loop iteration passes between request and response; a handler
that does suspend is carried on by a Task. The eager first step runs outside any Task: a
handler that needs one before its first suspension (`asyncio.timeout`, aiohttp's client
timeouts) must be served with `eager=False`, which runs every request in a Task.
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import logging
import socket
import time
from collections import deque
from collections.abc import Callable, Coroutine
from email.utils import formatdate
from typing import Any, NamedTuple, cast

import httptools

__all__ = ["LeanServer", "Request", "Handler", "Replay", "Shortcut", "status_head"]


class Request(NamedTuple):
    method: str
    # The request target as sent (origin, absolute, authority or asterisk form).
    target: str
    headers: tuple[tuple[str, str], ...]
    # Collected only for `body_methods`, at most `body_limit` bytes; None when there was none.
    body: bytes | None
    # The peer's address ("" on a unix socket).
    peer: str | None


Handler = Callable[[Request], Coroutine[Any, Any, tuple[bytes, bytes]]]
# Answers a complete request from memory, or returns None to leave it to the handler:
# (method, request target bytes, raw (name, value) header pairs, peer) ->
# (head, body, replay token or None) | None. Called inside the parser callback, only when
# nothing is queued before the request.
Shortcut = Callable[
    [str, bytes, list[tuple[bytes, bytes]], str | None], tuple[bytes, bytes, Any] | None
]
# Answers again a request whose exact bytes the shortcut answered before: (its token, peer) ->
# (head, body), or None to parse the bytes as usual.
Replay = Callable[[Any, str | None], tuple[bytes, bytes] | None]
REPLAY_SIZE = 65536

MAX_TARGET = 8190
MAX_HEADER_LINE = 16384
MAX_HEADERS = 100
MAX_HEAD = 65536
PIPELINE_DEPTH = 16
# Ends the head of a kept-alive HTTP/1.0 response (1.1 keeps alive by default).
_KEEP_ALIVE_10 = b"Connection: keep-alive\r\n\r\n"


def _reason(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def status_head(status: int, content_type: str, length: int,
                extra: tuple[tuple[str, str], ...] = ()) -> bytes:
    """Status line and headers of a response (no blank line), as `Handler` returns it."""
    lines = [f"HTTP/1.1 {status} {_reason(status)}\r\n",
             f"Content-Type: {content_type}\r\nContent-Length: {length}\r\n"]
    lines += [f"{k}: {v}\r\n" for k, v in extra]
    return "".join(lines).encode("latin-1")


def _error_response(status: int, message: str) -> bytes:
    body = f"{status} {_reason(status)}: {message}\n".encode()
    return status_head(status, "text/plain; charset=utf-8", len(body)) + (
        b"Connection: close\r\n\r\n" + body)


class _ClientError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class _Enough(Exception):
    """Raised from the body callback once the collected body reached `body_limit`."""


class LeanServer:
    """Listeners and connections of one handler; `start_*` then `close`."""

    def __init__(
        self,
        handler: Handler,
        *,
        logger: logging.Logger,
        body_methods: frozenset[str] | None = frozenset({"POST"}),
        body_limit: int = 1021,
        refuse_larger_body: bool = False,
        max_body: int = 1 << 20,
        idle_timeout: float = 75.0,
        request_timeout: float = 30.0,
        date_header: bool = True,
        eager: bool = True,
        shortcut: Shortcut | None = None,
        replay: Replay | None = None,
        replay_size: int = REPLAY_SIZE,
    ) -> None:
        self.handler = handler
        self.shortcut = shortcut
        self.replay = replay
        self.replay_size = replay_size
        # Exact request bytes -> (replay token, keep-alive ending, HEAD); see the docstring.
        self.replays: dict[bytes, tuple[Any, bytes | None, bool]] | None = (
            {} if replay is not None and shortcut is not None and replay_size > 0 else None)
        self.logger = logger
        self.body_methods = body_methods
        self.body_limit = body_limit
        self.refuse_larger_body = refuse_larger_body
        self.eager = eager
        self.max_body = max_body
        self.idle_timeout = idle_timeout
        self.request_timeout = request_timeout
        self.connections: set[_Connection] = set()
        self.servers: list[asyncio.AbstractServer] = []
        # Whole seconds since start, advanced by the sweep timer: connections stamp it
        # instead of reading a clock per request.
        self.tick = 0
        self.date = b""
        self._date_header = date_header
        self.stopping = False
        self._sweeper: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._update_date()

    def _update_date(self) -> None:
        if self._date_header:
            self.date = b"Date: " + formatdate(time.time(), usegmt=True).encode() + b"\r\n"

    def _protocol(self) -> _Connection:
        return _Connection(self)

    def _arm(self) -> None:
        if self._sweeper is None:
            self._loop = asyncio.get_running_loop()
            self._sweeper = self._loop.call_later(1.0, self._sweep)

    def _sweep(self) -> None:
        assert self._loop is not None
        self.tick += 1
        self._update_date()
        for conn in list(self.connections):
            conn.check_timeouts(self.tick)
        self._sweeper = self._loop.call_later(1.0, self._sweep)

    async def start_tcp(self, host: str, port: int, *, reuse_port: bool = False,
                        backlog: int = 1024) -> int:
        """Listen on host:port; returns the bound port (for port 0)."""
        self._arm()
        server = await asyncio.get_running_loop().create_server(
            self._protocol, host, port, reuse_address=True, reuse_port=reuse_port or None,
            backlog=backlog)
        self.servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    async def start_socket(self, sock: socket.socket, *, backlog: int = 1024) -> None:
        """Serve on an already-listening socket (a unix socket shared by forked workers)."""
        self._arm()
        loop = asyncio.get_running_loop()
        if sock.family == socket.AF_UNIX:
            server = await loop.create_unix_server(self._protocol, sock=sock, backlog=backlog)
        else:
            server = await loop.create_server(self._protocol, sock=sock, backlog=backlog)
        self.servers.append(server)

    async def close(self, timeout: float = 5.0) -> None:
        """Stop listening, let in-flight requests finish (up to `timeout`), close the rest."""
        self.stopping = True
        for server in self.servers:
            server.close()
        for conn in list(self.connections):
            conn.close_when_idle()
        deadline = time.monotonic() + timeout
        while any(c.busy() for c in self.connections) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for conn in list(self.connections):
            conn.abort()
        for server in self.servers:
            with contextlib.suppress(Exception):
                await server.wait_closed()
        self.servers.clear()
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None


class _Connection(asyncio.Protocol):
    __slots__ = (
        "server", "transport", "parser", "peer", "since", "reading", "url", "method", "headers",
        "has_host",
        "head_size", "body", "body_size", "collect", "queue", "busy_task", "closing",
        "stop_parsing", "paused", "write_paused", "handler", "head_only", "messages", "answered",
    )

    def __init__(self, server: LeanServer) -> None:
        self.server = server
        self.handler = server.handler
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.peer: str | None = None
        self.since = server.tick
        # Inside a request (first byte seen, message not complete).
        self.reading = False
        self.url: list[bytes] = []
        self.method = ""
        # Raw (name, value) pairs: decoded only for the handler (a shortcut reads the bytes).
        self.headers: list[tuple[bytes, bytes]] = []
        self.has_host = False
        self.head_size = 0
        self.body: list[bytes] | None = None
        self.body_size = 0
        self.collect = False
        # Requests parsed while a handler was running: (Request, keep_alive, head_only) or an
        # error response (bytes) to send in order.
        self.queue: deque[tuple[Request, bytes | None, bool] | bytes] = deque()
        self.busy_task: asyncio.Task[None] | None = None
        self.closing = False
        self.stop_parsing = False
        self.paused = False
        self.write_paused = False
        self.head_only = False
        # Messages completed in the current read, and what the shortcut answered the first
        # with (a candidate for `LeanServer.replays`).
        self.messages = 0
        self.answered: tuple[Any, bytes | None, bool] | None = None

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.peer = peer[0] if isinstance(peer, tuple) else (peer or "")
        self.server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        self.closing = True
        self.queue.clear()
        if self.busy_task is not None:
            self.busy_task.cancel()

    def pause_writing(self) -> None:
        self.write_paused = True
        self._pause()

    def resume_writing(self) -> None:
        self.write_paused = False
        self._maybe_resume()

    def data_received(self, data: bytes) -> None:
        if self.stop_parsing:
            return
        replays = self.server.replays
        at_boundary = not self.reading and self.busy_task is None and not self.queue
        if replays is not None and at_boundary:
            kept = replays.get(data)
            if kept is not None:
                result = self.server.replay(kept[0], self.peer)  # type: ignore[misc]
                if result is not None:
                    self.since = self.server.tick
                    self._write(result, kept[1], kept[2])
                    return
        self.messages = 0
        self.answered = None
        try:
            self.parser.feed_data(data)
            if (replays is not None and at_boundary and self.messages == 1
                    and self.answered is not None and not self.reading):
                if len(replays) >= self.server.replay_size:
                    replays.clear()
                replays[data] = self.answered
        except httptools.HttpParserUpgrade:
            # CONNECT, or a request asking to switch protocols: what follows is not HTTP we
            # serve. A complete request was queued or answered; close after its response.
            self.stop_parsing = True
            if not self.reading:
                self._enqueue_close()
            else:
                self._client_error(400, "protocol upgrade is not supported")
        except _ClientError as err:
            self._client_error(err.status, err.message)
        except _Enough:
            self._dispatch_early()
        except httptools.HttpParserCallbackError as err:
            cause = err.__context__
            if isinstance(cause, _ClientError):
                self._client_error(cause.status, cause.message)
            elif isinstance(cause, _Enough):
                self._dispatch_early()
            else:
                raise
        except httptools.HttpParserError as err:
            self._client_error(400, str(err) or type(err).__name__)

    def eof_received(self) -> bool | None:
        # Half-close from the client: finish answering what was asked, then close.
        if self.busy_task is None and not self.queue:
            return None
        self.stop_parsing = True
        self._enqueue_close()
        return True

    # parser callbacks

    def on_message_begin(self) -> None:
        self.reading = True
        self.since = self.server.tick
        self.url = []
        self.headers = []
        self.has_host = False
        self.head_size = 0
        self.body = None
        self.body_size = 0

    def on_url(self, url: bytes) -> None:
        self.url.append(url)
        self.head_size += len(url)
        if self.head_size > MAX_TARGET:
            raise _ClientError(414, "request target too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        size = len(name) + len(value)
        head_size = self.head_size = self.head_size + size + 4
        headers = self.headers
        if size > MAX_HEADER_LINE:
            raise _ClientError(431, "header line too long")
        if len(headers) >= MAX_HEADERS or head_size > MAX_HEAD:
            raise _ClientError(431, "too many headers")
        if len(name) == 4 and name.lower() == b"host":
            self.has_host = True
        headers.append((name, value))

    def on_headers_complete(self) -> None:
        parser = self.parser
        self.method = method = parser.get_method().decode()
        if not self.has_host and parser.get_http_version() == "1.1":
            raise _ClientError(400, "HTTP/1.1 request without Host")
        methods = self.server.body_methods
        self.collect = methods is None or method in methods
        if self.collect and any(
            k.lower() == b"expect" and v.lower() == b"100-continue" for k, v in self.headers
        ) and self.busy_task is None and not self.queue and self.transport is not None:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        self.body_size += len(body)
        if self.collect:
            if self.body is None:
                self.body = []
            have = self.body_size - len(body)
            room = self.server.body_limit - have
            if room > 0:
                self.body.append(body[:room])
            if self.server.refuse_larger_body:
                if self.body_size > self.server.body_limit:
                    raise _ClientError(413, "request body too large")
            elif self.body_size >= self.server.body_limit:
                # The handler sees all it may read: answer now, close after (the rest of the
                # body is neither read nor buffered).
                raise _Enough()
        elif self.body_size > self.server.max_body:
            raise _ClientError(413, "request body too large")

    def _dispatch_early(self) -> None:
        self.stop_parsing = True
        self.reading = False
        self._complete(None)

    def on_message_complete(self) -> None:
        self.reading = False
        self.messages += 1
        self.since = self.server.tick
        if self.closing:
            return
        parser = self.parser
        keep_alive: bytes | None = None
        # After CONNECT or an Upgrade request the bytes that follow are no HTTP we serve.
        if parser.should_keep_alive() and not parser.should_upgrade():
            keep_alive = b"\r\n" if parser.get_http_version() != "1.0" else _KEEP_ALIVE_10
        shortcut = self.server.shortcut
        if shortcut is not None and self.busy_task is None and not self.queue:
            url = self.url
            method = self.method
            result = shortcut(method, url[0] if len(url) == 1 else b"".join(url), self.headers,
                              self.peer)
            if result is not None:
                head_only = method == "HEAD"
                if result[2] is not None:
                    self.answered = (result[2], keep_alive, head_only)
                self._write((result[0], result[1]), keep_alive, head_only)
                return
        self._complete(keep_alive)

    def _complete(self, keep_alive: bytes | None) -> None:
        method = self.method
        url = b"".join(self.url).decode("utf-8", "surrogateescape")
        body = b"".join(self.body) if self.body is not None else None
        headers = tuple((k.decode("utf-8", "surrogateescape"), v.decode("utf-8", "surrogateescape"))
                        for k, v in self.headers)
        request = Request(method, url, headers, body, self.peer)
        head_only = method == "HEAD"
        if self.busy_task is not None or self.queue:
            self.queue.append((request, keep_alive, head_only))
            if len(self.queue) >= PIPELINE_DEPTH:
                self._pause()
            return
        self._run(request, keep_alive, head_only)

    # serving

    def _run(self, request: Request, keep_alive: bytes | None, head_only: bool) -> None:
        coro = self.handler(request)
        if not self.server.eager:
            self.busy_task = asyncio.get_running_loop().create_task(
                self._resume(coro, None, keep_alive, head_only, started=False))
            return
        try:
            yielded = coro.send(None)
        except StopIteration as done:
            self._write(done.value, keep_alive, head_only)
            return
        except BaseException:
            self.server.logger.exception("request handler failed")
            self._write_raw(_error_response(500, "internal error"), False)
            return
        self.busy_task = asyncio.get_running_loop().create_task(
            self._resume(coro, yielded, keep_alive, head_only))

    async def _resume(self, coro: Coroutine[Any, Any, tuple[bytes, bytes]], yielded: Any,
                      keep_alive: bytes | None, head_only: bool, started: bool = True) -> None:
        """Run the handler in this Task: whole (not eager), or carried on after the eager first
        step suspended on `yielded`, stepping it as a Task does (a cancellation of this Task,
        e.g. by an `asyncio.timeout` the handler entered after resuming, is thrown into it)."""
        try:
            if not started:
                result = await coro
            else:
                result = await self._carry_on(coro, yielded)
        except asyncio.CancelledError:
            return
        except Exception:
            self.server.logger.exception("request handler failed")
            self.busy_task = None
            self._write_raw(_error_response(500, "internal error"), False)
            return
        self.busy_task = None
        self.since = self.server.tick
        self._write(result, keep_alive, head_only)
        self._drain_queue()

    @staticmethod
    async def _carry_on(coro: Coroutine[Any, Any, tuple[bytes, bytes]], yielded: Any
                        ) -> tuple[bytes, bytes]:
        try:
            while True:
                try:
                    if yielded is None:
                        await asyncio.sleep(0)
                    else:
                        yielded._asyncio_future_blocking = False
                        await asyncio.wait([yielded])
                except asyncio.CancelledError as exc:
                    if yielded is not None:
                        yielded.cancel()
                    yielded = coro.throw(exc)
                    continue
                yielded = coro.send(None)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
        finally:
            coro.close()

    def _drain_queue(self) -> None:
        while self.queue and self.busy_task is None and not self.closing:
            item = self.queue.popleft()
            if isinstance(item, bytes):
                self._write_raw(item, False)
            else:
                self._run(*item)
        self._maybe_resume()

    def _write(self, result: tuple[bytes, bytes], keep_alive: bytes | None, head_only: bool) -> None:
        head, body = result
        transport = self.transport
        if transport is None or self.closing:
            return
        server = self.server
        if keep_alive is not None and not server.stopping:
            transport.write(b"".join((head, server.date, keep_alive, b"" if head_only else body)))
            return
        transport.write(head + server.date + b"Connection: close\r\n\r\n"
                        + (b"" if head_only else body))
        self._close()

    def _write_raw(self, data: bytes, keep_alive: bool) -> None:
        if self.transport is None or self.closing:
            return
        self.transport.write(data)
        if not keep_alive:
            self._close()

    def _close(self) -> None:
        self.closing = True
        self.stop_parsing = True
        self.queue.clear()
        if self.transport is not None:
            self.transport.close()

    def _enqueue_close(self) -> None:
        if self.busy_task is None and not self.queue:
            self._close()
        else:
            self.queue.append(b"")

    def _client_error(self, status: int, message: str) -> None:
        self.stop_parsing = True
        self.reading = False
        self.server.logger.info(
            "refused a malformed request from %s with %d: %s", self.peer or "-", status,
            message.encode("ascii", "backslashreplace").decode()[:200])
        response = _error_response(status, message)
        if self.busy_task is None and not self.queue:
            self._write_raw(response, False)
        else:
            self.queue.append(response)

    def _pause(self) -> None:
        if not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()

    def _maybe_resume(self) -> None:
        if (self.paused and not self.write_paused and len(self.queue) < PIPELINE_DEPTH
                and self.transport is not None and not self.closing):
            self.paused = False
            self.transport.resume_reading()

    # timeouts and shutdown

    def check_timeouts(self, tick: int) -> None:
        if self.busy_task is not None or self.queue or self.closing:
            return
        if self.reading:
            if tick - self.since >= self.server.request_timeout:
                self._client_error(408, "request not complete in time")
        elif tick - self.since >= self.server.idle_timeout:
            self._close()

    def busy(self) -> bool:
        return self.busy_task is not None or bool(self.queue) or self.reading

    def close_when_idle(self) -> None:
        if not self.busy():
            self._close()

    def abort(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.abort()
