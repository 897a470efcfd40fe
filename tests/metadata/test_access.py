"""The access log: one line per request, as records or batched per event loop iteration."""

from __future__ import annotations

import asyncio
import io
import logging
import re
from collections.abc import Iterator

import pytest

from openimds.metadata.access import AccessLog

FORMAT = "%(asctime)s %(process)d %(levelname)s %(name)s %(message)s"  # setup_logging's
UUID = "b65cee2f-8c69-4aeb-be2f-f79742548fc2"


class CountingStream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


@pytest.fixture
def logger() -> Iterator[logging.Logger]:
    # Not registered with getLogger and without a parent: only the handlers a test adds (pytest
    # attaches its capture handler to every registered non-propagating logger).
    log = logging.Logger("test.access", logging.INFO)
    yield log
    log.handlers.clear()


def plain_handler(log: logging.Logger) -> CountingStream:
    stream = CountingStream()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter(FORMAT))
    log.addHandler(handler)
    return stream


def line(access: AccessLog, status: int = 200, instance: str | None = UUID) -> None:
    access(
        "10.0.0.5", "GET", "/openstack/latest/meta_data.json", status, 960, instance, "ok", 0.0012
    )


MESSAGE = (
    f'10.0.0.5 "GET /openstack/latest/meta_data.json" 200 960 instance={UUID} outcome=ok 1.2ms'
)


def test_records_path_is_one_record_per_call(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="openimds.metadata.access")
    access = AccessLog()
    line(access)
    line(access, 404, None)
    got = [r for r in caplog.records if r.name == "openimds.metadata.access"]
    assert [r.getMessage() for r in got] == [
        MESSAGE,
        MESSAGE.replace(" 200 ", " 404 ").replace(f"instance={UUID}", "instance=-"),
    ]
    assert all(r.levelno == logging.INFO for r in got)


async def test_batched_lines_are_what_the_formatter_writes_in_one_write(
    logger: logging.Logger,
) -> None:
    stream = plain_handler(logger)
    access = AccessLog(logger)
    assert access.batch_on(asyncio.get_running_loop())
    for _ in range(3):
        line(access)
    assert stream.getvalue() == ""  # not yet: after this loop iteration
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3 and stream.writes == 1
    # Exactly the handler's format: "<date> <time>,<ms> <pid> INFO <logger> <message>".
    pattern = re.compile(
        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} \d+ INFO " + re.escape(logger.name + " " + MESSAGE)
    )
    assert all(pattern.fullmatch(text) for text in lines), lines


async def test_batched_flush_writes_at_once(logger: logging.Logger) -> None:
    stream = plain_handler(logger)
    access = AccessLog(logger)
    assert access.batch_on(asyncio.get_running_loop())
    line(access)
    access.flush()
    assert stream.getvalue().endswith(MESSAGE + "\n")


async def test_level_above_info_writes_nothing(logger: logging.Logger) -> None:
    stream = plain_handler(logger)
    logger.setLevel(logging.WARNING)
    access = AccessLog(logger)
    assert access.batch_on(asyncio.get_running_loop())
    line(access)
    access.flush()
    assert stream.getvalue() == ""


class Capture(logging.StreamHandler):  # type: ignore[type-arg]
    def __init__(self) -> None:
        super().__init__(io.StringIO())
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


async def test_not_batched_when_output_is_not_one_plain_stream(logger: logging.Logger) -> None:
    loop = asyncio.get_running_loop()
    capture = Capture()  # a subclass, like pytest's: it must keep getting records
    logger.addHandler(capture)
    access = AccessLog(logger)
    assert not access.batch_on(loop)
    line(access)
    assert [r.getMessage() for r in capture.records] == [MESSAGE]

    logger.removeHandler(capture)
    plain_handler(logger)
    plain_handler(logger)
    assert not AccessLog(logger).batch_on(loop)  # two destinations

    logger.handlers.clear()
    plain_handler(logger)
    logger.handlers[0].addFilter(lambda record: True)
    assert not AccessLog(logger).batch_on(loop)  # a filter must see records

    logger.handlers.clear()
    plain_handler(logger)
    logger.addFilter(lambda record: True)
    assert not AccessLog(logger).batch_on(loop)


class RecordingStream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.chunks: list[str] = []

    def write(self, text: str) -> int:
        self.chunks.append(text)
        return super().write(text)


async def test_batched_writes_are_whole_lines_below_pipe_buf(logger: logging.Logger) -> None:
    # Workers share stderr; a pipe only keeps writes of at most PIPE_BUF bytes whole.
    stream = RecordingStream()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter(FORMAT))
    logger.addHandler(handler)
    access = AccessLog(logger)
    assert access.batch_on(asyncio.get_running_loop())
    for _ in range(50):
        line(access)
    access.flush()
    writes = [c for c in stream.chunks if c]
    assert len(writes) > 1
    assert all(len(c.encode()) <= 4096 and c.endswith("\n") for c in writes)
    assert sum(c.count("\n") for c in writes) == 50
