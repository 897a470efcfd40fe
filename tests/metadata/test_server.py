"""The HTTP edge over a real loopback socket: what either HTTP layer (fast, aiohttp) adds or
must not lose."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from openimds.metadata.gate import HOP_LIMIT_HEADER, TOKEN_HEADER, TTL_HEADER
from openimds.metadata.identify import IdentifySettings
from openimds.metadata.metrics import MetadataMetrics
from openimds.metadata.respond import Responder, RespondSettings
from openimds.metadata.server import EntropyPool, ops_app
from openimds.metadata.source import DictSource
from tests.metadata.fixtures import SECRET, UUID_A, full_view
from tests.metadata.helpers import signed_headers
from tests.metadata.servers import HTTP_SERVERS, start_metadata

H = dict(signed_headers(UUID_A, "test", SECRET))


class Served:
    def __init__(self, base: str, ops: str, metrics: MetadataMetrics) -> None:
        self.base = base
        self.ops = ops
        self.metrics = metrics


async def _start(app: web.Application | web.Server) -> tuple[web.BaseRunner, int]:
    runner: web.BaseRunner = (
        web.ServerRunner(app)
        if isinstance(app, web.Server)
        else web.AppRunner(app, access_log=None)
    )
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]


@pytest.fixture(params=HTTP_SERVERS)
async def served(request: pytest.FixtureRequest) -> AsyncIterator[Served]:
    metrics = MetadataMetrics()
    source = DictSource([full_view()])
    responder = Responder(
        source,
        RespondSettings(identify=IdentifySettings(True, SECRET)),
        on_tree_cache=lambda hit: metrics.cache_event("tree", hit),
    )
    port, stop = await start_metadata(request.param, responder, metrics)
    ops_runner, ops_port = await _start(
        ops_app(source.ready, lambda: {"revision": None}, lambda: metrics.registry)
    )
    try:
        yield Served(f"http://127.0.0.1:{port}", f"http://127.0.0.1:{ops_port}", metrics)
    finally:
        await stop()
        await ops_runner.cleanup()


async def raw_request(base: str, request: bytes) -> bytes:
    """Send bytes exactly as given (aiohttp's client would normalise the path)."""
    host, port = base.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(request)
    await writer.drain()
    data = await reader.read()
    writer.close()
    return data


def _req(path: str, headers: dict[str, str], method: str = "GET", body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: x", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    if body or method == "POST":
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def test_get_and_head(served: Served) -> None:
    async with aiohttp.ClientSession() as s:
        async with s.get(served.base + "/openstack/latest/meta_data.json", headers=H) as r:
            assert r.status == 200
            assert r.headers["Content-Type"] == "application/json"
            body = await r.read()
        async with s.head(served.base + "/openstack/latest/meta_data.json", headers=H) as r:
            assert r.status == 200
            assert r.headers["Content-Type"] == "application/json"
            assert int(r.headers["Content-Length"]) == len(body)
            assert await r.read() == b""
        async with s.head(served.base + "/openstack/latest/password", headers=H) as r:
            assert r.status == 400
        async with s.get(served.base + "/", headers={}) as r:
            assert r.headers["Content-Type"] == "text/plain; charset=UTF-8"
            # The AWS profile (the default) lists its dated versions after Nova's.
            assert (await r.read()).endswith(b"2009-04-04\n2016-09-02\n2018-09-24\n2021-03-23\nlatest")


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("//latest/meta-data/instance-id", b"1.0\n2007-01-19"),  # nova's double-slash quirk
        ("/latest/meta-data%2Finstance-id", b"i-00000001"),  # decoded like WSGI
        ("/latest/meta-data/instance-id?x=1", b"i-00000001"),  # query ignored
        ("/latest/meta-data/../meta-data/instance-id", b"i-00000001"),
    ],
)
async def test_raw_paths(served: Served, path: str, expected: bytes) -> None:
    data = await raw_request(served.base, _req(path, H))
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    assert body.startswith(expected)


async def test_duplicate_identity_header_over_the_wire(served: Served) -> None:
    request = _req("/openstack", H).replace(
        b"\r\n\r\n", f"\r\nX-Instance-ID: {UUID_A}\r\n\r\n".encode()
    )
    data = await raw_request(served.base, request)
    assert data.startswith(b"HTTP/1.1 400")
    assert b"Multiple X-Instance-ID headers" in data


async def test_password_post_big_body_without_buffering_it_all(served: Served) -> None:
    url = served.base + "/openstack/latest/password"
    async with aiohttp.ClientSession() as s:
        async with s.post(url, headers=H, data=b"x" * 5_000_000) as r:
            assert r.status == 400
            assert b"Request is too large." in await r.read()

        async def chunks() -> AsyncIterator[bytes]:
            yield b"abc"
            yield b"def"

        # Chunked, no Content-Length: nova answers 500 here; we read the body.
        async with s.post(url, headers=H, data=chunks()) as r:
            assert r.status == 200
            assert r.headers["Content-Type"] == "text/html; charset=UTF-8"
        async with s.get(url, headers=H) as r:
            assert await r.read() == b"abcdef"
        async with s.post(url, headers=H, data=b"again") as r:
            assert r.status == 409


async def test_access_log_line_per_request(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="openimds.metadata.access")
    async with aiohttp.ClientSession() as s:
        async with s.get(served.base + "/latest/meta-data/nope", headers=H) as r:
            assert r.status == 404
        async with s.get(served.base + "/openstack", headers={}) as r:
            assert r.status == 400
    lines = [r.getMessage() for r in caplog.records if r.name == "openimds.metadata.access"]
    assert len(lines) == 2
    assert (
        f"instance={UUID_A}" in lines[0]
        and "404" in lines[0]
        and "outcome=path-not-found" in lines[0]
    )
    assert "instance=-" in lines[1] and "outcome=missing-header" in lines[1]


async def test_errors_negotiate_like_webob_for_curl(served: Served) -> None:
    # aiohttp sends Accept: */* by default, as curl and requests do: HTML.
    async with aiohttp.ClientSession() as s, s.get(served.base + "/openstack") as r:
        assert r.status == 400
        assert r.headers["Content-Type"] == "text/html; charset=UTF-8"
        assert "Traceback" not in await r.text()


async def test_metrics_and_healthcheck(served: Served) -> None:
    async with aiohttp.ClientSession() as s:
        for _ in range(2):
            async with s.get(served.base + "/latest/meta-data/hostname", headers=H) as r:
                assert r.status == 200
        async with s.get(served.ops + "/metrics") as r:
            text = await r.text()
        async with s.get(served.ops + "/healthcheck") as r:
            assert r.status == 200
            assert (await r.json())["ready"] is True
    assert 'openimds_metadata_requests_total{family="ec2",status="200"} 2.0' in text
    assert 'openimds_metadata_cache_total{cache="tree",result="hit"} 1.0' in text
    assert 'openimds_metadata_cache_total{cache="tree",result="miss"} 1.0' in text
    assert "openimds_metadata_request_seconds_bucket" in text


async def test_healthcheck_is_503_until_ready() -> None:
    state = {"ready": False}
    runner, port = await _start(ops_app(lambda: state["ready"], lambda: {}, None))
    try:
        async with aiohttp.ClientSession() as s:
            async with s.get(f"http://127.0.0.1:{port}/healthcheck") as r:
                assert r.status == 503
            state["ready"] = True
            async with s.get(f"http://127.0.0.1:{port}/healthcheck") as r:
                assert r.status == 200
    finally:
        await runner.cleanup()


def test_entropy_pool_hands_out_each_byte_once(monkeypatch: pytest.MonkeyPatch) -> None:
    reads: list[int] = []

    def fake_urandom(n: int) -> bytes:
        reads.append(n)
        return bytes([len(reads)]) * n  # each read recognisable by its byte value

    monkeypatch.setattr("openimds.metadata.server.os.urandom", fake_urandom)
    pool = EntropyPool(1024)
    got = [pool(300) for _ in range(4)]
    # Three slices of the first read, then a fresh read: the 124 left over are never used.
    assert got == [b"\x01" * 300] * 3 + [b"\x02" * 300]
    assert reads == [1024, 1024]
    assert pool(2000) == b"\x03" * 2000  # larger than the pool: read directly
    assert pool(724) == b"\x02" * 724  # the rest of the second read, and no more
    assert pool(1) == b"\x04"


async def test_random_seed_is_fresh_on_every_response(served: Served) -> None:
    async with aiohttp.ClientSession() as s:
        seeds = set()
        for _ in range(200):  # more than one pooled read's worth of 512-byte seeds
            async with s.get(served.base + "/openstack/latest/meta_data.json", headers=H) as r:
                seeds.add((await r.json())["random_seed"])
    assert len(seeds) == 200


async def test_token_put_and_use_with_the_responders_headers(served: Served) -> None:
    # IMDSv2 over the wire: whatever headers the Responder returns reach the client.
    async with aiohttp.ClientSession() as s:
        async with s.put(served.base + "/latest/api/token",
                         headers={**H, TTL_HEADER: "60"}) as r:
            assert r.status == 200
            assert r.headers[TTL_HEADER] == "60"
            assert HOP_LIMIT_HEADER in r.headers
            token = await r.text()
        async with s.get(served.base + "/latest/meta-data/instance-id",
                         headers={**H, TOKEN_HEADER: token}) as r:
            assert r.status == 200
        async with s.get(served.base + "/latest/meta-data/instance-id",
                         headers={**H, TOKEN_HEADER: token + "x"}) as r:
            assert r.status == 401
