"""The database goes away under a serving metadata API (issue 16, defect 5).

The API must keep serving every document it has cached (including an instance that just set
its password), answer 503 with Retry-After for what needs the database, never 500, and log the
outage as one WARNING when it starts and one when it ends, with no traceback. Run against a
PostgreSQL server of the test's own that is really stopped and started again, and against
SQLite whose file really disappears.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy import select

from openimds.inventory.migrate import open_store
from openimds.inventory.models import FixedIP, Instance, Port
from openimds.inventory.store import Store
from openimds.metadata.identify import IdentifySettings
from openimds.metadata.respond import Responder, RespondSettings
from openimds.metadata.store_source import StoreSource
from tests.metadata.fixtures import SECRET
from tests.metadata.helpers import call, signed_headers
from tests.metadata.servers import start_metadata
from tests.metadata.test_store_source import INSTANCE, seed
from tests.pg_private import PrivatePostgres
from tests.support.sqlite_outage import SqliteOutage

OTHER = "0d7c5d2e-0f3e-4b8e-9c62-3c0a6a7f1b10"


def seed_other(store: Store, ids: dict[str, Any]) -> None:
    with store.session() as s:
        s.add(Instance(uuid=OTHER, name="db-1", hostname="db-1", project_id=ids["project"],
                       user_id=ids["user"], reservation_id="r-00000002"))
        s.add(Port(network_id=ids["network"], project_id=ids["project"],
                   mac_address="fa:16:3e:00:00:06", device_id=OTHER, device_owner="compute:nova",
                   fixed_ips=[FixedIP(subnet_id=ids["subnet"], ip_address="10.0.0.6")]))


class Served:
    def __init__(self, store: Store, source: StoreSource, base: str,
                 session: aiohttp.ClientSession, project: str) -> None:
        self.store, self.source, self.base, self.session = store, source, base, session
        self.project = project

    async def get(self, uuid: str, path: str, method: str = "GET", body: bytes = b""
                  ) -> tuple[int, dict[str, str], bytes]:
        headers = dict(signed_headers(uuid, self.project, SECRET))
        async with self.session.request(method, self.base + path, headers=headers,
                                        data=body or None) as resp:
            return resp.status, dict(resp.headers), await resp.read()


async def _serve(store: Store, kind: str) -> AsyncIterator[Served]:
    ids = seed(store)
    seed_other(store, ids)
    source = StoreSource(store, feed_timeout=0.5)
    await source.start()
    responder = Responder(source, RespondSettings(identify=IdentifySettings(True, SECRET)))
    port, stop = await start_metadata(kind, responder)
    session = aiohttp.ClientSession()
    try:
        yield Served(store, source, f"http://127.0.0.1:{port}", session, ids["project"])
    finally:
        await session.close()
        await stop()
        await source.stop()
        store.dispose()


async def _until(predicate: Callable[[], Any], timeout: float = 30.0) -> None:
    """Wait for `predicate()` (a bool, or an awaitable of one) to hold."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        ok = predicate()
        if inspect.isawaitable(ok):
            ok = await ok
        if ok:
            return
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


def _count_feed_reads(store: Store) -> list[int]:
    """Count the feed's failed reads (observation only: the real read still runs)."""
    failures = [0]
    real = store._fetch_since

    def counting(revision: int, limit: int) -> Any:
        try:
            return real(revision, limit)
        except Exception:
            failures[0] += 1
            raise

    store._fetch_since = counting  # type: ignore[method-assign]
    return failures


async def _outage_scenario(served: Served, go_down: Callable[[], None],
                           come_back: Callable[[], None],
                           caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    paths = ("/openstack/latest/meta_data.json", "/openstack/latest/network_data.json",
             "/latest/meta-data/hostname", "/latest/user-data")
    for path in paths:
        assert (await served.get(INSTANCE, path))[0] == 200
    # The password POST drops nothing the guest needs: its next GETs are answered from memory.
    assert (await served.get(INSTANCE, "/openstack/latest/password", "POST", b"pw-1"))[0] == 200
    await served.source.wait_for_revision(served.store.current_revision())
    assert (await served.get(INSTANCE, "/openstack/latest/password"))[2] == b"pw-1"
    failed_reads = _count_feed_reads(served.store)
    caplog.clear()

    go_down()
    # Several feed retries happen during the outage, and still one WARNING only.
    await _until(lambda: failed_reads[0] >= 3)
    for _ in range(5):
        for path in (*paths, "/openstack/latest/password"):
            status, _, body = await served.get(INSTANCE, path)
            assert status == 200, (path, body)
        status, headers, _ = await served.get(OTHER, "/latest/meta-data/hostname")
        assert status == 503 and headers["Retry-After"].isdigit()
        # A write that cannot be made is refused, never acknowledged and lost.
        status, headers, _ = await served.get(OTHER, "/openstack/latest/password", "POST", b"x")
        assert status == 503 and "Retry-After" in headers
    # Already set (known from the cached view): refused as before, without the database.
    assert (await served.get(INSTANCE, "/openstack/latest/password", "POST", b"pw-2"))[0] == 409
    down_records = list(caplog.records)

    come_back()
    await _until(lambda: _status_is(served, OTHER, 200))
    # The feed resumed: a change committed now is served once its revision is applied.
    with served.store.session() as s:
        s.scalar(select(Instance).where(Instance.uuid == INSTANCE)).hostname = "after"
    await served.source.wait_for_revision(served.store.current_revision(), timeout=30)
    assert (await served.get(INSTANCE, "/latest/meta-data/hostname"))[2] == b"after.novalocal"
    assert (await served.get(OTHER, "/openstack/latest/password"))[2] == b""

    for record in caplog.records:
        assert record.exc_info is None, record.getMessage()
        assert record.levelno < logging.ERROR, record.getMessage()
    source_warnings = [r.getMessage() for r in caplog.records
                       if r.levelno == logging.WARNING and r.name.endswith("store_source")]
    assert len(source_warnings) == 2, source_warnings
    assert "unavailable" in source_warnings[0] and "available again" in source_warnings[1]
    assert [r for r in down_records if r.levelno >= logging.WARNING
            and r.name.endswith("store_source")], "the outage was not logged"
    # Any other component (the PostgreSQL listener) also logs once per change at most.
    others = [r.getMessage() for r in caplog.records
              if r.levelno >= logging.WARNING and not r.name.endswith("store_source")]
    assert len(others) == len(set(others)) and len(others) <= 2, others


async def _status_is(served: Served, uuid: str, status: int) -> bool:
    return (await served.get(uuid, "/latest/meta-data/hostname"))[0] == status


@pytest.fixture
def private_pg(needs_root: None) -> Iterator[PrivatePostgres]:
    server = PrivatePostgres()
    try:
        yield server
    finally:
        server.close()


@pytest.mark.postgres
async def test_postgresql_stopped_and_started_again(private_pg: PrivatePostgres,
                                                    caplog: pytest.LogCaptureFixture,
                                                    http_server: str) -> None:
    async for served in _serve(open_store(private_pg.url), http_server):
        await _outage_scenario(served, private_pg.stop, private_pg.start, caplog)


async def test_sqlite_file_gone_and_back(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                         http_server: str) -> None:
    outage = SqliteOutage(tmp_path)
    store = open_store(outage.url)

    def go_down() -> None:
        outage.down(store)

    def come_back() -> None:
        outage.up()

    async for served in _serve(store, http_server):
        await _outage_scenario(served, go_down, come_back, caplog)


async def test_started_while_the_database_is_away(tmp_path: Path,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    """The API starts anyway: 503 (not ready) until the database answers, then serves."""
    outage = SqliteOutage(tmp_path)
    store = open_store(outage.url)
    ids = seed(store)
    store.dispose()
    # Made before the outage: a new Store creates its SQLite file's directory.
    store = Store(outage.url)
    outage.down()
    source = StoreSource(store, feed_timeout=0.5)
    await source.start()
    try:
        assert not source.ready()
        responder = Responder(source, RespondSettings(identify=IdentifySettings(True, SECRET)))
        req_headers = signed_headers(INSTANCE, ids["project"], SECRET)
        resp = await call(responder, "/latest/meta-data/hostname", headers=req_headers)
        assert resp.status == 503 and resp.retry_after
        outage.up()
        await source.wait_for_revision(0, timeout=30)
        assert source.ready()
        resp = await call(responder, "/latest/meta-data/hostname", headers=req_headers)
        assert resp.status == 200
    finally:
        await source.stop()
        store.dispose()
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
