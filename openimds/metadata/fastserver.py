"""The metadata API on the lean HTTP layer (`openimds.leanhttp`): the default server.

    LeanServer (httptools protocol) ─► handler ─► Responder.respond ─► response bytes

The same thin adapter as the aiohttp handler in `server.py`: it converts a parsed request into
a `MetadataRequest`, asks the `Responder` (the one place that decides answers) and turns the
`MetadataResponse` into bytes. The answers themselves are already bytes: the Responder keeps
each instance's rendered tree, whose leaves are the encoded documents per path and format,
until the source hands out a new view (the change feed bumps the instance's epoch), and splices
a pooled `random_seed` into meta_data.json per request. This module adds the head: status line
and headers are kept per (status, content type, length, extra headers), so a response is one
concatenation and one write(2).

`[DEFAULT] metadata_http_server = aiohttp` selects the aiohttp server instead.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime

from openimds.edge import edge_logger
from openimds.leanhttp import LeanServer, Request, status_head
from openimds.metadata.access import AccessLog
from openimds.metadata.metrics import MetadataMetrics
from openimds.metadata.respond import PASSWORD_MAX_BYTES, MetadataRequest, Responder
from openimds.metadata.server import EntropyPool, _path_of, _utc_now

__all__ = ["fast_metadata_server"]

_HTTP_LOG = edge_logger("openimds.metadata.http")
# Distinct heads seen; a bound so odd extra headers (token TTL echoes) cannot grow it forever.
_HEAD_CACHE_SIZE = 4096
_PATH_CACHE_SIZE = 4096


def fast_metadata_server(
    responder: Responder,
    metrics: MetadataMetrics | None = None,
    *,
    clock: Callable[[], datetime] = _utc_now,
    entropy: Callable[[int], bytes] | None = None,
    access_log: AccessLog | None = None,
    idle_timeout: float = 75.0,
    request_timeout: float = 30.0,
) -> LeanServer:
    """The guest-facing server (start it with `start_tcp`, stop with `close`)."""
    observe = metrics.observe if metrics is not None else None
    token_event = metrics.token_event if metrics is not None else None
    respond = responder.respond
    random_bytes = entropy or EntropyPool()
    log = access_log or AccessLog()
    perf_counter = time.perf_counter
    heads: dict[tuple[object, ...], bytes] = {}
    # Request target -> decoded path: guests ask for a few dozen distinct targets.
    paths: dict[str, str] = {}

    async def handle(request: Request) -> tuple[bytes, bytes]:
        started = perf_counter()
        method = request.method
        target = request.target
        peer = request.peer
        path = paths.get(target)
        if path is None:
            path = _path_of(target)
            if len(paths) >= _PATH_CACHE_SIZE:
                paths.clear()
            paths[target] = path
        current = clock()
        resp = await respond(
            MetadataRequest(
                method=method,
                path=path,
                headers=request.headers,
                peer=peer,
                today=current.date(),
                random_bytes=random_bytes,
                body=request.body if method == "POST" else None,
                now=current.timestamp(),
            )
        )
        elapsed = perf_counter() - started
        if observe is not None:
            observe(resp.status, resp.family, elapsed)
        if token_event is not None and resp.token:
            token_event(resp.token, resp.instance_id)
        body = resp.body
        log(peer, method, target, resp.status, len(body), resp.instance_id, resp.outcome, elapsed)
        key = (resp.status, resp.content_type, len(body), resp.retry_after, resp.headers)
        head = heads.get(key)
        if head is None:
            extra = resp.headers
            if resp.retry_after is not None:
                extra = (("Retry-After", str(resp.retry_after)), *extra)
            head = status_head(resp.status, resp.content_type, len(body), extra)
            if len(heads) >= _HEAD_CACHE_SIZE:
                heads.clear()
            heads[key] = head
        return head, body

    return LeanServer(
        handle,
        # Answers come from memory and finish without suspending: run them inside the parser
        # callback (eager). What suspends first runs on in a Task: the inventory loads
        # (threads) and the dynamic vendordata fetch (gathered in Tasks of its own).
        eager=True,
        logger=_HTTP_LOG,
        body_methods=frozenset({"POST"}),
        body_limit=PASSWORD_MAX_BYTES + 1,
        idle_timeout=idle_timeout,
        request_timeout=request_timeout,
    )
