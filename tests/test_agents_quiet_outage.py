"""Agents start before the control plane and live through its restart quietly (issue 16, 8).

A real control-plane API on a loopback port comes up only after the agents started, then is
stopped and started again. Both kinds of feed consumer are run against it through the real
client: the metadata agent's `IndexSync` (ControlFeed) and the DHCP/L3 agents' reconcile loop
(`ControlInventory`). Each must log one line when the inventory goes away and one when it is
back, never a traceback, and pick up changes made after the restart.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from openimds.agent.control_feed import ControlFeed
from openimds.agent.feed import Backoff, IndexSync
from openimds.agent.index import PortIndex
from openimds.control import auth
from openimds.control.app import build_app
from openimds.control.client import control_client
from openimds.inventory.migrate import open_store
from openimds.inventory.models import Network, Project
from openimds.inventory.store import Store
from openimds.reconcile import ControlInventory, InventoryAgent, Snapshot

PASSWORD = "quiet-pw"


class NetworksAgent(InventoryAgent):
    """The reconcile loop with nothing to apply: it only records which networks it saw."""

    name = "quiet-test-agent"

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.seen: set[str] = set()

    def keys(self, snap: Snapshot) -> set[str]:
        return snap.ids("networks")

    def owners(self, snap: Snapshot) -> dict[tuple[str, str], set[str]]:
        return {("network", n["id"]): {n["id"]} for n in snap.networks}

    def orphan_keys(self) -> set[str]:
        return set()

    def reconcile_key(self, key: str, snap: Snapshot, now: datetime,
                      log: logging.LoggerAdapter[Any]) -> datetime | None:
        self.seen.add(key)
        return None


class ControlApi:
    """The real control-plane app on a fixed port, which the test starts and stops."""

    def __init__(self, store: Store) -> None:
        self.store = store
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.runner: web.AppRunner | None = None

    async def start(self) -> None:
        self.runner = web.AppRunner(build_app(self.store), access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        assert self.runner is not None
        await self.runner.cleanup()
        self.runner = None


@pytest.fixture
async def control(tmp_path: Path) -> AsyncIterator[ControlApi]:
    store = open_store(f"sqlite:///{tmp_path / 'inventory.sqlite'}")
    auth.bootstrap(store, PASSWORD)
    api = ControlApi(store)
    try:
        yield api
    finally:
        if api.runner is not None:
            await api.stop()
        store.dispose()


def add_network(store: Store, name: str) -> str:
    with store.session() as s:
        project = s.query(Project).filter_by(name="admin").one()
        net = Network(project_id=project.id, name=name)
        s.add(net)
        s.flush()
        return str(net.id)


async def until(predicate: Callable[[], bool], timeout: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_agents_start_before_and_survive_a_restart_of_the_control_plane(
        control: ControlApi, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    url = f"http://127.0.0.1:{control.port}/v2.0"
    first = add_network(control.store, "first")

    feed = ControlFeed(control_client(url, "admin", PASSWORD, "admin"))
    index = PortIndex()
    sync = IndexSync(feed, index, poll_timeout=0.5, backoff=Backoff(initial=0.05, maximum=0.2))
    client = control_client(url, "admin", PASSWORD, "admin")
    agent = NetworksAgent(ControlInventory(client), watch_timeout=0.5, resync_interval=0.5)
    tasks = [asyncio.create_task(sync.run()), asyncio.create_task(agent.run())]
    try:
        def agent_logged() -> int:
            return sum(r.name == "openimds.quiet-test-agent" for r in caplog.records)

        # Both retry against nothing: one line each, however many attempts.
        await until(lambda: agent_logged() >= 1 and not sync.ready.is_set())
        await control.start()
        await until(lambda: sync.ready.is_set() and first in agent.seen)

        logged = agent_logged()
        await control.stop()
        await until(lambda: agent_logged() > logged and not sync.connected)
        await control.start()
        second = add_network(control.store, "second")
        await until(lambda: second in agent.seen and sync.connected)
    finally:
        agent.stop()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await feed.aclose()
        await client.close()

    for record in caplog.records:
        assert record.exc_info is None, record.getMessage()
        assert record.levelno < logging.ERROR, record.getMessage()
    agent_lines = [r.getMessage() for r in caplog.records
                   if r.name == "openimds.quiet-test-agent" and r.levelno >= logging.WARNING]
    assert len(agent_lines) == 4, agent_lines
    assert ["unavailable" in line for line in agent_lines] == [True, False, True, False]
    sync_lines = [r.getMessage() for r in caplog.records
                  if r.name.startswith("openimds.agent") and r.levelno >= logging.WARNING]
    assert len(sync_lines) == 2, sync_lines
