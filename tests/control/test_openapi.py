"""The OpenAPI document: complete, and the API fuzzed from it (schemathesis) never answers 5xx.

The fuzz target is a real server on a loopback port (its own event loop in a thread), with an
admin token, so generated requests reach the operations and not only the 401 edge."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from aiohttp import web
from hypothesis import HealthCheck, settings

from openimds.control import auth
from openimds.control.app import ROUTES, build_app
from openimds.control.call import Call, Settings
from openimds.control.context import RequestContext
from openimds.control.networks import create_network
from openimds.control.openapi import openapi_document
from openimds.control.subnets import create_subnet
from openimds.inventory.migrate import open_store

DOCUMENT = openapi_document(ROUTES)
schema = schemathesis.openapi.from_dict(DOCUMENT)


def test_every_route_is_documented_with_its_body_schema() -> None:
    for route in ROUTES:
        op = DOCUMENT["paths"][route.path][route.method.lower()]
        assert op["summary"] == route.summary
        if route.body:
            ref = op["requestBody"]["content"]["application/json"]["schema"]["$ref"]
            assert ref.rsplit("/", 1)[1] in DOCUMENT["components"]["schemas"]
        assert "401" in op["responses"]
    assert DOCUMENT["openapi"].startswith("3.")


async def test_openapi_is_served_without_a_token(api: Any) -> None:
    resp = await api.client.get("/openapi.json")
    assert resp.status == 200
    assert set((await resp.json())["paths"]) == {r.path for r in ROUTES}


class LiveServer:
    def __init__(self, tmp: Path) -> None:
        self.store = open_store(f"sqlite:///{tmp / 'fuzz.sqlite'}")
        pid, uid = auth.bootstrap(self.store, "fuzz-pw")
        ctx = RequestContext(uid, "admin", pid, "admin", ("admin",))
        # Something to find, so show/update/delete paths meet real rows too.
        net = create_network(Call(self.store, Settings(), ctx, body={"network": {
            "name": "fuzz"}})).body["network"]
        create_subnet(Call(self.store, Settings(), ctx, body={"subnet": {
            "network_id": net["id"], "cidr": "10.0.0.0/24"}}))
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.port = 0
        self.runner: web.AppRunner | None = None
        self._token = ""

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)

        async def start() -> None:
            self.runner = web.AppRunner(build_app(self.store, Settings()))
            await self.runner.setup()
            site = web.TCPSite(self.runner, "127.0.0.1", 0)
            await site.start()
            self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            self.ready.set()

        self.loop.run_until_complete(start())
        self.loop.run_forever()

    def start(self) -> None:
        self.thread.start()
        assert self.ready.wait(10)

    def stop(self) -> None:
        assert self.runner is not None
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.store.dispose()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def token(self) -> str:
        # One token for the whole run: issuing runs the (deliberately slow) password KDF.
        if not self._token:
            self._token = auth.issue_token(self.store, "admin", "fuzz-pw",
                                           project_name="admin").token
        return self._token


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    server = LiveServer(tmp_path_factory.mktemp("fuzz"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@schema.parametrize()
@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.filter_too_much])
def test_fuzzed_requests_never_get_a_5xx(case: Any, live: LiveServer) -> None:
    headers = {"X-Auth-Token": live.token()} if case.operation.definition.raw.get(
        "security", None) != [] else {}
    # The long-poll would make every example wait; the fuzzer still varies since/limit.
    if case.path == "/v2.0/changes":
        case.query = {**(case.query or {}), "timeout": "0"}
    response = case.call(base_url=live.url, headers=headers, timeout=30)
    assert response.status_code < 500, (case.as_curl_command(), response.text)
    if response.status_code >= 400 and case.method.upper() != "HEAD":  # HEAD has no body
        body = json.loads(response.text)  # errors are JSON bodies, never tracebacks
        assert "Traceback" not in response.text and body
