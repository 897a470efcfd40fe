"""The agent's HTTP adapter on the unix socket, and the process wiring around it.

    build_app(AgentState) -> LeanServer              the lean httptools layer, one handler
    bind_unix_socket(settings) -> socket.socket      mode/owner/backlog applied before listen
    serve(settings, feed_factory)                    blocks; forks metadata_workers processes

The handler is a short adapter: headers -> resolve() (pure) -> Upstream.forward -> response.
It runs on the lean HTTP layer the metadata API uses (`openimds.leanhttp`: a uvloop protocol
around the httptools parser), so both guest-path servers share one HTTP layer. The agent keeps no per-connection state, so haproxy may send any guest's request
over any pooled connection (docs/proxy.md, `http-reuse always`).
AgentError subclasses become their status with a plain-text page at one edge (`_error_response`);
anything unexpected is logged with its traceback and the guest gets a bare 500, never a trace.

`/healthz` answers only requests without an `X-Neutron-*-ID` header, i.e. never a guest's (our
proxies always set one), so a guest asking for /healthz gets the metadata API's answer instead.
It is 503 until the first sync (the readiness gate), then 200, with revision and counts.
`/metrics` (same rule) is the Prometheus text of this worker's rate limiter (ratelimit.py):
a guest over its token bucket gets 429 + Retry-After, logged once per guest when it starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import json
import logging
import os
import signal
import socket
import stat
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

from multidict import CIMultiDict

from openimds import runtime
from openimds.agent.errors import (
    AgentError,
    AmbiguousAddress,
    BadTarget,
    NotReady,
    TooManyRequests,
    Unavailable,
)
from openimds.agent.feed import IndexSync, InventoryFeed
from openimds.agent.index import PortIndex
from openimds.agent.map_keeper import MapKeeper
from openimds.agent.ratelimit import TokenBuckets, retry_after_header
from openimds.agent.resolve import FORWARDED_FOR, NETWORK_ID, ROUTER_ID, AgentRequest, resolve
from openimds.agent.settings import AgentSettings
from openimds.agent.upstream import Upstream, UpstreamResponse, passed_headers
from openimds.edge import edge_logger, origin_form
from openimds.leanhttp import LeanServer, Request

__all__ = ["AgentState", "bind_unix_socket", "build_app", "run_worker", "serve"]

LOG = logging.getLogger("openimds.agent")
# Largest request body accepted from a guest (aiohttp's client_max_size, kept from round 1).
MAX_BODY = 1024 * 1024

BAD_TARGET_TEXT = ("The metadata service answers requests for a path only (GET /latest/...); "
                   "CONNECT and targets such as '*' are not served.")
NOT_READY_TEXT = ("The metadata agent is starting and has not loaded the port inventory yet. "
                  "Please try again later.")


class AgentState:
    """What one worker holds: the index, its sync loop and the upstream client."""

    def __init__(self, index: PortIndex, sync: IndexSync, upstream: Upstream,
                 limiter: TokenBuckets | None = None, keeper: MapKeeper | None = None) -> None:
        self.index = index
        self.sync = sync
        self.upstream = upstream
        self.limiter = limiter
        # Map mode, in the worker that keeps the proxies' identity maps.
        self.keeper = keeper
        self.started = time.monotonic()


def _response(status: int, content_type: str | None, body: bytes,
              extra: tuple[tuple[str, str], ...] = ()) -> tuple[bytes, bytes]:
    """(head, body) for the lean HTTP layer; no Content-Type line when `content_type` is
    None (the metadata API sent none, and the guest gets none either)."""
    lines = [f"HTTP/1.1 {status} {_reason(status)}\r\n"]
    if content_type:
        lines.append(f"Content-Type: {content_type}\r\n")
    lines.append(f"Content-Length: {len(body)}\r\n")
    lines += [f"{k}: {v}\r\n" for k, v in extra]
    return "".join(lines).encode("latin-1", "replace"), body


def _reason(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def _error_response(exc: AgentError) -> tuple[bytes, bytes]:
    extra: tuple[tuple[str, str], ...] = ()
    if isinstance(exc, Unavailable | TooManyRequests):
        extra = (("Retry-After", str(exc.retry_after)),)
    # The text may echo a header the guest sent: undecodable bytes in it (surrogates) are
    # escaped, never a reason to fail.
    body = (exc.text + "\n").encode("utf-8", "backslashreplace")
    return _response(exc.status, "text/plain; charset=utf-8", body, extra)


def _health(state: AgentState) -> tuple[bytes, bytes]:
    ready = state.sync.ready.is_set()
    body: dict[str, Any] = {
        "ready": ready,
        "revision": state.index.revision,
        "ports": len(state.index),
        "control_plane_connected": state.sync.connected,
        "uptime": round(time.monotonic() - state.started, 3),
    }
    if state.keeper is not None:
        body["identity_maps"] = state.keeper.status()
    return _response(200 if ready else 503, "application/json; charset=utf-8",
                     json.dumps(body).encode())


def _metrics(state: AgentState) -> tuple[bytes, bytes]:
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    limiter = state.limiter

    class _Collector:
        def collect(self) -> Any:
            if limiter is None:
                return
            yield CounterMetricFamily(
                "openimds_agent_rate_limit_allowed", "Guest requests within their token bucket.",
                value=limiter.allowed)
            yield CounterMetricFamily(
                "openimds_agent_rate_limit_refused", "Guest requests refused with 429.",
                value=limiter.refused)
            yield GaugeMetricFamily(
                "openimds_agent_rate_limit_buckets",
                "Guests (network, port) with a bucket that is not full.",
                value=len(limiter))
            yield GaugeMetricFamily(
                "openimds_agent_rate_limit_limited_guests",
                "Guests whose last request was refused.", value=limiter.limited_count())

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector())
    return _response(200, "text/plain; version=0.0.4; charset=utf-8", generate_latest(registry))


_INTERNAL_ERROR_TEXT = b"An unknown error has occurred. Please try your request again.\n"


def _relay(answer: UpstreamResponse) -> tuple[bytes, bytes]:
    """The metadata API's answer as the guest gets it: status, body bytes, its exact
    Content-Type (charset included, or none at all), Content-Encoding and Retry-After when
    present, and the relayed headers."""
    extra: tuple[tuple[str, str], ...] = answer.extra_headers
    if answer.content_encoding:
        extra = (("Content-Encoding", answer.content_encoding), *extra)
    if answer.retry_after:
        extra = (("Retry-After", answer.retry_after), *extra)
    return _response(answer.status, answer.content_type, answer.body, extra)


def _path(target: str) -> str:
    """The percent-decoded path of a target, without the query (for /healthz and logs)."""
    return unquote((origin_form(target) or target).split("?", 1)[0], errors="surrogateescape")


def build_app(state: AgentState) -> LeanServer:
    """The request handler on the lean HTTP layer (`openimds.leanhttp`, an httptools protocol):
    every request goes to one function; the answer is written as one buffer."""
    index, sync, upstream, limiter = state.index, state.sync, state.upstream, state.limiter
    ready = sync.ready

    async def handle(request: Request) -> tuple[bytes, bytes]:
        headers = CIMultiDict(request.headers)
        network_ids = headers.getall(NETWORK_ID, ())
        router_ids = headers.getall(ROUTER_ID, ())
        method = request.method
        if not network_ids and not router_ids:
            path = _path(request.target)
            if path == "/healthz":
                return _health(state)
            if path == "/metrics":
                return _metrics(state)
        try:
            # Absolute-form targets are served by their path; nothing else names a path.
            target = origin_form(request.target)
            if target is None or method == "CONNECT":
                raise BadTarget(BAD_TARGET_TEXT)
            if not ready.is_set():
                raise NotReady(NOT_READY_TEXT)
            res = resolve(AgentRequest(forwarded_for=headers.getall(FORWARDED_FOR, ()),
                                       network_ids=network_ids, router_ids=router_ids), index)
            if limiter is not None:
                # Keyed by the port: an instance's IPv4, global IPv6 and link-local addresses
                # share one budget (by address it would get one per address).
                decision = limiter.take((res.network_id, res.port_id), time.monotonic())
                if not decision.allowed:
                    if decision.newly_limited:
                        LOG.warning("guest %s on network %s is over its request budget "
                                    "(burst %d, %.3g/s): answering 429 until it slows down",
                                    res.address, res.network_id, limiter.policy.burst,
                                    limiter.policy.rate)
                    raise TooManyRequests(int(retry_after_header(decision.retry_after)))
            answer = await upstream.forward(method, target, request.body or b"", res,
                                            passed_headers(headers))
        except AgentError as exc:
            # A limited guest is logged once when it starts (above), not per request.
            level = (logging.ERROR if isinstance(exc, AmbiguousAddress)
                     else logging.DEBUG if isinstance(exc, TooManyRequests) else logging.WARNING)
            if LOG.isEnabledFor(level):
                LOG.log(level, "%s %s -> %d: %s", method, _path(request.target), exc.status,
                        exc.log_detail or exc.text)
            return _error_response(exc)
        except asyncio.CancelledError:
            raise
        except Exception:
            LOG.exception("%s %s -> 500: unexpected error", method, _path(request.target))
            return _response(500, "text/plain; charset=utf-8", _INTERNAL_ERROR_TEXT)
        if LOG.isEnabledFor(logging.DEBUG):
            LOG.debug("%s %s -> %d (instance %s, port %s)", method, _path(request.target),
                      answer.status, res.instance_id, res.port_id)
        return _relay(answer)

    # Bodies: any method's, up to 1 MiB (a password is at most ~1 KiB), 413 beyond.
    # idle_timeout: haproxy pools these connections (`http-reuse always`) and must be the
    # side that closes an idle one (pool-purge-delay), or it could send a request on a
    # connection we are closing at that moment; an hour is far beyond its idle lifetime.
    # No access log: one line per request would cost more than the request.
    return LeanServer(handle, logger=edge_logger("openimds.agent.http"), body_methods=None,
                      body_limit=MAX_BODY, refuse_larger_body=True, idle_timeout=3600,
                      # Every request awaits the upstream, under asyncio.timeout: in a Task.
                      eager=False)


def bind_unix_socket(settings: AgentSettings) -> socket.socket:
    """Create the listening socket with its mode and owner set before anyone can connect.

    A leftover socket file from a dead agent is removed; a live one (something accepts a
    connection) is an error, so two agents never steal each other's socket."""
    path = settings.socket_path
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        st = os.lstat(path)
        if not stat.S_ISSOCK(st.st_mode):
            raise RuntimeError(f"{path} exists and is not a socket; refusing to replace it")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(path)
        except OSError:
            os.unlink(path)
        else:
            raise RuntimeError(f"another process is already serving on {path}")
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    # The restrictive umask closes the window between bind and chmod.
    old_umask = os.umask(0o177)
    try:
        sock.bind(path)
    finally:
        os.umask(old_umask)
    os.chmod(path, settings.socket_mode)
    if settings.socket_uid is not None or settings.socket_gid is not None:
        os.chown(path, -1 if settings.socket_uid is None else settings.socket_uid,
                 -1 if settings.socket_gid is None else settings.socket_gid)
    sock.listen(settings.backlog)
    sock.setblocking(False)
    return sock


FeedFactory = Callable[[AgentSettings], InventoryFeed]


async def run_worker(sock: socket.socket, settings: AgentSettings, feed: InventoryFeed,
                     stop: asyncio.Event | None = None, *, keep_maps: bool = True) -> None:
    """Serve on an already-listening socket until `stop` is set (or SIGTERM/SIGINT).

    In map mode (`proxy_identity` "haproxy_map") the worker with `keep_maps` also keeps the
    proxies' identity maps current from its index (agent/map_keeper.py); one worker is enough."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
    index = PortIndex(settings.index_host)
    sync = IndexSync(feed, index)
    upstream = Upstream(settings)
    limiter = TokenBuckets(settings.rate_limit) if settings.rate_limit is not None else None
    keeper = None
    if keep_maps and settings.proxy_identity == "haproxy_map":
        keeper = MapKeeper(index, settings.state_path, settings.shared_secret)
        sync.on_change = keeper.changed
    state = AgentState(index, sync, upstream, limiter, keeper)
    server = build_app(state)
    # listen() is called again when serving starts: keep our backlog.
    await server.start_socket(sock, backlog=settings.backlog)
    sync_task = asyncio.create_task(sync.run(), name="index-sync")
    tasks = {sync_task}
    if keeper is not None:
        tasks.add(asyncio.create_task(keeper.run(), name="identity-maps"))
    LOG.info("metadata agent serving on %s (pid %d; upstream %s)", settings.socket_path,
             os.getpid(), ", ".join(settings.upstream_urls))
    try:
        stopped = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait({*tasks, stopped}, return_when=asyncio.FIRST_COMPLETED)
        for task in done & tasks:
            task.result()  # these loops only end by a bug: surface it
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await server.close()
        await upstream.close()
        aclose = getattr(feed, "aclose", None)
        if aclose is not None:
            await aclose()


def _run_loop(sock: socket.socket, settings: AgentSettings, feed_factory: FeedFactory,
              keep_maps: bool = True) -> None:
    async def main() -> None:
        feed = feed_factory(settings)
        runtime.freeze_startup_objects()
        await run_worker(sock, settings, feed, keep_maps=keep_maps)

    runtime.run_loop(main())


def serve(settings: AgentSettings, feed_factory: FeedFactory) -> int:
    """Bind the socket, then serve in this process (workers <= 1) or in forked workers that
    share it; each worker keeps its own index (no shared state to lock)."""
    sock = bind_unix_socket(settings)
    try:
        if settings.workers <= 1:
            _run_loop(sock, settings, feed_factory)
            return 0
        return _supervise(sock, settings, feed_factory)
    finally:
        sock.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(settings.socket_path)


def _supervise(sock: socket.socket, settings: AgentSettings, feed_factory: FeedFactory) -> int:
    LOG.info("metadata agent: %d workers on %s", settings.workers, settings.socket_path)

    def run(slot: int) -> None:
        # Map mode: exactly one worker keeps the identity maps; slot 0's replacement takes over.
        _run_loop(sock, settings, feed_factory, keep_maps=slot == 0)

    return runtime.supervise_workers(settings.workers, run, name="metadata agent")
