"""Bad bytes never give a 500 or a logged traceback (issue 16, defect 6).

The three servers (metadata API, metadata agent on its unix socket, control API) get exactly the
bytes a guest or client can send: CONNECT, absolute-form and `*` targets, non-UTF-8 identity
headers and tokens, unknown methods (also on a kept-alive connection, where aiohttp logs them),
request lines past aiohttp's 8190-byte limit, HTTP/1.1 without Host. Each must answer a 4xx and
log at most plain lines.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web

from openimds.control.app import build_app
from openimds.edge import origin_form
from openimds.feed import Kind, MemoryFeed
from openimds.inventory.migrate import open_store
from openimds.metadata.identify import IdentifySettings, parse_trusted_proxies
from openimds.metadata.respond import Responder, RespondSettings
from openimds.metadata.source import DictSource
from openimds.wire import sign_instance_id
from tests.agent.fakes import port_dict
from tests.agent.harness import RunningAgent, StubUpstream, settings_for
from tests.metadata.fixtures import SECRET, UUID_A, full_view
from tests.metadata.helpers import signed_headers
from tests.metadata.servers import HTTP_SERVERS, start_metadata

Connect = Callable[[], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]

GUEST = b"X-Neutron-Network-ID: net-a\r\nX-Forwarded-For: 10.0.0.5\r\n"
SIGNED = "".join(f"{k}: {v}\r\n" for k, v in signed_headers(UUID_A, "test", SECRET)).encode()
PROVIDER = (f"X-Metadata-Provider: prov\r\nX-Metadata-Provider-Signature: "
            f"{sign_instance_id(SECRET, 'prov')}\r\n").encode()
BAD = b"\xe9\xff"


def _req(start: bytes, headers: bytes = b"", host: bool = True) -> bytes:
    return (start + b"\r\n" + (b"Host: x\r\n" if host else b"") + headers
            + b"Connection: close\r\n\r\n")


# (name, request bytes): what every server must refuse cleanly.
COMMON = [
    ("connect", _req(b"CONNECT host:80 HTTP/1.1", GUEST + SIGNED)),
    ("asterisk", _req(b"OPTIONS * HTTP/1.1", GUEST + SIGNED)),
    ("method-foo", _req(b"FOO / HTTP/1.1")),
    ("long-line", _req(b"GET /" + b"a" * 8200 + b" HTTP/1.1")),
    ("no-host", _req(b"GET / HTTP/1.1", host=False)),
    ("bad-path-bytes", _req(b"GET /latest/meta-data/" + BAD + b" HTTP/1.1", GUEST + SIGNED)),
    ("bad-header-name", _req(b"GET / HTTP/1.1", b"X-B\xe9d: 1\r\n")),
    # A valid request first, then an unknown method on the same connection: aiohttp logs
    # "Error handling request" with a traceback for anything but a connection's first request.
    ("foo-kept-alive", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + _req(b"FOO / HTTP/1.1")),
]
METADATA = [
    ("instance-id", _req(b"GET /latest/meta-data/ HTTP/1.1",
                         b"X-Instance-ID: " + BAD + b"\r\nX-Tenant-ID: test\r\n"
                         b"X-Instance-ID-Signature: 00\r\n")),
    ("tenant-id", _req(b"GET /latest/meta-data/ HTTP/1.1",
                       SIGNED.replace(b"X-Tenant-ID: test", b"X-Tenant-ID: t" + BAD))),
    ("signature", _req(b"GET /latest/meta-data/ HTTP/1.1",
                       b"X-Instance-ID: " + UUID_A.encode() + b"\r\nX-Tenant-ID: test\r\n"
                       b"X-Instance-ID-Signature: " + BAD + b"\r\n")),
    ("provider", _req(b"GET /latest/meta-data/ HTTP/1.1",
                      b"X-Metadata-Provider: " + BAD + b"\r\nX-Metadata-Provider-Signature: "
                      b"00\r\nX-Forwarded-For: 10.0.0.5\r\n")),
    ("provider-xff", _req(b"GET /latest/meta-data/ HTTP/1.1",
                          PROVIDER + b"X-Forwarded-For: " + BAD + b"\r\n")),
    ("signed-xff", _req(b"GET /latest/meta-data/local-ipv4 HTTP/1.1",
                        SIGNED + b"X-Forwarded-For: " + BAD + b"\r\n")),
]
DIRECT = [
    ("direct-xff", _req(b"GET /latest/meta-data/ HTTP/1.1", b"X-Forwarded-For: " + BAD + b"\r\n")),
]
CONTROL = [
    ("token", _req(b"GET /v2.0/networks HTTP/1.1", b"X-Auth-Token: t\xe9st\r\n")),
    ("token-bytes", _req(b"GET /v2.0/networks HTTP/1.1", b"X-Auth-Token: " + BAD + b"\r\n")),
    ("host-bytes", _req(b"GET /v2.0/networks HTTP/1.1", b"X-Auth-Token: abc\r\n")
     .replace(b"Host: x", b"Host: " + BAD)),
]
AGENT = [
    ("connect-guest", _req(b"CONNECT 169.254.169.254:80 HTTP/1.1", GUEST)),
    ("network-id", _req(b"GET /latest/meta-data/ HTTP/1.1",
                        b"X-Neutron-Network-ID: " + BAD + b"\r\nX-Forwarded-For: 10.0.0.5\r\n")),
    ("agent-xff", _req(b"GET /latest/meta-data/ HTTP/1.1",
                       b"X-Neutron-Network-ID: net-a\r\nX-Forwarded-For: " + BAD + b"\r\n")),
]


async def _exchange(connect: Connect, request: bytes) -> list[bytes]:
    """Send `request`; the status line of every response read until the server closes."""
    reader, writer = await connect()
    writer.write(request)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    statuses = []
    while data.startswith(b"HTTP/1."):  # walk the responses by their Content-Length
        head, _, data = data.partition(b"\r\n\r\n")
        statuses.append(head.split(b"\r\n", 1)[0])
        length = [int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")[1:]
                  if line.lower().startswith(b"content-length:")]
        data = data[length[0] if length else len(data):]
    return statuses


async def _check(connect: Connect, request: bytes, caplog: pytest.LogCaptureFixture) -> None:
    caplog.clear()
    statuses = await _exchange(connect, request)
    assert statuses, "no response at all"
    last = int(statuses[-1].split()[1])
    assert 400 <= last < 500, statuses
    for record in caplog.records:
        assert record.exc_info is None and record.levelno < logging.ERROR, (
            record.name, record.getMessage())
        assert "Traceback" not in record.getMessage()


async def _tcp_site(app: web.Application) -> tuple[web.BaseRunner, Connect]:
    runner: web.BaseRunner = (web.ServerRunner(app) if isinstance(app, web.Server)
                              else web.AppRunner(app))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, lambda: asyncio.open_connection("127.0.0.1", port)


async def _metadata_site(kind: str, responder: Responder
                         ) -> tuple[Callable[[], Awaitable[None]], Connect]:
    port, stop = await start_metadata(kind, responder)
    return stop, lambda: asyncio.open_connection("127.0.0.1", port)


@pytest.fixture(params=HTTP_SERVERS)
async def metadata_api(request: pytest.FixtureRequest) -> AsyncIterator[Connect]:
    responder = Responder(DictSource([full_view()], providers={"prov": ["net-1"]}),
                          RespondSettings(identify=IdentifySettings(True, SECRET)))
    stop, connect = await _metadata_site(request.param, responder)
    yield connect
    await stop()


@pytest.fixture(params=HTTP_SERVERS)
async def direct_api(request: pytest.FixtureRequest) -> AsyncIterator[Connect]:
    settings = IdentifySettings(False, SECRET, parse_trusted_proxies(["127.0.0.1"]))
    stop, connect = await _metadata_site(request.param, Responder(
        DictSource([full_view()]), RespondSettings(identify=settings)))
    yield connect
    await stop()


@pytest.fixture
async def control_api(tmp_path: Path) -> AsyncIterator[Connect]:
    store = open_store(f"sqlite:///{tmp_path / 'inventory.sqlite'}")
    runner, connect = await _tcp_site(build_app(store))
    yield connect
    await runner.cleanup()
    store.dispose()


@pytest.fixture
async def agent(tmp_path: Path) -> AsyncIterator[Connect]:
    upstream = StubUpstream("agent-secret")
    await upstream.start()
    feed = MemoryFeed()
    feed.put(Kind.PORT, port_dict("p-a", "net-a", "10.0.0.5", device="vm-a", project="proj-a"))
    try:
        settings = settings_for(tmp_path, [upstream.url], "agent-secret")
        async with RunningAgent(settings, feed) as running:
            await running.wait_ready()
            yield lambda: asyncio.open_unix_connection(settings.socket_path)
    finally:
        await upstream.stop()


@pytest.mark.parametrize("name,request_bytes", COMMON + METADATA, ids=lambda v: v
                         if isinstance(v, str) else "")
async def test_metadata_api_refuses_cleanly(metadata_api: Connect, name: str,
                                            request_bytes: bytes,
                                            caplog: pytest.LogCaptureFixture) -> None:
    await _check(metadata_api, request_bytes, caplog)


@pytest.mark.parametrize("name,request_bytes", DIRECT, ids=lambda v: v
                         if isinstance(v, str) else "")
async def test_direct_mode_refuses_cleanly(direct_api: Connect, name: str, request_bytes: bytes,
                                           caplog: pytest.LogCaptureFixture) -> None:
    await _check(direct_api, request_bytes, caplog)


@pytest.mark.parametrize("name,request_bytes", COMMON + CONTROL, ids=lambda v: v
                         if isinstance(v, str) else "")
async def test_control_api_refuses_cleanly(control_api: Connect, name: str,
                                           request_bytes: bytes,
                                           caplog: pytest.LogCaptureFixture) -> None:
    await _check(control_api, request_bytes, caplog)


@pytest.mark.parametrize("name,request_bytes", COMMON + AGENT, ids=lambda v: v
                         if isinstance(v, str) else "")
async def test_agent_refuses_cleanly(agent: Connect, name: str, request_bytes: bytes,
                                     caplog: pytest.LogCaptureFixture) -> None:
    await _check(agent, request_bytes, caplog)


async def test_absolute_form_is_served_by_its_path(metadata_api: Connect, agent: Connect
                                                   ) -> None:
    target = b"GET http://169.254.169.254/latest/meta-data/instance-id HTTP/1.1"
    assert await _exchange(metadata_api, _req(target, SIGNED)) == [b"HTTP/1.1 200 OK"]
    assert await _exchange(agent, _req(target, GUEST)) == [b"HTTP/1.1 200 OK"]


@pytest.mark.parametrize("target,path", [
    ("/a//b%2F?x=1", "/a//b%2F?x=1"),
    ("http://h/a//b?q", "/a//b?q"),
    ("HTTP://h:80", "/"),
    ("host:80", None),
    ("*", None),
    ("ftp://h/x", None),
    ("http://[::1/x", None),
])
def test_origin_form(target: str, path: str | None) -> None:
    assert origin_form(target) == path
