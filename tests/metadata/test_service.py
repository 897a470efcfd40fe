"""service.py: what one process builds and closes, and the board the workers sign in on."""

from __future__ import annotations

import os

import pytest

from openimds.metadata.metrics import MetadataMetrics
from openimds.metadata.respond import Responder, RespondSettings
from openimds.metadata.service import Worker, WorkerBoard
from openimds.metadata.source import DictSource


def test_the_worker_board_is_shared_with_forked_workers_and_forgets_dead_ones() -> None:
    """`/healthcheck` of a multi-worker service is ready only while every slot holds a live
    worker that signed in; what a worker writes after the fork is seen by the other processes."""
    board = WorkerBoard(2)
    assert board.alive() == 0 and not board.all_serving()
    child = os.fork()
    if child == 0:  # a worker: signs in on slot 1, then exits without signing out (killed)
        board.serving(1, os.getpid())
        os._exit(0)
    os.waitpid(child, 0)
    # The slot shows the child's pid (shared memory), but the child is gone and reaped.
    assert board._pids[1] == child
    assert board.alive() == 0
    board.serving(0, os.getpid())
    assert board.alive() == 1 and not board.all_serving()
    board.serving(1, os.getppid())
    assert board.all_serving()
    board.stopped(0)
    assert board.alive() == 1 and not board.all_serving()


async def test_a_failing_closer_is_logged_and_the_others_still_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    closed: list[str] = []

    async def first() -> None:
        closed.append("first")

    async def broken() -> None:
        raise RuntimeError("disk gone")

    worker = Worker(Responder(DictSource(), RespondSettings()), DictSource(), MetadataMetrics(),
                    0.0, [first, broken])
    with caplog.at_level("WARNING", logger="openimds.metadata.service"):
        await worker.close()
    assert closed == ["first"]
    assert [r.getMessage() for r in caplog.records] == [
        f"shutdown: {broken.__qualname__} failed: disk gone"]
    assert all(r.exc_info is None for r in caplog.records)  # one line, no traceback
