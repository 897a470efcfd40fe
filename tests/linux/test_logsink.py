"""The agents' syslog sink for their proxies (`openimds.linux.logsink`), over a real socket."""

from __future__ import annotations

import asyncio
import io
import logging
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from openimds.linux.logsink import (
    COALESCE_SECONDS,
    LOG,
    QUIET_COALESCE_SECONDS,
    QUIET_LINES,
    LogSink,
    coalesce_delay,
    parse_syslog,
    stream_socket_path,
)


@pytest.mark.parametrize(("datagram", "level", "text"), [
    (b"<134>Dec  7 03:04:05 haproxy[12]: 10.0.0.5:4242 GET /\n", logging.INFO,
     "haproxy[12]: 10.0.0.5:4242 GET /"),
    (b"<132>haproxy[12]: Server metadata is DOWN", logging.WARNING,
     "haproxy[12]: Server metadata is DOWN"),
    (b"<131>x", logging.ERROR, "x"),
    (b"no priority at all", logging.INFO, "no priority at all"),
    (b"<134>bad utf-8 \xff", logging.INFO, "bad utf-8 \ufffd"),
    # From haproxy's ring buffer: the host name after the time is not part of the text.
    (b"<134>Dec  7 06:12:48 localhost haproxy-metadata-proxy-n1[798]: 10.0.0.5:4242 GET /",
     logging.INFO, "haproxy-metadata-proxy-n1[798]: 10.0.0.5:4242 GET /"),
    (b"<134>Dec  7 06:12:48 haproxy[798]: two words: kept", logging.INFO,
     "haproxy[798]: two words: kept"),
])
def test_parse_syslog(datagram: bytes, level: int, text: str) -> None:
    assert parse_syslog(datagram) == (level, text)


@pytest.fixture
def plain_stream() -> Iterator[io.StringIO]:
    """`openimds.haproxy` into one plain StreamHandler, as `setup_logging` sets it up."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    saved = LOG.handlers[:], LOG.propagate, LOG.level
    LOG.handlers[:] = [handler]
    LOG.propagate = False
    LOG.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        LOG.handlers[:], LOG.propagate = saved[0], saved[1]
        LOG.setLevel(saved[2])


async def _lines(stream: io.StringIO, count: int) -> list[str]:
    for _ in range(2000):
        lines = stream.getvalue().splitlines()
        if len(lines) >= count:
            return lines
        await asyncio.sleep(0.005)  # polling period: the sink writes after a loop iteration
    raise AssertionError(f"only {stream.getvalue().splitlines()} arrived")


async def test_lines_are_written_as_records_would_be(tmp_path: Path,
                                                    plain_stream: io.StringIO) -> None:
    sink = LogSink(str(tmp_path / "log.sock"))
    await sink.start()
    sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        def send() -> None:
            # From a thread: a unix datagram socket blocks when the sink's queue is full, and
            # the sink reads on this test's event loop.
            for i in range(50):
                sender.sendto(f"<134>haproxy[7]: request {i} 100% done".encode(), sink.path)
            sender.sendto(b"<132>haproxy[7]: Server api0 is DOWN", sink.path)

        await asyncio.to_thread(send)
        lines = await _lines(plain_stream, 51)
    finally:
        sender.close()
        sink.close()
    # Every INFO line in order and whole (batched), the warning with its own level (a record).
    assert lines[:50] == [f"INFO openimds.haproxy haproxy[7]: request {i} 100% done"
                          for i in range(50)]
    assert lines[50] == "WARNING openimds.haproxy haproxy[7]: Server api0 is DOWN"
    assert not (tmp_path / "log.sock").exists()


async def test_without_a_plain_handler_lines_are_records(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOG.name)
    sink = LogSink(str(tmp_path / "log.sock"))
    await sink.start()
    sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sender.sendto(b"<134>haproxy[7]: one line", sink.path)
        for _ in range(2000):
            if caplog.records:
                break
            await asyncio.sleep(0.005)  # polling period
    finally:
        sender.close()
        sink.close()
    assert [(r.name, r.levelno, r.getMessage()) for r in caplog.records] == [
        (LOG.name, logging.INFO, "haproxy[7]: one line")]


async def test_lines_keep_coming_after_a_quiet_spell(tmp_path: Path,
                                                     plain_stream: io.StringIO) -> None:
    """Reading is re-armed after each coalesced read: a later line still arrives."""
    sink = LogSink(str(tmp_path / "log.sock"))
    await sink.start()
    sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        for i in range(3):
            sender.sendto(f"<134>haproxy[7]: line {i}".encode(), sink.path)
            # Each line is read on its own wake-up, after the previous one was written.
            assert (await _lines(plain_stream, i + 1))[i] == (
                f"INFO openimds.haproxy haproxy[7]: line {i}")
    finally:
        sender.close()
        sink.close()


def test_a_read_of_few_lines_waits_longer_than_a_busy_one() -> None:
    # Many quiet proxies: fewer wake-ups; one busy proxy: read often, its ring stays far
    # from full.
    assert coalesce_delay(0) == coalesce_delay(1) == coalesce_delay(QUIET_LINES - 1) \
        == QUIET_COALESCE_SECONDS
    assert coalesce_delay(QUIET_LINES) == coalesce_delay(5000) == COALESCE_SECONDS
    assert COALESCE_SECONDS < QUIET_COALESCE_SECONDS <= 0.05


def test_stream_socket_sits_beside_the_datagram_socket() -> None:
    assert stream_socket_path("/s/ns-metadata-proxy/dhcp-agent-log.sock") == (
        "/s/ns-metadata-proxy/dhcp-agent-log.stream.sock")
    assert stream_socket_path("/s/sink") == "/s/sink.stream.sock"


async def test_stream_lines_arrive_whole_and_in_order(tmp_path: Path,
                                                       plain_stream: io.StringIO) -> None:
    """haproxy's ring forwards many lines per send, and a send may end inside a line."""
    sink = LogSink(str(tmp_path / "log.sock"))
    await sink.start()
    assert sink.stream_path == str(tmp_path / "log.stream.sock")
    reader, writer = await asyncio.open_unix_connection(sink.stream_path)
    try:
        text = "".join(f"<134>Dec  7 06:12:48 localhost haproxy-x[7]: request {i}\n"
                       for i in range(40))
        text += "<132>Dec  7 06:12:48 localhost haproxy-x[7]: Server api0 is DOWN\n"
        cut = len(text) // 2 + 5  # inside a line
        writer.write(text[:cut].encode())
        await writer.drain()
        lines = await _lines(plain_stream, 1)  # the first part was read...
        writer.write(text[cut:].encode())  # ...before the rest of the cut line came
        await writer.drain()
        lines = await _lines(plain_stream, 41)
        # A connection that goes away: its last line, without a newline, is kept too.
        writer.write(b"<134>Dec  7 06:12:49 localhost haproxy-x[7]: last words")
        await writer.drain()
        writer.close()
        await writer.wait_closed()
        lines = await _lines(plain_stream, 42)
    finally:
        sink.close()
    assert lines[:40] == [f"INFO openimds.haproxy haproxy-x[7]: request {i}" for i in range(40)]
    assert lines[40] == "WARNING openimds.haproxy haproxy-x[7]: Server api0 is DOWN"
    assert lines[41] == "INFO openimds.haproxy haproxy-x[7]: last words"
    assert not (tmp_path / "log.sock").exists() and not (tmp_path / "log.stream.sock").exists()


async def test_stream_keeps_reading_after_a_pause(tmp_path: Path,
                                                  plain_stream: io.StringIO) -> None:
    """After each read the connection pauses to coalesce; it resumes: later lines arrive."""
    sink = LogSink(str(tmp_path / "log.sock"))
    await sink.start()
    _, writer = await asyncio.open_unix_connection(sink.stream_path)
    try:
        for i in range(3):
            writer.write(f"<134>haproxy[7]: line {i}\n".encode())
            await writer.drain()
            assert (await _lines(plain_stream, i + 1))[i] == (
                f"INFO openimds.haproxy haproxy[7]: line {i}")
    finally:
        writer.close()
        sink.close()
