"""Runs the agent worker for real on a unix socket in a tmp dir, against a loopback upstream."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from aiohttp import web

from openimds.agent.feed import InventoryFeed
from openimds.agent.server import bind_unix_socket, run_worker
from openimds.agent.settings import AgentSettings

from .fakes import metadata_stub


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class StubUpstream:
    """The metadata API stand-in on 127.0.0.1:<port>; can be stopped and started again."""

    def __init__(self, secret: str, port: int | None = None) -> None:
        self.secret = secret
        self.port = port or free_port()
        self.runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self.runner = web.AppRunner(metadata_stub(self.secret), access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes


class RunningAgent:
    def __init__(self, settings: AgentSettings, feed: InventoryFeed) -> None:
        self.settings = settings
        self.feed = feed
        self.stop = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> RunningAgent:
        sock = bind_unix_socket(self.settings)
        self.task = asyncio.create_task(run_worker(sock, self.settings, self.feed, self.stop))
        self.session = aiohttp.ClientSession(
            connector=aiohttp.UnixConnector(path=self.settings.socket_path),
            auto_decompress=False)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.session is not None and self.task is not None
        await self.session.close()
        self.stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(self.task, 10)

    async def request(self, path: str = "/latest/meta-data/instance-id", *,
                      xff: Sequence[str] = (), network: Sequence[str] = (),
                      router: Sequence[str] = (), method: str = "GET", body: bytes = b"",
                      extra: Sequence[tuple[str, str]] = ()) -> Reply:
        assert self.session is not None
        headers = [*(("X-Forwarded-For", v) for v in xff),
                   *(("X-Neutron-Network-ID", v) for v in network),
                   *(("X-Neutron-Router-ID", v) for v in router), *extra]
        async with self.session.request(method, f"http://agent{path}", data=body or None,
                                        headers=headers) as resp:
            return Reply(resp.status, dict(resp.headers), await resp.read())

    async def wait_ready(self, timeout: float = 5.0) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while asyncio.get_running_loop().time() < deadline:
            if (await self.request("/healthz")).status == 200:
                return
            await asyncio.sleep(0.02)
        raise AssertionError("agent never became ready")


def settings_for(tmp: Path, upstream_urls: Sequence[str], secret: str) -> AgentSettings:
    return AgentSettings(socket_path=str(tmp / "metadata_proxy"), shared_secret=secret,
                         upstream_urls=tuple(upstream_urls), upstream_timeout=1.0,
                         upstream_connect_timeout=0.5)
