"""openimds/runtime.py: the backoff table and a supervised task's restarts."""

from __future__ import annotations

import asyncio
import socket

import pytest

from openimds import runtime


@pytest.mark.parametrize(
    ("failures", "delay"),
    [(1, 0.5), (2, 1.0), (3, 2.0), (6, 16.0), (7, 30.0), (50, 30.0)],
)
def test_backoff_doubles_up_to_its_cap(failures: int, delay: float) -> None:
    assert runtime.backoff_delay(failures, first=0.5, cap=30.0) == delay


async def test_a_supervised_task_that_fails_is_started_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    runs = 0
    steady = asyncio.Event()

    async def flaky() -> None:
        nonlocal runs
        runs += 1
        if runs == 1:
            raise RuntimeError("loop bug")
        if runs == 2:
            return  # a loop that ends is as wrong as one that raises
        steady.set()
        await asyncio.Event().wait()  # runs until cancelled

    task = runtime.SupervisedTask(flaky, name="test-loop", first_delay=0.01)
    with caplog.at_level("ERROR", logger="openimds.runtime"):
        task.start()
        await asyncio.wait_for(steady.wait(), 10)
    try:
        assert task.running and task.restarts == 2
        messages = [r.getMessage() for r in caplog.records]
        assert "test-loop failed" in messages and "test-loop ended" in messages
        assert any("loop bug" in str(r.exc_info) for r in caplog.records)
    finally:
        await task.stop()
    assert not task.running


async def test_a_stopped_task_is_not_started_again() -> None:
    started = asyncio.Event()

    async def forever() -> None:
        started.set()
        await asyncio.Event().wait()

    task = runtime.SupervisedTask(forever, name="test-loop", first_delay=0.01)
    task.start()
    await asyncio.wait_for(started.wait(), 10)
    await task.stop()
    assert not task.running and task.restarts == 0


def test_listen_problem_names_what_holds_an_address() -> None:

    assert runtime.listen_problem("127.0.0.1", 0) is None
    with socket.create_server(("127.0.0.1", 0)) as held:
        port = int(held.getsockname()[1])
        assert runtime.listen_problem("127.0.0.1", port) == "Address already in use"
        # A holder without SO_REUSEPORT refuses the workers' shared bind as well.
        assert runtime.listen_problem("127.0.0.1", port, reuse_port=True) == (
            "Address already in use")
    with socket.socket() as group:
        group.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        group.bind(("127.0.0.1", 0))
        group.listen(1)
        port = int(group.getsockname()[1])
        # Another worker of the same group: sharing is what the workers do.
        assert runtime.listen_problem("127.0.0.1", port, reuse_port=True) is None
