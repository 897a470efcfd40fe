"""How a long-running openimds service runs: its event loop, its startup heap, its workers.

One place for what every service did for itself: logging, the event loop (uvloop when installed),
`gc.freeze` of what startup allocated, dying with the parent (PR_SET_PDEATHSIG), and one worker
supervisor with one restart policy (`supervise_workers`): the metadata agent, the metadata API
and the control-plane API fork their workers from it. Inside a worker, a loop that must run as
long as the process (the metadata API's change-feed watcher) is a `SupervisedTask`: restarted
with backoff when it ends, never silently gone, and `running` says whether it is up.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

__all__ = ["SupervisedTask", "backoff_delay", "die_with_parent", "freeze_startup_objects",
           "listen_problem", "restart_delay", "run_loop", "setup_logging", "stop_on_signals",
           "supervise_workers"]

LOG = logging.getLogger("openimds.runtime")
T = TypeVar("T")

_PR_SET_PDEATHSIG = 1
# A worker that dies sooner than this after its start is restarted only after this long, so a
# worker that cannot start does not become a fork loop; any other is replaced at once.
MIN_WORKER_LIFETIME = 1.0


def listen_problem(host: str, port: int, *, reuse_port: bool = False) -> str | None:
    """Why a server could not listen on host:port (None: it can), found by binding as the event
    loop's `create_server` would (SO_REUSEADDR, SO_REUSEPORT for forked workers, IPv6 only on
    an IPv6 socket) and letting go at once. Checked before serving, so an address another
    process holds is one line and an exit code, not a traceback from inside the loop or
    workers restarted in a loop."""
    if port == 0:
        return None
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        return str(exc.strerror or exc)
    for family, kind, proto, _, addr in {(i[0], i[1], i[2], "", i[4]) for i in infos}:
        try:
            with socket.socket(family, kind, proto) as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if reuse_port:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.bind(addr)
                sock.listen(1)
        except OSError as exc:
            return str(exc.strerror or exc)
    return None


def run_loop(main: Coroutine[Any, Any, T]) -> T:
    """Run `main` to completion on uvloop when installed (a declared dependency on Linux:
    measurably faster per request), else on asyncio's default loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


def freeze_startup_objects() -> None:
    """Move what startup allocated (modules, settings, clients) out of the collector's
    generations: it lives as long as the process, and full collections triggered by
    per-request garbage would otherwise rescan it every time."""
    gc.collect()
    gc.freeze()


def stop_on_signals(stop: asyncio.Event) -> None:
    """Set `stop` on SIGTERM or SIGINT (from inside the running loop), for a graceful stop.
    Where the loop cannot take signal handlers (not the main thread), nothing is installed."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)


def die_with_parent(parent: int) -> None:
    """In a forked child: receive SIGTERM when the parent dies (a killed supervisor never
    leaves workers holding its socket); exit at once if it is already gone."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(1)


def restart_delay(lived: float) -> float:
    """Seconds to wait before replacing a worker that ran for `lived` seconds."""
    return 0.0 if lived >= MIN_WORKER_LIFETIME else MIN_WORKER_LIFETIME


def supervise_workers(count: int, run: Callable[[int], None], *, name: str) -> int:
    """Fork `count` workers, each running `run(slot)` (slot 0..count-1; a worker's replacement
    gets its slot, so a duty held by one slot, such as the agent's map keeper, always has
    exactly one holder). A worker that exits while the service runs is replaced (see
    `restart_delay`) with one ERROR line; SIGTERM or SIGINT stops every worker and returns 0
    once all are gone. Call from the main thread before any other thread starts."""
    parent = os.getpid()
    slots: dict[int, tuple[int, float]] = {}  # pid -> (slot, started at)
    stopping = False

    def spawn(slot: int) -> None:
        pid = os.fork()
        if pid == 0:  # the worker: never returns
            code = 0
            try:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                die_with_parent(parent)
                run(slot)
            except BaseException:  # noqa: BLE001 - reported here; the supervisor restarts it
                LOG.exception("%s worker %d failed", name, os.getpid())
                code = 1
            finally:
                logging.shutdown()
            os._exit(code)
        slots[pid] = (slot, time.monotonic())

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for pid in list(slots):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    for slot in range(count):
        spawn(slot)
    LOG.info("%s: %d workers", name, count)
    while slots:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        except InterruptedError:
            continue
        if pid not in slots:
            continue
        slot, started = slots.pop(pid)
        if not stopping:
            LOG.error("%s worker %d exited (%s); starting another", name, pid,
                      _exit_text(status))
            time.sleep(restart_delay(time.monotonic() - started))
            if not stopping:
                spawn(slot)
    return 0


def _exit_text(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"signal {os.WTERMSIG(status)}"
    return f"status {os.waitstatus_to_exitcode(status)}"


def setup_logging(debug: bool = False, log_file: str | None = None) -> None:
    """Configure the root logger once for a command; services log one line per event."""
    handler: logging.Handler = (
        # Log lines may quote what a client sent, undecodable bytes included: escape them
        # (as stderr does) rather than fail the record.
        logging.FileHandler(log_file, errors="backslashreplace")
        if log_file
        else logging.StreamHandler(sys.stderr)
    )
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(process)d %(levelname)s %(name)s %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if debug else logging.INFO)


def backoff_delay(failures: int, *, first: float = 0.5, cap: float = 30.0) -> float:
    """Seconds to wait after the `failures`-th failure in a row (1, 2, ...): doubling from
    `first`, at most `cap`: the change feed's one retry rule (`openimds.feed.backoff`)."""
    from openimds.feed.backoff import exponential_delay

    return exponential_delay(failures, first, cap)


class SupervisedTask:
    """`run()` as an asyncio task for the life of the process.

    The loops run this way end only when cancelled: if `run()` returns or raises, that is a
    bug, logged at ERROR with its traceback, and it is started again after `backoff_delay`
    (the failure count resets once a run lasted `healthy_after` seconds). `running` is False
    while it waits, so a readiness check can say so. `stop()` cancels it for good."""

    def __init__(self, run: Callable[[], Awaitable[None]], *, name: str,
                 first_delay: float = 0.5, max_delay: float = 30.0,
                 healthy_after: float = 60.0) -> None:
        self.name = name
        self.restarts = 0
        self.running = False
        self._run = run
        self._first = first_delay
        self._cap = max_delay
        self._healthy_after = healthy_after
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start on the running loop."""
        self._task = asyncio.create_task(self._forever(), name=self.name)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.running = False

    async def _forever(self) -> None:
        loop = asyncio.get_running_loop()
        failures = 0
        while True:
            started = loop.time()
            self.running = True
            try:
                await self._run()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - a bug in the loop: logged whole, then restarted
                LOG.exception("%s failed", self.name)
            else:
                LOG.error("%s ended", self.name)
            finally:
                self.running = False
            failures = 1 if loop.time() - started >= self._healthy_after else failures + 1
            delay = backoff_delay(failures, first=self._first, cap=self._cap)
            LOG.error("%s: starting it again in %.1f s", self.name, delay)
            await asyncio.sleep(delay)
            self.restarts += 1
