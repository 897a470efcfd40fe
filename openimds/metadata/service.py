"""The metadata API as a service: its settings, what one process builds, and its processes.

    MetadataSettings ─► build_worker ─► Worker (source, Responder, metrics, closers)
                            │
                            ├─► _start_guest: fast_metadata_server (fastserver.py, the default)
                            │     or metadata_server (server.py, aiohttp)
                            └─► ops_app (server.py): /healthcheck, /metrics

`serve(settings)` runs one worker in this process, or `workers` guest-serving processes sharing
the port with SO_REUSEPORT plus one ops process (the metrics listener: merged multiprocess
metrics, and readiness from the `WorkerBoard` the workers sign in on), all forked and kept
running by `runtime.supervise_workers` (a worker that dies is replaced, as for the metadata
agent and the control-plane API). The HTTP adapters live in server.py; all behaviour lives in
respond.py.
"""

from __future__ import annotations

import asyncio
import logging
import mmap
import os
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from openimds import runtime
from openimds.metadata.access import AccessLog
from openimds.metadata.metrics import MetadataMetrics
from openimds.metadata.respond import Responder, RespondSettings
from openimds.metadata.server import metadata_server, ops_app
from openimds.metadata.source import DictSource, InstanceSource
from openimds.metadata.vendordata import DynamicVendordata, DynamicVendordataOptions
from openimds.wire import DYNAMIC_JSON

__all__ = ["MetadataSettings", "Worker", "WorkerBoard", "build_worker", "serve"]

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class MetadataSettings:
    listen: str = "0.0.0.0"
    port: int = 8775
    workers: int = 1
    metrics_listen: str = "127.0.0.1"
    # 0 disables the metrics listener.
    metrics_port: int = 9779
    respond: RespondSettings = field(default_factory=RespondSettings)
    dynamic_vendordata: DynamicVendordataOptions = field(default_factory=DynamicVendordataOptions)
    # None: serve `demo_views` from memory (tests, demos) instead of the inventory.
    database_url: str | None = None
    demo_source: DictSource | None = None
    # Wait this long for in-flight requests on shutdown.
    shutdown_timeout: float = 5.0
    # `[DEFAULT] log_file`. Not read here any more: the workers are forked and keep the logging
    # the command set up (kept until the CLI's settings stop passing it).
    log_file: str | None = None
    # The guest-facing HTTP layer: "fast" (fastserver.py, httptools protocol) or "aiohttp".
    http_server: str = "fast"
    # Answers the fast layer keeps as response bytes (answers.py); 0: none.
    answer_cache_size: int = 131072
    # Seconds between writes of the session-token usage, and the longest stretch of it
    # (token_usage.py: the wait grows with the cost of a write).
    token_usage_interval: float = 1.0
    token_usage_max_interval: float = 60.0


@dataclass
class Worker:
    """Everything one serving process owns, built by `build_worker` and closed by `close`."""

    responder: Responder
    source: InstanceSource
    metrics: MetadataMetrics
    started: float
    closers: list[Callable[[], Awaitable[None]]]

    def status(self) -> dict[str, Any]:
        revision = getattr(self.source, "applied_revision", None)
        return {"revision": revision, "uptime": round(time.monotonic() - self.started, 1)}

    async def close(self) -> None:
        # Every closer runs even if one fails; a failure is worth one line, not a traceback
        # (the process is stopping anyway).
        for closer in reversed(self.closers):
            try:
                await closer()
            except Exception as exc:
                LOG.warning("shutdown: %s failed: %s", getattr(closer, "__qualname__", closer),
                            exc)


async def build_worker(settings: MetadataSettings, metrics: MetadataMetrics) -> Worker:
    """Source, vendordata client and responder for one process (on the running loop)."""
    closers: list[Callable[[], Awaitable[None]]] = []
    source: InstanceSource
    if settings.database_url is None:
        source = settings.demo_source or DictSource()
    else:
        from openimds.inventory.store import Store
        from openimds.metadata.store_source import StoreSource

        store = Store(settings.database_url)
        store_source = StoreSource(store, on_cache=metrics.cache_event)

        async def dispose() -> None:
            store.dispose()

        closers.append(dispose)
        await store_source.start()
        closers.append(store_source.stop)
        source = store_source
        from openimds.metadata.token_usage import TokenUsageWriter

        usage = TokenUsageWriter(store, metrics.take_instance_usage,
                                 interval=settings.token_usage_interval,
                                 max_interval=settings.token_usage_max_interval)
        usage.start()
        closers.append(usage.stop)
    fetcher = None
    if DYNAMIC_JSON in settings.respond.vendordata.providers:
        fetcher = DynamicVendordata(settings.dynamic_vendordata)
        closers.append(fetcher.close)
    responder = Responder(
        source,
        settings.respond,
        vendordata=fetcher,
        on_tree_cache=lambda hit: metrics.cache_event("tree", hit),
    )
    return Worker(responder, source, metrics, time.monotonic(), closers)


async def _run_sites(
    runners: Sequence[tuple[web.BaseRunner, str, int, bool]], stop: asyncio.Event
) -> None:
    try:
        for runner, host, port, reuse_port in runners:
            await runner.setup()
            site = web.TCPSite(runner, host, port, reuse_port=reuse_port or None)
            await site.start()
            LOG.info("listening on %s:%d", host, port)
        runtime.freeze_startup_objects()
        await stop.wait()
    finally:
        for runner, *_ in runners:
            await runner.cleanup()


async def _start_guest(
    settings: MetadataSettings, worker: Worker, access_log: AccessLog, reuse_port: bool
) -> Callable[[], Awaitable[None]]:
    """Listen for guests with the configured HTTP layer; returns its graceful stop."""
    if settings.http_server == "fast":
        from openimds.metadata.fastserver import fast_metadata_server

        server = fast_metadata_server(worker.responder, worker.metrics, access_log=access_log,
                                      answer_cache_size=settings.answer_cache_size)
        await server.start_tcp(settings.listen, settings.port, reuse_port=reuse_port)
        LOG.info("listening on %s:%d", settings.listen, settings.port)
        return lambda: server.close(settings.shutdown_timeout)
    runner = web.ServerRunner(
        metadata_server(worker.responder, worker.metrics, access_log=access_log),
        shutdown_timeout=settings.shutdown_timeout,
    )
    await runner.setup()
    site = web.TCPSite(runner, settings.listen, settings.port, reuse_port=reuse_port or None)
    await site.start()
    LOG.info("listening on %s:%d (aiohttp)", settings.listen, settings.port)
    return runner.cleanup


def _access_log() -> AccessLog:
    access_log = AccessLog()
    if not access_log.batch_on(asyncio.get_running_loop()):
        LOG.info("access log: one record per request (the logging setup is not a plain stream)")
    return access_log


async def _serve_single(settings: MetadataSettings) -> None:
    stop = asyncio.Event()
    runtime.stop_on_signals(stop)
    metrics = MetadataMetrics()
    worker = await build_worker(settings, metrics)
    access_log = _access_log()
    stop_guest: Callable[[], Awaitable[None]] | None = None
    try:
        stop_guest = await _start_guest(settings, worker, access_log, False)
        runners: list[tuple[web.BaseRunner, str, int, bool]] = []
        if settings.metrics_port:
            ops = ops_app(worker.source.ready, worker.status, lambda: metrics.registry)
            runners.append(
                (
                    web.AppRunner(ops, access_log=None),
                    settings.metrics_listen,
                    settings.metrics_port,
                    False,
                )
            )
        await _run_sites(runners, stop)
    finally:
        if stop_guest is not None:
            await stop_guest()
        access_log.flush()
        await worker.close()


class WorkerBoard:
    """Which guest workers are serving, shared by every process the service forks.

    One pid per worker slot in an anonymous shared mapping made before the fork: a worker
    writes its pid once it listens and clears it when it stops; the ops process reads the
    board for `/healthcheck`. A pid left by a worker that was killed is seen as gone once the
    supervisor has reaped it (and its replacement writes its own)."""

    def __init__(self, slots: int) -> None:
        self._map = mmap.mmap(-1, 8 * slots)
        self._pids = memoryview(self._map).cast("q")
        self.slots = slots

    def serving(self, slot: int, pid: int) -> None:
        self._pids[slot] = pid

    def stopped(self, slot: int) -> None:
        self._pids[slot] = 0

    def alive(self) -> int:
        """How many slots hold a worker that is serving now."""
        return sum(1 for slot in range(self.slots) if _running(self._pids[slot]))

    def all_serving(self) -> bool:
        return self.alive() == self.slots


def _running(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's: not ours, but not gone
        return True
    return True


async def _serve_worker(settings: MetadataSettings, board: WorkerBoard, slot: int) -> None:
    stop = asyncio.Event()
    runtime.stop_on_signals(stop)
    metrics = MetadataMetrics()
    worker = await build_worker(settings, metrics)
    # The ops process scrapes this worker's multiprocess files, not its registry.
    metrics.flush_on(asyncio.get_running_loop())
    access_log = _access_log()
    try:
        stop_guest = await _start_guest(settings, worker, access_log, True)
        runtime.freeze_startup_objects()
        board.serving(slot, os.getpid())
        try:
            await stop.wait()
        finally:
            board.stopped(slot)
            await stop_guest()
    finally:
        access_log.flush()
        metrics.flush()
        await worker.close()


async def _serve_ops(settings: MetadataSettings, board: WorkerBoard, started: float) -> None:
    stop = asyncio.Event()
    runtime.stop_on_signals(stop)

    def status() -> dict[str, Any]:
        return {"workers": board.alive(), "uptime": round(time.monotonic() - started, 1)}

    ops = ops_app(board.all_serving, status, lambda: None)
    await _run_sites(
        [(web.AppRunner(ops, access_log=None), settings.metrics_listen, settings.metrics_port,
          False)],
        stop,
    )


def _supervise(settings: MetadataSettings) -> int:
    board = WorkerBoard(settings.workers)
    started = time.monotonic()

    def run(slot: int) -> None:
        # Slots 0..workers-1 serve guests; the last one, if any, is the metrics listener.
        if slot < settings.workers:
            runtime.run_loop(_serve_worker(settings, board, slot))
        else:
            runtime.run_loop(_serve_ops(settings, board, started))

    count = settings.workers + (1 if settings.metrics_port else 0)
    return runtime.supervise_workers(count, run, name="metadata API")


def serve(settings: MetadataSettings, *, debug: bool = False) -> int:
    """Run the metadata API until SIGTERM/SIGINT. Returns the process exit code.

    `debug` is kept for callers; the forked workers inherit this process's logging."""
    listeners = [(settings.listen, settings.port, settings.workers > 1)]
    if settings.metrics_port:
        listeners.append((settings.metrics_listen, settings.metrics_port, False))
    for host, port, reuse_port in listeners:
        problem = runtime.listen_problem(host, port, reuse_port=reuse_port)
        if problem is not None:
            LOG.error("metadata-api: cannot listen on %s:%d: %s", host, port, problem)
            return 1
    if settings.workers <= 1:
        runtime.run_loop(_serve_single(settings))
        return 0
    if settings.demo_source is not None:
        raise ValueError("the in-memory demo source cannot be shared by several workers")
    from prometheus_client import values

    own_dir = None
    if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        own_dir = tempfile.mkdtemp(prefix="openimds-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = own_dir
    # prometheus_client picks its value class when first imported, which happened before the
    # directory was set: pick again, so the forked workers write their counts to files.
    in_process = values.ValueClass
    values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]
    try:
        return _supervise(settings)
    finally:
        values.ValueClass = in_process
        if own_dir is not None:  # ours: the workers' files are of no use after they exit
            shutil.rmtree(own_dir, ignore_errors=True)
            os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
