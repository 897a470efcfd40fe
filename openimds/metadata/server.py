"""The metadata API over HTTP: aiohttp adapters around `Responder`, workers, metrics listener.

    MetadataSettings ─► build_worker ─► Responder ─► fast_metadata_server (fastserver.py, the
                                                 │     default) or metadata_server (aiohttp
                                                 │     low-level server), one handler, AccessLog
                                                 └─► ops_app (/healthcheck, /metrics)

`serve(settings)` runs one worker in this process, or `workers` processes sharing the port with
SO_REUSEPORT while this process serves the metrics listener (merged multiprocess metrics) and
supervises them. `http_server` picks the guest-facing HTTP layer. Either handler only converts
between its HTTP layer and the pure request/response types; all behaviour lives in `respond.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

from aiohttp import web

from openimds import runtime
from openimds.edge import edge_logger, origin_form
from openimds.metadata.access import AccessLog
from openimds.metadata.metrics import MetadataMetrics, render_metrics
from openimds.metadata.respond import (
    PASSWORD_MAX_BYTES,
    MetadataRequest,
    Responder,
    RespondSettings,
)
from openimds.metadata.source import DictSource, InstanceSource
from openimds.metadata.vendordata import DynamicVendordata, DynamicVendordataOptions

__all__ = [
    "EntropyPool",
    "MetadataSettings",
    "build_worker",
    "metadata_server",
    "ops_app",
    "serve",
]

LOG = logging.getLogger(__name__)
# aiohttp's request handler logs here: malformed requests as one line, without a traceback.
_HTTP_LOG = edge_logger("openimds.metadata.http")


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
    # Where worker processes log (the parent's `[DEFAULT] log_file`); None: stderr.
    log_file: str | None = None
    # The guest-facing HTTP layer: "fast" (fastserver.py, httptools protocol) or "aiohttp".
    http_server: str = "fast"
    # Answers the fast layer keeps as response bytes (answers.py); 0: none.
    answer_cache_size: int = 131072


async def _read_limited(request: web.BaseRequest, limit: int) -> bytes:
    # Only the password POST uses a body, and only up to 1020 bytes: read one byte more to
    # detect "too large" without buffering whatever a client decides to send.
    chunks: list[bytes] = []
    size = 0
    while size < limit:
        chunk = await request.content.read(limit - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _path_of(raw_path: str) -> str:
    # raw_path keeps `//x` and `%2F` as sent; nova sees the WSGI PATH_INFO, percent-decoded.
    # An absolute-form target is served by its path; `*` and CONNECT's host:port name none.
    raw = (origin_form(raw_path) or "/*").split("?", 1)[0]
    return unquote(raw, errors="surrogateescape")


def _handler(
    responder: Responder,
    metrics: MetadataMetrics | None,
    clock: Callable[[], datetime],
    entropy: Callable[[int], bytes],
    access_log: AccessLog,
) -> Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]:
    observe = metrics.observe if metrics is not None else None
    token_event = metrics.token_event if metrics is not None else None
    respond = responder.respond
    perf_counter = time.perf_counter

    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        started = perf_counter()
        method = request.method
        body = None
        if method == "POST" and request.can_read_body:
            body = await _read_limited(request, PASSWORD_MAX_BYTES + 1)
        raw_path = request.raw_path
        peer = request.remote
        current = clock()
        resp = await respond(
            MetadataRequest(
                method=method,
                path=_path_of(raw_path),
                headers=tuple(request.headers.items()),
                peer=peer,
                today=current.date(),
                random_bytes=entropy,
                body=body,
                now=current.timestamp(),
            )
        )
        elapsed = perf_counter() - started
        if observe is not None:
            observe(resp.status, resp.family, elapsed)
        if token_event is not None and resp.token:
            token_event(resp.token, resp.instance_id)
        access_log(
            peer,
            method,
            raw_path,
            resp.status,
            len(resp.body),
            resp.instance_id,
            resp.outcome,
            elapsed,
        )
        headers = {"Content-Type": resp.content_type}
        if resp.retry_after is not None:
            headers["Retry-After"] = str(resp.retry_after)
        # aiohttp sends HEAD responses with this Content-Length and no body, as webob does.
        if resp.headers:
            headers.update(resp.headers)
        return web.Response(status=resp.status, body=resp.body, headers=headers)

    return handle


class EntropyPool:
    """`os.urandom` read 64 KiB at a time and handed out once per byte.

    Every meta_data.json carries a fresh 512-byte random_seed: one getrandom(2) per request
    cost ~1.5 µs; slicing a pooled read costs a tenth of that. No byte is handed out twice.
    One pool per process (the service spawns its workers, so no pool is ever forked).
    """

    __slots__ = ("_buffer", "_position", "_size")

    def __init__(self, size: int = 65536) -> None:
        self._size = size
        self._buffer = b""
        self._position = 0

    def __call__(self, n: int) -> bytes:
        start = self._position
        end = start + n
        if end > len(self._buffer):
            if n > self._size:
                return os.urandom(n)
            self._buffer = os.urandom(self._size)
            start, end = 0, n
        self._position = end
        return self._buffer[start:end]


def _utc_now() -> datetime:
    return datetime.now(UTC)


def metadata_server(
    responder: Responder,
    metrics: MetadataMetrics | None = None,
    *,
    clock: Callable[[], datetime] = _utc_now,
    entropy: Callable[[int], bytes] | None = None,
    access_log: AccessLog | None = None,
) -> web.Server:
    """The guest-facing server: every method and path go to `responder` (serve with
    `web.ServerRunner`; needs a running loop).

    aiohttp's low-level server: one handler, no router, no middlewares, no aiohttp access
    logger (`access_log`, by default an `AccessLog`, writes the one line per request).
    `entropy` defaults to an `EntropyPool`.
    """
    handle = _handler(
        responder, metrics, clock, entropy or EntropyPool(), access_log or AccessLog()
    )
    return web.Server(handle, max_field_size=16384, access_log=None, logger=_HTTP_LOG)


def ops_app(
    ready: Callable[[], bool],
    status: Callable[[], dict[str, Any]],
    registry_getter: Callable[[], Any] | None,
) -> web.Application:
    """The operator listener: `/healthcheck` (503 until ready) and `/metrics`."""

    async def healthcheck(request: web.Request) -> web.Response:
        ok = ready()
        return web.json_response({"ready": ok, **status()}, status=200 if ok else 503)

    async def metrics(request: web.Request) -> web.Response:
        if registry_getter is None:
            raise web.HTTPNotFound()
        text = await asyncio.to_thread(render_metrics, registry_getter())
        return web.Response(body=text, headers={"Content-Type": "text/plain; version=0.0.4"})

    app = web.Application(handler_args={"logger": _HTTP_LOG})
    app.router.add_get("/healthcheck", healthcheck)
    app.router.add_get("/metrics", metrics)
    return app


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

        usage = TokenUsageWriter(store, metrics.take_instance_usage)
        usage.start()
        closers.append(usage.stop)
    fetcher = None
    if "DynamicJSON" in settings.respond.vendordata.providers:
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


def _stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)


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
    _stop_on_signals(stop)
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


async def _serve_worker(settings: MetadataSettings, ready: Any) -> None:
    stop = asyncio.Event()
    _stop_on_signals(stop)
    metrics = MetadataMetrics()
    worker = await build_worker(settings, metrics)
    # The parent scrapes this worker's multiprocess files, not its registry.
    metrics.flush_on(asyncio.get_running_loop())
    access_log = _access_log()
    try:
        stop_guest = await _start_guest(settings, worker, access_log, True)
        runtime.freeze_startup_objects()
        ready.set()
        try:
            await stop.wait()
        finally:
            await stop_guest()
    finally:
        access_log.flush()
        metrics.flush()
        await worker.close()


def _worker_main(settings: MetadataSettings, ready: Any, debug: bool) -> None:
    runtime.setup_logging(debug, settings.log_file)
    with contextlib.suppress(KeyboardInterrupt):
        runtime.run_loop(_serve_worker(settings, ready))


async def _supervise(settings: MetadataSettings, debug: bool) -> int:
    ctx = multiprocessing.get_context("spawn")
    events = [ctx.Event() for _ in range(settings.workers)]
    procs = [
        ctx.Process(target=_worker_main, args=(settings, ev, debug), name=f"metadata-worker-{i}")
        for i, ev in enumerate(events)
    ]
    for proc in procs:
        proc.start()
    started = time.monotonic()
    stop = asyncio.Event()
    _stop_on_signals(stop)

    def ready() -> bool:
        return all(p.is_alive() for p in procs) and all(ev.is_set() for ev in events)

    def status() -> dict[str, Any]:
        return {
            "workers": sum(p.is_alive() for p in procs),
            "uptime": round(time.monotonic() - started, 1),
        }

    async def watch_children() -> None:
        # A dead worker is not restarted behind the operator's back: stop, and let the
        # service manager restart the whole service.
        while not stop.is_set():
            if any(not p.is_alive() for p in procs):
                LOG.error("a metadata worker exited; stopping")
                stop.set()
            await asyncio.sleep(0.5)

    watcher = asyncio.create_task(watch_children())
    try:
        runners = []
        if settings.metrics_port:
            ops = ops_app(ready, status, lambda: None)
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
        watcher.cancel()
        for proc in procs:
            if proc.is_alive() and proc.pid is not None:
                os.kill(proc.pid, signal.SIGTERM)
        for proc in procs:
            await asyncio.to_thread(proc.join, settings.shutdown_timeout + 5)
            if proc.is_alive():
                proc.kill()
    return 0 if all(p.exitcode == 0 for p in procs) else 1


def serve(settings: MetadataSettings, *, debug: bool = False) -> int:
    """Run the metadata API until SIGTERM/SIGINT. Returns the process exit code."""
    if settings.workers <= 1:
        runtime.run_loop(_serve_single(settings))
        return 0
    if settings.demo_source is not None:
        raise ValueError("the in-memory demo source cannot be shared by several workers")
    own_dir = None
    if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        # Workers inherit it; prometheus_client reads it at import time in each new process.
        own_dir = tempfile.mkdtemp(prefix="openimds-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = own_dir
    try:
        return asyncio.run(_supervise(settings, debug))
    finally:
        if own_dir is not None:  # ours: the workers' files are of no use after they exit
            shutil.rmtree(own_dir, ignore_errors=True)
            os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
