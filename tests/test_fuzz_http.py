"""Fuzzing the metadata API and the control API over real sockets (issue 16).

Hypothesis builds raw HTTP/1.1 requests, mostly well-formed enough to reach our code: methods
(real and invented), targets from the real path vocabulary mixed with percent-escapes, unicode,
raw bytes, `..` and absolute-form, identity headers that are correctly signed or made of
arbitrary bytes, tokens, query filters and JSON bodies shaped like the API's resources. Every
answer must be below 500 and nothing may be logged at ERROR or with a traceback.

The servers are the real ones (aiohttp, `Responder` over the SQLite inventory through
`StoreSource` in proxy and in direct mode, the control-plane app over its SQLite store), on
loopback, run in a thread of their own so each example is a plain blocking exchange. Settings
are deterministic (`derandomize=True`) and the example counts bound the run to seconds.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from openimds.control import auth
from openimds.control.app import build_app
from openimds.inventory.migrate import open_store
from openimds.inventory.store import Store
from openimds.metadata.identify import IdentifySettings, parse_trusted_proxies
from openimds.metadata.respond import Responder, RespondSettings
from openimds.metadata.server import metadata_server
from openimds.metadata.store_source import StoreSource
from openimds.wire import sign_instance_id
from tests.metadata.test_store_source import INSTANCE, seed

SECRET = "fuzz-secret"
PASSWORD = "fuzz-pw"
FUZZ = settings(max_examples=400, derandomize=True, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])


class Collect(logging.Handler):
    """Every record at WARNING and above, or with exception info, from any thread."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.bad: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.ERROR or record.exc_info:
            self.bad.append(f"{record.name} {record.levelname}: {record.getMessage()}")


class Servers:
    """Loopback servers on an event loop in a thread of its own."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.runners: list[web.BaseRunner] = []
        self.sources: list[StoreSource] = []

    def run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(60)

    async def _site(self, app: web.Server | web.Application) -> int:
        runner: web.BaseRunner = (web.ServerRunner(app) if isinstance(app, web.Server)
                                  else web.AppRunner(app, access_log=None))
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.runners.append(runner)
        return int(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]

    async def metadata(self, identify: IdentifySettings) -> int:
        source = StoreSource(self.store, feed_timeout=0.5)
        await source.start()
        self.sources.append(source)
        return await self._site(metadata_server(
            Responder(source, RespondSettings(identify=identify))))

    async def control(self) -> int:
        return await self._site(build_app(self.store))

    async def _close(self) -> None:
        for runner in self.runners:
            await runner.cleanup()
        for source in self.sources:
            await source.stop()
        # Connections a client left half-sent (e.g. a body never completed) end here.
        rest = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in rest:
            task.cancel()
        await asyncio.gather(*rest, return_exceptions=True)

    def close(self) -> None:
        self.run(self._close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def exchange(port: int, request: bytes) -> bytes:
    """Send `request` and return the first status line (b"" if the server sent none)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(request)
        data = b""
        while b"\r\n" not in data:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    return data.split(b"\r\n", 1)[0]


def status_of(line: bytes) -> int:
    parts = line.split()
    assert len(parts) >= 2 and parts[0].startswith(b"HTTP/1."), line
    return int(parts[1])


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp: Path = tmp_path_factory.mktemp("fuzz")
    store = open_store(f"sqlite:///{tmp / 'inventory.sqlite'}")
    ids = seed(store)
    auth.bootstrap(store, PASSWORD)
    servers = Servers(store)
    collect = Collect()
    logging.getLogger().addHandler(collect)
    try:
        ports = {
            "proxy": servers.run(servers.metadata(IdentifySettings(True, SECRET))),
            "direct": servers.run(servers.metadata(IdentifySettings(
                False, SECRET, parse_trusted_proxies(["127.0.0.1"])))),
            "control": servers.run(servers.control()),
        }
        token = auth.issue_token(store, "admin", PASSWORD).token
        yield {"ports": ports, "ids": ids, "token": token, "log": collect}
    finally:
        logging.getLogger().removeHandler(collect)
        servers.close()
        store.dispose()


# ---- request pieces ---------------------------------------------------------------------------

SAFE = st.binary(max_size=40).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))
SAFE_Q = b"%00%ff%c3%a9"
TOKEN_CHARS = st.text(st.characters(min_codepoint=33, max_codepoint=126,
                                    exclude_characters=" "), min_size=1, max_size=12)
SEGMENTS = st.one_of(
    st.sampled_from([
        "", ".", "..", "latest", "2009-04-04", "2012-08-10", "2013-04-04", "2017-02-22",
        "2018-08-27", "openstack", "ec2", "meta-data", "user-data", "meta_data.json",
        "network_data.json", "vendor_data.json", "vendor_data2.json", "password",
        "public-keys", "0", "0=key", "openssh-key", "block-device-mapping", "placement",
        "local-ipv4", "hostname", "instance-id", "content", "%2F", "%2e%2e", "%ff", "%",
        "é", "\u2603", "a" * 300, "v2.0", "v2.1", "v3", "networks", "subnets", "ports",
        "routers", "servers", "detail", "os-keypairs", "changes", "auth", "tokens",
        "add_router_interface", "openapi.json", INSTANCE,
    ]),
    st.text(max_size=12).map(lambda t: "".join(
        c if c.isalnum() else f"%{ord(c) & 0xff:02x}" for c in t)),
)


@st.composite
def target(draw: st.DrawFn) -> bytes:
    path = "/" + "/".join(draw(st.lists(SEGMENTS, max_size=6)))
    raw = path.encode("utf-8", "surrogateescape")
    if draw(st.booleans()):
        raw += b"?" + draw(st.sampled_from([b"", b"a=1", b"name=x&fields=id", b"%zz=%ff",
                                            b"fixed_ips=ip_address%3D10.0.0.5",
                                            b"limit=-1", b"since=x&timeout=1e9",
                                            b"admin_state_up=maybe", b"device_id=" + SAFE_Q]))
    kind = draw(st.integers(0, 9))
    if kind == 0:
        return b"http://169.254.169.254" + raw
    if kind == 1:
        return draw(st.sampled_from([b"*", b"host:80", b"//", b"/\xff\xfe"]))
    if kind == 2:
        return raw + draw(SAFE).replace(b" ", b"")
    return raw

METHOD = st.one_of(st.sampled_from([b"GET"] * 6 + [b"HEAD", b"POST", b"PUT", b"DELETE",
                                                   b"OPTIONS", b"PATCH", b"FOO", b"CONNECT"]),
                   TOKEN_CHARS.map(lambda t: t.upper().encode()))


@st.composite
def request(draw: st.DrawFn, headers: list[tuple[bytes, bytes]], body: bytes | None) -> bytes:
    method = draw(METHOD)
    start = method + b" " + draw(target()) + b" HTTP/1.1\r\n"
    lines = [b"Host: 127.0.0.1"] if draw(st.integers(0, 19)) else []
    lines += [name + b": " + value for name, value in headers]
    if body is not None:
        lines.append(b"Content-Length: " + str(len(body)).encode())
    lines.append(b"Connection: close")
    return start + b"\r\n".join(lines) + b"\r\n\r\n" + (body or b"")


def identity_headers(ids: dict[str, Any]) -> st.SearchStrategy[list[tuple[bytes, bytes]]]:
    good = [(b"X-Instance-ID", INSTANCE.encode()), (b"X-Tenant-ID", ids["project"].encode()),
            (b"X-Instance-ID-Signature", sign_instance_id(SECRET, INSTANCE).encode())]
    provider = [(b"X-Metadata-Provider", ids["network"].encode()),
                (b"X-Metadata-Provider-Signature",
                 sign_instance_id(SECRET, ids["network"]).encode())]
    names = st.sampled_from([b"X-Instance-ID", b"X-Tenant-ID", b"X-Instance-ID-Signature",
                             b"X-Metadata-Provider", b"X-Metadata-Provider-Signature",
                             b"X-Forwarded-For", b"Accept", b"X-Auth-Token", b"Content-Type",
                             b"Expect", b"X-B\xe9d"])
    values = st.one_of(SAFE, st.sampled_from([b"10.0.0.5", b"10.0.0.5, 127.0.0.1", b"::1",
                                              b"text/html;q=0.5, application/json",
                                              b"100-continue", b"\xe9\xff"]))
    extra = st.lists(st.tuples(names, values), max_size=4)
    base = st.sampled_from([good, provider, good + provider, []])
    return st.tuples(base, extra).map(lambda t: [*t[0], *t[1]])


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=3),
    max_leaves=8)
FIELDS = st.sampled_from(["name", "network_id", "cidr", "ip_version", "fixed_ips", "device_id",
                          "device_owner", "mac_address", "tenant_id", "gateway_ip",
                          "allocation_pools", "host_routes", "dns_nameservers", "networks",
                          "user_data", "key_name", "metadata", "public_key", "subnet_id",
                          "port_id", "admin_state_up", "shared", "mtu", "enable_dhcp"])


@st.composite
def control_body(draw: st.DrawFn) -> bytes | None:
    kind = draw(st.integers(0, 4))
    if kind == 0:
        return None
    if kind == 1:
        return draw(st.binary(max_size=60))
    resource = draw(st.sampled_from(["network", "subnet", "port", "router", "server",
                                     "keypair", "auth"]))
    doc = {resource: draw(st.dictionaries(FIELDS, JSON, max_size=4))}
    return json.dumps(doc).encode()


def _send(world: dict[str, Any], server: str, req: bytes) -> None:
    """One exchange; it must be answered below 500 and log nothing at ERROR or with a trace."""
    world["log"].bad.clear()
    line = exchange(world["ports"][server], req)
    assert line, f"no answer to {req[:300]!r}"
    assert status_of(line) < 500, (line, req[:300])
    assert not world["log"].bad, (world["log"].bad, req[:300])


# ---- the tests ----------------------------------------------------------------------------


@FUZZ
@given(data=st.data())
def test_fuzz_metadata_api(world: dict[str, Any], data: st.DataObject) -> None:
    headers = data.draw(identity_headers(world["ids"]))
    body = data.draw(st.none() | st.binary(max_size=1200))
    req = data.draw(request(headers, body))
    _send(world, data.draw(st.sampled_from(["proxy", "direct"])), req)


@FUZZ
@given(data=st.data())
def test_fuzz_control_api(world: dict[str, Any], data: st.DataObject) -> None:
    token = data.draw(st.sampled_from([world["token"].encode(), b"t\xe9st", b"", b"x" * 5000]))
    headers = [(b"X-Auth-Token", token)] if token else []
    headers += data.draw(st.lists(st.tuples(st.sampled_from(
        [b"Content-Type", b"Accept", b"X-Forwarded-For", b"OpenStack-API-Version"]), SAFE),
        max_size=2))
    req = data.draw(request(headers, data.draw(control_body())))
    _send(world, "control", req)
