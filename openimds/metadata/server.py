"""The metadata API's HTTP adapters: guest requests to `Responder` and back, and the ops routes.

    aiohttp request ─► _handler ─► MetadataRequest ─► Responder.respond (respond.py)
                                                   ◄─ MetadataResponse ─► web.Response, AccessLog
    ops_app: /healthcheck (503 until ready) and /metrics

`metadata_server` is the aiohttp guest-facing layer (`http_server = aiohttp`); the default fast
layer (fastserver.py) shares `EntropyPool` and the path rule from here. Either only converts
between its HTTP layer and the pure request/response types; all behaviour lives in
`respond.py`. Which layer runs, in how many processes, is the service's choice (service.py).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

from aiohttp import web

from openimds.edge import edge_logger, origin_form
from openimds.metadata.access import AccessLog
from openimds.metadata.metrics import MetadataMetrics, render_metrics
from openimds.metadata.respond import PASSWORD_MAX_BYTES, MetadataRequest, Responder

__all__ = ["EntropyPool", "metadata_server", "ops_app"]

# aiohttp's request handler logs here: malformed requests as one line, without a traceback.
_HTTP_LOG = edge_logger("openimds.metadata.http")


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
    One pool per process: each worker builds its own after it starts, so no pool's bytes are
    ever shared between processes.
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
