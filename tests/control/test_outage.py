"""The control API with its database gone: 503 with Retry-After, no traceback (issue 16)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from openimds.inventory.store import Store
from tests.support.sqlite_outage import SqliteOutage

from .conftest import Api


async def test_database_gone_is_503_with_retry_after(api: Api, store: Store,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    await api.ok("alice", "GET", "/v2.0/networks")
    outage = SqliteOutage(Path(store.url.removeprefix("sqlite:///")).parent.parent)
    assert outage.url == store.url, "the store fixture keeps its database in live/"
    outage.down(store)
    try:
        for method, path, body in (("GET", "/v2.0/networks", None),
                                   ("POST", "/v2.0/networks", {"network": {"name": "n"}})):
            resp = await api.client.request(method, path, json=body,
                                            headers={"X-Auth-Token": api.tokens["alice"]})
            assert resp.status == 503, await resp.text()
            assert resp.headers["Retry-After"].isdigit()
            assert (await resp.json())["NeutronError"]["type"] == "HTTPServiceUnavailable"
    finally:
        outage.up()
    await api.ok("alice", "GET", "/v2.0/networks")
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
