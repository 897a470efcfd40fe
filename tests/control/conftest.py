"""Fixtures for the control-plane API: a fresh SQLite inventory per test, users in three
projects, and an aiohttp TestClient (loopback) over the real app."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from openimds.control import auth
from openimds.control.app import build_app
from openimds.control.call import Settings
from openimds.inventory.migrate import open_store
from openimds.inventory.store import Store
from tests.support.sqlite_outage import SqliteOutage

PASSWORD = "s3cret-pw"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    # In a directory of its own, so tests/control/test_outage.py can take it away atomically.
    st = open_store(SqliteOutage(tmp_path).url)
    try:
        yield st
    finally:
        st.dispose()


@pytest.fixture
def users(store: Store) -> dict[str, str]:
    """admin (project admin), alice (project a, member), bob (project b, member),
    neutron (project service, role service)."""
    auth.bootstrap(store, PASSWORD)
    for project in ("a", "b", "service"):
        auth.create_project(store, project)
    auth.create_user(store, "alice", PASSWORD, "a")
    auth.create_user(store, "bob", PASSWORD, "b")
    auth.create_user(store, "neutron", PASSWORD, "service", "service")
    return {"admin": "admin", "alice": "a", "bob": "b", "neutron": "service"}


@dataclass
class Api:
    """A TestClient plus a token per user; `call(user, method, path, json=...)` -> (status,
    body)."""

    client: TestClient[Any, Any]
    tokens: dict[str, str] = field(default_factory=dict)

    async def login(self, user: str, project: str) -> str:
        resp = await self.client.post("/v3/auth/tokens", json=v3_body(user, PASSWORD, project))
        assert resp.status == 201, await resp.text()
        self.tokens[user] = resp.headers["X-Subject-Token"]
        return self.tokens[user]

    async def call(self, user: str | None, method: str, path: str, json: Any = None,
                   params: Any = None) -> tuple[int, Any]:
        headers = {"X-Auth-Token": self.tokens[user]} if user else {}
        resp = await self.client.request(method, path, json=json, params=params,
                                         headers=headers)
        text = await resp.text()
        import json as _json

        return resp.status, (_json.loads(text) if text else None)

    async def ok(self, user: str, method: str, path: str, json: Any = None,
                 params: Any = None, status: int | None = None) -> Any:
        got, body = await self.call(user, method, path, json, params)
        expected = status or {"POST": 201, "DELETE": 204}.get(method, 200)
        assert got == expected, (got, body)
        return body


def v3_body(user: str, password: str, project: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {"auth": {"identity": {"methods": ["password"], "password": {
        "user": {"name": user, "password": password, "domain": {"name": "Default"}}}}}}
    if project is not None:
        body["auth"]["scope"] = {"project": {"name": project, "domain": {"name": "Default"}}}
    return body


@pytest.fixture
def settings() -> Settings:
    return Settings()


@pytest.fixture
async def api(store: Store, users: dict[str, str], settings: Settings) -> AsyncIterator[Api]:
    client: TestClient[Any, Any] = TestClient(TestServer(build_app(store, settings),
                                                         host="127.0.0.1"))
    await client.start_server()
    try:
        harness = Api(client)
        for user, project in users.items():
            await harness.login(user, project)
        yield harness
    finally:
        await client.close()


async def make_network(api: Api, user: str, name: str, cidr: str | None = None,
                       **subnet: Any) -> tuple[dict[str, Any], dict[str, Any] | None]:
    net = (await api.ok(user, "POST", "/v2.0/networks", {"network": {"name": name}}))["network"]
    sub = None
    if cidr:
        sub = (await api.ok(user, "POST", "/v2.0/subnets", {"subnet": {
            "network_id": net["id"], "cidr": cidr, "ip_version": 4, "name": name,
            **subnet}}))["subnet"]
    return net, sub
