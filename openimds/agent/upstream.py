"""Signing and forwarding to the metadata API over pooled keep-alive connections.

    Upstream(settings).forward(method, raw_path, body, Resolution) -> UpstreamResponse

Sends the guest's method, path, query and body with exactly the four identity headers of
spec 1.5 (`X-Forwarded-For`, `X-Instance-ID`, `X-Tenant-ID`, `X-Instance-ID-Signature`).
The body comes back as the metadata API produced it: the session never decompresses and asks for
`Accept-Encoding: identity`, so gzipped user data is relayed byte for byte (spec 7 item 6).

Failover: base URLs are tried in order starting from the last one that answered. Any HTTP answer
(even a 500) is relayed as is; only transport failures move on to the next URL. A GET/HEAD may be
retried after a timeout or a dropped connection; a POST (the password) only when the connection
was never established, because a second POST after a lost answer would meet "password already
set". When every URL fails: UpstreamUnavailable (503 + Retry-After at the server edge).

aiohttp exceptions are translated here, in one place (`_transport_errors`), with `from exc`.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import aiohttp
from yarl import URL

from openimds.agent.errors import UpstreamUnavailable
from openimds.agent.resolve import Resolution
from openimds.agent.settings import AgentSettings
from openimds.metadata.identify import sign_instance_id

__all__ = ["Upstream", "UpstreamResponse", "build_ssl_context", "identity_headers"]

LOG = logging.getLogger("openimds.agent.upstream")

UNAVAILABLE_TEXT = ("The remote metadata server is temporarily unavailable. "
                    "Please try again later.")
_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True)
class UpstreamResponse:
    status: int
    body: bytes
    content_type: str | None
    content_encoding: str | None = None
    retry_after: str | None = None
    url: str = ""


def identity_headers(secret: str, res: Resolution) -> dict[str, str]:
    """The headers the metadata API trusts, signed with the shared secret (spec 1.5, 1.8)."""
    return {
        "X-Forwarded-For": res.address,
        "X-Instance-ID": res.instance_id,
        "X-Tenant-ID": res.project_id,
        "X-Instance-ID-Signature": sign_instance_id(secret, res.instance_id),
    }


def build_ssl_context(settings: AgentSettings) -> ssl.SSLContext:
    """Neutron's rules (spec 1.7): verify against auth_ca_cert, else the system CAs, unless
    nova_metadata_insecure; send a client certificate only when both cert and key are set."""
    if settings.insecure:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    else:
        ctx = ssl.create_default_context(cafile=settings.ca_cert or None)
    if settings.client_cert and settings.client_key:
        ctx.load_cert_chain(settings.client_cert, settings.client_key)
    return ctx


class _TransportFailure(Exception):
    def __init__(self, reason: str, *, sent: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        # Whether the request may have reached the server (then a POST is not retried).
        self.sent = sent


@contextmanager
def _transport_errors() -> Iterator[None]:
    try:
        yield
    except aiohttp.ClientConnectorError as exc:
        raise _TransportFailure(f"cannot connect: {exc.os_error or exc}", sent=False) from exc
    except TimeoutError as exc:
        raise _TransportFailure("timed out", sent=True) from exc
    except aiohttp.ClientError as exc:
        raise _TransportFailure(f"{type(exc).__name__}: {exc}", sent=True) from exc


class Upstream:
    """A pooled client for the metadata API; one per worker process, closed on shutdown."""

    def __init__(self, settings: AgentSettings) -> None:
        self.settings = settings
        self.urls = settings.upstream_urls
        self._preferred = 0
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        if self._session is not None:
            return
        needs_tls = any(u.startswith("https:") for u in self.urls)
        connector = aiohttp.TCPConnector(
            limit=256,
            # Below the server's idle timeout, so we drop a pooled connection before it does.
            keepalive_timeout=15,
            ssl=build_ssl_context(self.settings) if needs_tls else True,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,
            timeout=aiohttp.ClientTimeout(total=self.settings.upstream_timeout,
                                          sock_connect=self.settings.upstream_connect_timeout),
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def forward(self, method: str, raw_path: str, body: bytes, res: Resolution
                      ) -> UpstreamResponse:
        await self.start()
        headers = identity_headers(self.settings.shared_secret, res)
        headers["Accept-Encoding"] = "identity"
        failures: list[str] = []
        count = len(self.urls)
        for step in range(count):
            i = (self._preferred + step) % count
            base = self.urls[i]
            try:
                answer = await self._once(method, base, raw_path, body, headers)
            except _TransportFailure as exc:
                failures.append(f"{base}: {exc.reason}")
                if exc.sent and method.upper() not in _IDEMPOTENT:
                    break
                continue
            if i != self._preferred:
                LOG.warning("metadata API %s answering; failed over from %s", base,
                            self.urls[self._preferred])
                self._preferred = i
            if answer.status == 403:
                LOG.warning(
                    "metadata API %s refused instance %s with 403: the shared secrets likely "
                    "do not match (metadata_proxy_shared_secret here vs [neutron] "
                    "metadata_proxy_shared_secret of the metadata API)", base, res.instance_id)
            return answer
        raise UpstreamUnavailable(
            UNAVAILABLE_TEXT,
            log_detail=f"no metadata API answered for instance {res.instance_id}: "
            + "; ".join(failures))

    async def _once(self, method: str, base: str, raw_path: str, body: bytes,
                    headers: dict[str, str]) -> UpstreamResponse:
        assert self._session is not None
        # encoded=True: the guest's path and query go out exactly as they came in.
        url = URL(base + raw_path, encoded=True)
        with _transport_errors():
            async with self._session.request(method, url, data=body or None,
                                             headers=headers, allow_redirects=False) as resp:
                data = await resp.read()
                return UpstreamResponse(
                    status=resp.status,
                    body=data,
                    content_type=resp.headers.get("Content-Type"),
                    content_encoding=resp.headers.get("Content-Encoding"),
                    retry_after=resp.headers.get("Retry-After"),
                    url=base,
                )
