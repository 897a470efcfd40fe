"""Signing and forwarding to the metadata API over pooled keep-alive connections.

    Upstream(settings).forward(method, raw_path, body, Resolution) -> UpstreamResponse

Sends the guest's method, path, query and body with exactly the four identity headers of
spec 1.5 (`X-Forwarded-For`, `X-Instance-ID`, `X-Tenant-ID`, `X-Instance-ID-Signature`), plus
the session-token headers of `PASSED_HEADERS` when the guest sent them (IMDSv2); the answer's
`RELAYED_HEADERS` (the token TTL echo, the proxy's hop-limit header) come back with it.
The body comes back as the metadata API produced it: nothing is decompressed and the request
asks for `Accept-Encoding: identity`, so gzipped user data is relayed byte for byte (spec 7
item 6).

Failover: base URLs are tried in order starting from the last one that answered; a URL whose
transport failed is put last for DOWN_COOLDOWN seconds (health-aware: the requests meanwhile do
not pay a connect timeout or a reset on a replica known to be away). Any HTTP answer is
relayed as is, except a 503 to a GET/HEAD (a replica that is starting or lost its database),
which moves on to the next URL; when every URL says 503 the last 503 is relayed. Transport
failures move on to the next URL: a GET/HEAD, and IMDSv2's token PUT (it writes nothing), may
be retried after a timeout or a dropped connection; a POST (the password) only when the connection was never established, because a
second POST after a lost answer could write twice (so a POST always opens a new connection: a
pooled one may already be closed by the server, which looks like a lost answer). When every URL fails: UpstreamUnavailable
(503 + Retry-After at the server edge).

Why not `aiohttp.ClientSession`: it was a third of the agent's CPU per request (URL and
header-dict building, cookie, proxy, redirect, trace and middleware machinery we never use).
The agent sends one fixed shape of request to a fixed set of hosts, so `_Pool` keeps plain
keep-alive connections and writes that request in one piece; the response is parsed by
aiohttp's own HTTP parser (`aiohttp.http.HttpResponseParser`, the C llhttp one when built),
never by code of ours.
"""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
from typing import NamedTuple

from aiohttp.base_protocol import BaseProtocol
from aiohttp.http import SERVER_SOFTWARE, HttpResponseParser, RawResponseMessage
from aiohttp.streams import StreamReader
from multidict import MultiMapping
from yarl import URL

from openimds.agent.errors import BadTarget, UnforwardableIdentity, UpstreamUnavailable
from openimds.agent.resolve import Resolution
from openimds.agent.settings import AgentSettings
from openimds.control.tls import client_ssl_context
from openimds.metadata.gate import (
    GUEST_FORWARDED_HEADER,
    HOP_LIMIT_HEADER,
    TOKEN_HEADER,
    TTL_HEADER,
)
from openimds.wire import (
    FORWARDED_FOR,
    INSTANCE_ID,
    INSTANCE_ID_SIGNATURE,
    TENANT_ID,
    sign_instance_id,
)

__all__ = ["PASSED_HEADERS", "RELAYED_HEADERS", "Upstream", "UpstreamResponse", "passed_headers"]

LOG = logging.getLogger("openimds.agent.upstream")

UNAVAILABLE_TEXT = ("The remote metadata server is temporarily unavailable. "
                    "Please try again later.")
_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS"})
# Safe to send again after a lost answer: the idempotent methods and PUT, whose only use on
# the metadata path is IMDSv2's token PUT (idempotent by HTTP's rules; sent twice it mints a
# second signed token, writes nothing). A POST (the password) is a write and never resent.
_RESENDABLE = _IDEMPOTENT | {"PUT"}
# Methods whose request carries a Content-Length even when the body is empty (as aiohttp sent).
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
# Idle pooled connections are dropped after this long: below the metadata API's own idle
# timeout, so we never send on a connection the server is closing at that moment.
KEEPALIVE_TIMEOUT = 15.0
# A URL whose transport failed is tried after the others for this long.
DOWN_COOLDOWN = 5.0
# At most this many connections per upstream URL (in use + idle); more requests wait.
POOL_LIMIT = 256
_BODY_BUFFER = 4 * 1024 * 1024
# A header value or request target with a control character (or a space in the target) would
# let a value from the inventory or the guest's path end the line and inject a header.
_UNSAFE_VALUE = re.compile(r"[\x00-\x1f\x7f]")
_UNSAFE_TARGET = re.compile(r"[\x00-\x20\x7f]")
# Guest request headers the metadata API needs besides the identity (gate.py): the session
# token, its TTL, and the proxy's note that the guest sent X-Forwarded-For.
PASSED_HEADERS = (TOKEN_HEADER, TTL_HEADER, GUEST_FORWARDED_HEADER)
# Answer headers relayed to the guest's proxy.
RELAYED_HEADERS = (TTL_HEADER, HOP_LIMIT_HEADER)
# A value that cannot be sent verbatim is replaced by one that fails the same way (an invalid
# token is still an invalid token: 401; an invalid TTL still a 400).
_UNSENDABLE = "invalid"


def passed_headers(headers: MultiMapping[str]) -> str:
    """The PASSED_HEADERS lines ("Name: value\\r\\n" each) for a guest's request headers
    (a case-insensitive multidict), or "" when it sent none (nearly every request)."""
    lines = ""
    for name in PASSED_HEADERS:
        for value in headers.getall(name, ()):
            if _UNSAFE_VALUE.search(value) or len(value) > 256:
                value = _UNSENDABLE
            lines += f"{name}: {value}\r\n"
    return lines


# Built per request on the hot path: a NamedTuple is as immutable as a frozen dataclass and
# about four times cheaper to construct.
class UpstreamResponse(NamedTuple):
    status: int
    body: bytes
    content_type: str | None
    content_encoding: str | None = None
    retry_after: str | None = None
    url: str = ""
    # RELAYED_HEADERS present in the answer.
    extra_headers: tuple[tuple[str, str], ...] = ()


class _TransportFailure(Exception):
    def __init__(self, reason: str, *, sent: bool, reused: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        # Whether the request may have reached the server (then a POST is not retried).
        self.sent = sent
        # Whether it went over a pooled connection (then the server may simply have closed
        # it while idle, and an idempotent request is retried once on a new connection).
        self.reused = reused


class _Disconnected(Exception):
    """The connection closed (or sent something that is not HTTP) before the answer ended."""


class _Connection(BaseProtocol):
    """One keep-alive connection to the metadata API; one request at a time.

    BaseProtocol gives the pause/resume-reading flow control the parser's body StreamReader
    calls into."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop)
        self._response: asyncio.Future[tuple[RawResponseMessage, StreamReader]] | None = None
        self._payload: StreamReader | None = None
        self.reusable = True
        self.idle_since = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: BaseException | None) -> None:
        self.reusable = False
        parser = self._parser
        self._parser = None
        failure: BaseException = _Disconnected(f"connection lost: {exc}" if exc
                                               else "server closed the connection")
        if parser is not None:
            try:
                # Completes a body delimited by the end of the connection; raises when a
                # Content-Length or chunked body was cut short.
                parser.feed_eof()
            except Exception as cut:  # noqa: BLE001 - any parser complaint means "cut short"
                failure = _Disconnected(f"answer cut short: {cut!r}")
                if self._payload is not None:
                    self._payload.set_exception(failure)
        if self._response is not None and not self._response.done():
            self._response.set_exception(failure)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        parser = self._parser
        if not data and parser is None:
            return  # BaseProtocol.resume_reading() "resumes" with b"" after we finished
        if parser is None:
            # Bytes nobody asked for: the stream is out of step; never reuse it.
            self.close()
            return
        try:
            messages, _upgraded, tail = parser.feed_data(data)
        except Exception as exc:  # noqa: BLE001 - the parser's errors are all "not HTTP"
            self._fail(_Disconnected(f"invalid answer: {exc!r}"))
            return
        for message, payload in messages:
            if self._response is None or self._response.done() or tail:
                self._fail(_Disconnected("more than one answer to one request"))
                return
            self._payload = payload
            if message.should_close:
                self.reusable = False
            self._response.set_result((message, payload))

    def _fail(self, exc: BaseException) -> None:
        if self._response is not None and not self._response.done():
            self._response.set_exception(exc)
        elif self._payload is not None and not self._payload.is_eof():
            self._payload.set_exception(exc)
        self.close()

    def close(self) -> None:
        self.reusable = False
        if self.transport is not None:
            self.transport.close()

    async def roundtrip(self, request: bytes, *, head: bool
                        ) -> tuple[RawResponseMessage, bytes]:
        loop = self._loop
        # A parser per request: whether an answer has a body depends on the method (HEAD).
        # The limit only sets when the body buffer pauses the socket; we keep the whole body
        # anyway, so pause only far above any metadata answer.
        self._parser = HttpResponseParser(
            self, loop, _BODY_BUFFER, payload_exception=_Disconnected, response_with_body=not head,
            read_until_eof=True, auto_decompress=False)
        self._payload = None
        self._response = loop.create_future()
        assert self.transport is not None
        self.transport.write(request)
        try:
            message, payload = await self._response
            body = await payload.read()
        except BaseException:
            self.close()  # a half-read answer (timeout, error) leaves the stream unusable
            raise
        finally:
            self._response = None
            self._payload = None
        self._parser = None
        return message, body


class _Pool:
    """Keep-alive connections to one base URL (LIFO reuse, idle ones closed after
    KEEPALIVE_TIMEOUT, at most POOL_LIMIT at once)."""

    def __init__(self, base: str, ssl_context: ssl.SSLContext | None,
                 connect_timeout: float) -> None:
        url = URL(base)
        self.base = base
        self.host = url.raw_host or ""
        self.port = url.port or (443 if url.scheme == "https" else 80)
        self.prefix = url.raw_path.rstrip("/")
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.host_header = host if url.is_default_port() else f"{host}:{self.port}"
        self.ssl = ssl_context if url.scheme == "https" else None
        self.connect_timeout = connect_timeout
        self.idle: list[_Connection] = []
        self.slots = asyncio.Semaphore(POOL_LIMIT)
        self._sweeper: asyncio.TimerHandle | None = None

    def take(self, now: float) -> _Connection | None:
        while self.idle:
            conn = self.idle.pop()
            if conn.reusable and conn.transport is not None \
                    and now - conn.idle_since < KEEPALIVE_TIMEOUT:
                return conn
            conn.close()
        return None

    def give_back(self, conn: _Connection, now: float) -> None:
        if not conn.reusable or conn.transport is None:
            conn.close()
            return
        conn.idle_since = now
        self.idle.append(conn)
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().call_later(KEEPALIVE_TIMEOUT,
                                                                  self._sweep)

    def _sweep(self) -> None:
        """Close connections idle for KEEPALIVE_TIMEOUT, so a quiet agent holds no fds."""
        self._sweeper = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        keep = []
        for conn in self.idle:
            if now - conn.idle_since < KEEPALIVE_TIMEOUT and conn.reusable:
                keep.append(conn)
            else:
                conn.close()
        self.idle = keep
        if keep:
            self._sweeper = loop.call_later(KEEPALIVE_TIMEOUT, self._sweep)

    async def connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, conn = await loop.create_connection(
                    lambda: _Connection(loop), self.host, self.port, ssl=self.ssl,
                    server_hostname=self.host if self.ssl is not None else None)
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            reason = "connect timed out" if isinstance(exc, TimeoutError) else str(exc)
            raise _TransportFailure(f"cannot connect: {reason}", sent=False) from exc
        return conn

    def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for conn in self.idle:
            conn.close()
        self.idle = []


class Upstream:
    """A pooled client for the metadata API; one per worker process, closed on shutdown."""

    def __init__(self, settings: AgentSettings) -> None:
        self.settings = settings
        self.urls = settings.upstream_urls
        self._preferred = 0
        self._pools: list[_Pool] | None = None
        # loop.time() until which each URL counts as away (see DOWN_COOLDOWN).
        self._down_until = [0.0] * len(self.urls)
        # Fixed part of every request, built once (aiohttp's User-Agent and Accept, as sent
        # before: the metadata API picks its error body format by Accept).
        self._fixed_headers = (f"Accept: */*\r\nAccept-Encoding: identity\r\n"
                               f"User-Agent: {SERVER_SOFTWARE}\r\n")

    async def start(self) -> None:
        if self._pools is not None:
            return
        needs_tls = any(u.startswith("https:") for u in self.urls)
        s = self.settings
        # Neutron's rules (spec 1.7): verify against auth_ca_cert, else the system CAs, unless
        # nova_metadata_insecure; a client certificate only when both cert and key are set.
        ctx = (client_ssl_context(s.insecure, s.ca_cert, s.client_cert, s.client_key)
               if needs_tls else None)
        self._pools = [_Pool(u, ctx, self.settings.upstream_connect_timeout) for u in self.urls]

    async def close(self) -> None:
        if self._pools is not None:
            for pool in self._pools:
                pool.close()
            self._pools = None

    async def forward(self, method: str, raw_path: str, body: bytes, res: Resolution,
                      passed: str = "") -> UpstreamResponse:
        if self._pools is None:
            await self.start()
        assert self._pools is not None
        secret = self.settings.shared_secret
        signature = sign_instance_id(secret, res.instance_id)
        # The address is ours (normalised) and the signature hex; the ids come from the
        # inventory and the target from the guest, so those are checked.
        if _UNSAFE_TARGET.search(raw_path) or not raw_path.startswith("/"):
            # The guest's own request: a 400 it can read, one log line (never a traceback).
            raise BadTarget("Bad request target: control characters or not a path.",
                            log_detail=f"refusing to forward path {raw_path!r}")
        if _UNSAFE_VALUE.search(res.instance_id) or _UNSAFE_VALUE.search(res.project_id):
            # The inventory's ids: nothing the guest can fix, so a 500 and the operator's line.
            raise UnforwardableIdentity(
                # Neutron's text for any 500: nothing here is the guest's to know.
                "An unknown error has occurred. Please try your request again.",
                log_detail=f"refusing to forward ids with control characters (instance "
                           f"{res.instance_id!r}, project {res.project_id!r})")
        # The four identity headers of spec 1.5, signed with the shared secret (spec 1.8).
        identity = (f"{FORWARDED_FOR}: {res.address}\r\n{INSTANCE_ID}: {res.instance_id}\r\n"
                    f"{TENANT_ID}: {res.project_id}\r\n{INSTANCE_ID_SIGNATURE}: {signature}\r\n")
        method = method.upper()
        length = f"Content-Length: {len(body)}\r\n" if body or method in _BODY_METHODS else ""
        tail = f"{identity}{passed}{self._fixed_headers}{length}\r\n"
        failures: list[str] = []
        count = len(self._pools)
        now = asyncio.get_running_loop().time()
        ring = [(self._preferred + step) % count for step in range(count)]
        # Healthy URLs first (from the preferred one), then those recently away.
        order = [i for i in ring if self._down_until[i] <= now] + \
            [i for i in ring if self._down_until[i] > now]
        unavailable: UpstreamResponse | None = None
        for i in order:
            pool = self._pools[i]
            head = f"{method} {pool.prefix}{raw_path} HTTP/1.1\r\nHost: {pool.host_header}\r\n"
            request = (head + tail).encode("utf-8") + body  # as aiohttp encodes headers
            try:
                answer = await self._send(pool, method, request)
            except _TransportFailure as exc:
                failures.append(f"{pool.base}: {exc.reason}")
                self._down_until[i] = asyncio.get_running_loop().time() + DOWN_COOLDOWN
                if exc.sent and method not in _RESENDABLE:
                    break
                continue
            if answer.status == 503 and method in _RESENDABLE and count > 1:
                # This replica cannot serve now (starting, or its database is away): another
                # may; a GET or the token PUT is safe to ask twice.
                unavailable = answer
                failures.append(f"{pool.base}: 503")
                continue
            self._down_until[i] = 0.0
            if i != self._preferred:
                LOG.warning("metadata API %s answering; failed over from %s", pool.base,
                            self.urls[self._preferred])
                self._preferred = i
            if answer.status == 403:
                LOG.warning(
                    "metadata API %s refused instance %s with 403: the shared secrets likely "
                    "do not match (metadata_proxy_shared_secret here vs [neutron] "
                    "metadata_proxy_shared_secret of the metadata API)", pool.base,
                    res.instance_id)
            return answer
        if unavailable is not None:
            return unavailable
        raise UpstreamUnavailable(
            UNAVAILABLE_TEXT,
            log_detail=f"no metadata API answered for instance {res.instance_id}: "
            + "; ".join(failures))

    async def _send(self, pool: _Pool, method: str, request: bytes) -> UpstreamResponse:
        loop = asyncio.get_running_loop()
        try:
            # One deadline for the whole exchange: waiting for a slot, connecting, answer.
            async with asyncio.timeout(self.settings.upstream_timeout), pool.slots:
                try:
                    return await self._exchange(pool, method, request, loop)
                except _TransportFailure as exc:
                    # A pooled connection the server closed while idle: an idempotent
                    # request is retried once on a new connection (as aiohttp does).
                    if not (exc.reused and method in _RESENDABLE):
                        raise
                    return await self._exchange(pool, method, request, loop, fresh=True)
        except TimeoutError as exc:
            raise _TransportFailure("timed out", sent=True) from exc

    async def _exchange(self, pool: _Pool, method: str, request: bytes,
                        loop: asyncio.AbstractEventLoop, *, fresh: bool = False
                        ) -> UpstreamResponse:
        # A POST goes on a new connection: on a pooled one the server may have closed (idle
        # timeout, a replica killed) before our loop noticed, the request is written, the
        # answer never comes, and that cannot be told from a request the server did receive,
        # so it could not be sent elsewhere (a write must not happen twice). A refused
        # connect is certain: the next replica is asked.
        conn = None if fresh or method == "POST" else pool.take(loop.time())
        reused = conn is not None
        if conn is None:
            conn = await pool.connect()
        try:
            message, data = await conn.roundtrip(request, head=method == "HEAD")
        except _Disconnected as exc:
            raise _TransportFailure(str(exc), sent=True, reused=reused) from exc
        except BaseException:
            conn.close()
            raise
        pool.give_back(conn, loop.time())
        headers = message.headers
        extra: tuple[tuple[str, str], ...] = ()
        if HOP_LIMIT_HEADER in headers:  # only token answers carry these
            extra = tuple((n, headers[n]) for n in RELAYED_HEADERS if n in headers)
        return UpstreamResponse(
            status=message.code,
            body=data,
            content_type=headers.get("Content-Type"),
            content_encoding=headers.get("Content-Encoding"),
            retry_after=headers.get("Retry-After"),
            url=pool.base,
            extra_headers=extra,
        )
