"""The lean HTTP layer (`openimds.leanhttp`) over a real loopback socket.

What a full server does and this layer must too: pipelined requests answered in order (also
when a handler awaits), HEAD without a body, HTTP/1.0 keep-alive, limits with precise 4xx,
Expect: 100-continue, and the idle and slow-client timeouts.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest

from openimds.leanhttp import LeanServer, Request, status_head

LOG = logging.getLogger("tests.leanhttp")


# Set by a test to hold "/hold" requests until it says so.
HOLD: dict[str, asyncio.Event] = {}


async def _handler(request: Request) -> tuple[bytes, bytes]:
    if request.target.startswith("/slow"):
        # Suspends: later pipelined requests must wait for this answer.
        await asyncio.sleep(0)
    if request.target.startswith("/hold"):
        await HOLD["event"].wait()
    if request.target.startswith("/timeout"):
        # Suspends first (the eager step ends), then needs its Task: asyncio.timeout must
        # cancel the handler itself and turn that into TimeoutError.
        await asyncio.sleep(0)
        try:
            async with asyncio.timeout(0.01):
                await asyncio.Event().wait()
        except TimeoutError:
            body = b"timed out"
            return status_head(200, "text/plain", len(body)), body
    body = f"{request.method} {request.target} {len(request.body or b'')}".encode()
    return status_head(200, "text/plain", len(body)), body


async def _start(**kwargs: float | bool) -> tuple[LeanServer, int]:
    server = LeanServer(_handler, logger=LOG, body_limit=10, **kwargs)  # type: ignore[arg-type]
    port = await server.start_tcp("127.0.0.1", 0)
    return server, port


@pytest.fixture
async def port() -> AsyncIterator[int]:
    server, bound = await _start()
    yield bound
    await server.close()


async def _exchange(port: int, data: bytes, timeout: float = 10) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    out = await asyncio.wait_for(reader.read(), timeout)
    writer.close()
    return out


async def test_pipelined_requests_are_answered_in_order(port: int) -> None:
    data = (b"GET /slow/1 HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /fast/2 HTTP/1.1\r\nHost: x\r\n\r\n"
            b"HEAD /slow/3 HTTP/1.1\r\nHost: x\r\n\r\n"
            b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
            b"GET /last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    out = await _exchange(port, data)
    assert out.count(b"HTTP/1.1 200 OK") == 5
    bodies = [b"GET /slow/1 0", b"GET /fast/2 0", b"POST /p 3", b"GET /last 0"]
    positions = [out.index(b) for b in bodies]
    assert positions == sorted(positions)
    # HEAD: the GET's Content-Length, no body.
    assert b"HEAD /slow/3" not in out
    assert out.rstrip().endswith(b"GET /last 0")
    assert b"Connection: close" in out


async def test_http10_keep_alive_on_request(port: int) -> None:
    out = await _exchange(port, b"GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
                                b"GET /b HTTP/1.0\r\n\r\n")
    first, second = out.split(b"GET /a 0")
    assert b"Connection: keep-alive" in first
    assert b"Connection: close" in second and second.endswith(b"GET /b 0")


@pytest.mark.parametrize(("request_bytes", "status"), [
    (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", b"414"),
    (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 17000 + b"\r\n\r\n", b"431"),
    (b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-A: 1\r\n" * 101 + b"\r\n", b"431"),
    (b"GET / HTTP/1.1\r\n\r\n", b"400"),
    (b"G\x01T / HTTP/1.1\r\nHost: x\r\n\r\n", b"400"),
    (b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", b"400"),
])
async def test_limits_and_malformed_requests(port: int, request_bytes: bytes, status: bytes,
                                             caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    out = await _exchange(port, request_bytes)
    assert out.startswith(b"HTTP/1.1 " + status), out[:100]
    assert b"Connection: close" in out
    assert [r for r in caplog.records if "refused a malformed request" in r.getMessage()]
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


async def test_body_beyond_the_limit_is_answered_without_reading_it(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\n"
                 + b"x" * 50)
    out = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    # The handler saw body_limit bytes, and the connection closes after the answer.
    assert out.endswith(b"POST /p 10") and b"Connection: close" in out


async def test_expect_100_continue(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
                 b"Expect: 100-continue\r\nConnection: close\r\n\r\n")
    assert await asyncio.wait_for(reader.readline(), 10) == b"HTTP/1.1 100 Continue\r\n"
    writer.write(b"abc")
    out = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    assert out.endswith(b"POST /p 3")


async def test_idle_connection_is_closed() -> None:
    server, port = await _start(idle_timeout=1)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
        out = await asyncio.wait_for(reader.read(), 10)  # EOF: the server closed it
        writer.close()
        assert out.endswith(b"GET /a 0")
    finally:
        await server.close()


async def test_slow_client_gets_408() -> None:
    server, port = await _start(request_timeout=1)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /a HTTP/1.1\r\nHost: x\r\n")  # the head never ends
        out = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        assert out.startswith(b"HTTP/1.1 408")
    finally:
        await server.close()


async def test_close_waits_for_a_request_in_flight() -> None:
    HOLD["event"] = asyncio.Event()
    server, bound = await _start()
    reader, writer = await asyncio.open_connection("127.0.0.1", bound)
    writer.write(b"GET /hold HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    while not any(c.busy() for c in server.connections):
        await asyncio.sleep(0.001)
    closing = asyncio.create_task(server.close())
    HOLD["event"].set()
    await closing
    out = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    assert out.endswith(b"GET /hold 0") and b"Connection: close" in out


@pytest.mark.parametrize("eager", [True, False])
async def test_a_handler_keeps_its_task_semantics(eager: bool) -> None:
    server, port = await _start(eager=eager)
    try:
        out = await _exchange(port, b"GET /timeout HTTP/1.1\r\nHost: x\r\n"
                                    b"Connection: close\r\n\r\n")
        assert out.endswith(b"timed out")
    finally:
        await server.close()


class _Transport:
    """What the layer writes, without a socket: each read is given exactly as the test cuts it."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def get_extra_info(self, name: str) -> object:
        return ("10.0.0.9", 5555)

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class _Kept:
    """A shortcut answering "/kept" (token "kept") and a replay that can be told to refuse."""

    def __init__(self) -> None:
        self.shortcut_calls = 0
        self.replays: list[tuple[object, str | None]] = []
        self.refuse = False

    def shortcut(self, method: str, target: bytes, headers: list[tuple[bytes, bytes]],
                 peer: str | None) -> tuple[bytes, bytes, object] | None:
        if target != b"/kept":
            return None
        self.shortcut_calls += 1
        body = b"kept answer"
        return status_head(200, "text/plain", len(body)), body, "kept"

    def replay(self, token: object, peer: str | None) -> tuple[bytes, bytes] | None:
        self.replays.append((token, peer))
        if self.refuse:
            return None
        body = b"kept answer"
        return status_head(200, "text/plain", len(body)), body


def _conn(kept: _Kept, **kwargs: int) -> tuple[LeanServer, asyncio.Protocol, _Transport]:
    server = LeanServer(_handler, logger=LOG, shortcut=kept.shortcut, replay=kept.replay,
                        date_header=False, **kwargs)
    conn = server._protocol()
    transport = _Transport()
    conn.connection_made(transport)  # type: ignore[arg-type]
    return server, conn, transport


KEPT = b"GET /kept HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n\r\n"


async def test_the_same_request_bytes_are_answered_again_without_the_parser() -> None:
    kept = _Kept()
    server, conn, transport = _conn(kept)
    conn.data_received(KEPT)
    assert kept.shortcut_calls == 1 and not kept.replays
    conn.data_received(bytes(KEPT))  # equal bytes, another object, as a new read gives
    conn.data_received(bytes(KEPT))
    assert kept.shortcut_calls == 1
    assert kept.replays == [("kept", "10.0.0.9")] * 2
    assert transport.written == [transport.written[0]] * 3
    assert transport.written[0].endswith(b"\r\n\r\nkept answer") and not transport.closed
    # Other bytes (one header differs) are parsed: the replay is by exact bytes only.
    conn.data_received(KEPT.replace(b"X-A: 1", b"X-A: 2"))
    assert kept.shortcut_calls == 2 and len(kept.replays) == 2


async def test_a_refused_replay_goes_through_the_parser() -> None:
    kept = _Kept()
    server, conn, transport = _conn(kept)
    conn.data_received(KEPT)
    kept.refuse = True
    conn.data_received(KEPT)
    assert len(kept.replays) == 1 and kept.shortcut_calls == 2
    assert len(transport.written) == 2


@pytest.mark.parametrize("reads", [
    # Split across two reads.
    [KEPT[:10], KEPT[10:]],
    # Two requests in one read.
    [KEPT + KEPT],
    # The read ends inside a second request.
    [KEPT + KEPT[:5], KEPT[5:]],
])
async def test_only_a_request_alone_in_one_read_is_remembered(reads: list[bytes]) -> None:
    kept = _Kept()
    server, conn, transport = _conn(kept)
    for data in reads:
        conn.data_received(data)
    assert server.replays == {}
    assert len(transport.written) == b"".join(reads).count(b"GET /kept")


async def test_a_remembered_request_waits_behind_a_request_in_flight() -> None:
    kept = _Kept()
    server, conn, transport = _conn(kept)
    conn.data_received(KEPT)
    HOLD["event"] = asyncio.Event()
    try:
        conn.data_received(b"GET /hold HTTP/1.1\r\nHost: x\r\n\r\n")
        conn.data_received(KEPT)
        # Not answered ahead of /hold: queued behind it, no replay.
        assert len(transport.written) == 1 and not kept.replays
        HOLD["event"].set()
        for _ in range(100):
            if len(transport.written) == 3:
                break
            await asyncio.sleep(0)
        assert b"GET /hold 0" in transport.written[1]
        # Queued requests go to the handler, in order (the shortcut only sees a request with
        # nothing before it).
        assert transport.written[2].endswith(b"GET /kept 0")
    finally:
        HOLD.pop("event", None)


async def test_replayed_head_and_closing_requests_keep_their_framing() -> None:
    kept = _Kept()
    server, conn, transport = _conn(kept)
    head = KEPT.replace(b"GET", b"HEAD")
    conn.data_received(head)
    conn.data_received(head)
    assert kept.replays and transport.written[0] == transport.written[1]
    assert transport.written[1].endswith(b"\r\n\r\n")  # no body
    closing = b"GET /kept HTTP/1.0\r\n\r\n"
    conn.data_received(closing)
    assert transport.closed and transport.written[2].endswith(b"kept answer")
    assert b"Connection: close" in transport.written[2]
    # A new connection sending the same bytes is answered again, and closed again.
    conn2 = server._protocol()
    transport2 = _Transport()
    conn2.connection_made(transport2)  # type: ignore[arg-type]
    conn2.data_received(closing)
    assert len(kept.replays) == 2 and transport2.written == [transport.written[2]]
    assert transport2.closed


async def test_remembered_requests_are_bounded() -> None:
    kept = _Kept()
    server, conn, transport = _conn(kept, replay_size=2)
    for i in range(5):
        conn.data_received(KEPT.replace(b"X-A: 1", f"X-A: {i}".encode()))
        assert server.replays is not None and 1 <= len(server.replays) <= 2
