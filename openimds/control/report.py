"""Agents' state reports: register under `[DEFAULT] host`, then heartbeat every
`[AGENT] report_interval` seconds (`POST /v2.0/agents`, see control/agents.py).

`report_state_loop` runs as a task beside an agent's reconcile loop (DHCP, L3, L2 agents);
`ReportThread` runs it on its own loop and client for processes whose loop belongs to
someone else (the metadata agent's forked workers). A failed report is logged in one line and
retried at the next interval: the agent keeps working, and the server marks it dead after
`agent_down_time` if reports keep failing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from openimds.control.client import ApiConnectionError, ApiError

LOG = logging.getLogger("openimds.report")


@dataclass(frozen=True)
class AgentReport:
    agent_type: str  # one of scheduling.AGENT_KINDS
    host: str
    # Called at each report, so counters (networks, routers, devices) stay current.
    configurations: Callable[[], Mapping[str, Any]] = field(default=lambda: {})
    availability_zone: str | None = None

    def body(self, start_flag: bool) -> dict[str, Any]:
        out: dict[str, Any] = {"agent_type": self.agent_type, "host": self.host,
                               "configurations": dict(self.configurations()),
                               "start_flag": start_flag}
        if self.availability_zone:
            out["availability_zone"] = self.availability_zone
        return out


async def report_once(client: Any, report: AgentReport, *, start_flag: bool) -> bool:
    try:
        await client.create("agents", report.body(start_flag))
    except (ApiError, ApiConnectionError) as exc:
        LOG.warning("%s on %s: state report failed (%s); retrying at the next interval",
                    report.agent_type, report.host, exc)
        return False
    return True


async def report_state_loop(client: Any, report: AgentReport, interval: float, *,
                            log_heartbeats: bool = False) -> None:
    """Report until cancelled. interval <= 0 turns reporting off, as in Neutron."""
    if interval <= 0:
        return
    started = False
    while True:
        ok = await report_once(client, report, start_flag=not started)
        started = started or ok
        if ok and log_heartbeats:
            LOG.info("%s on %s: state reported", report.agent_type, report.host)
        await asyncio.sleep(interval)


class ReportThread:
    """`report_state_loop` on a private loop and client (made by `client_factory` inside it)."""

    def __init__(self, client_factory: Callable[[], Any], report: AgentReport,
                 interval: float, *, log_heartbeats: bool = False) -> None:
        self._factory = client_factory
        self._report = report
        self._interval = interval
        self._log = log_heartbeats
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, name="agent-report", daemon=True)

    def start(self) -> None:
        if self._interval > 0:
            self._thread.start()
            self._ready.wait(5)

    def _main(self) -> None:
        asyncio.run(self._amain())

    async def _amain(self) -> None:
        self._loop = asyncio.get_running_loop()
        client = self._factory()
        self._task = asyncio.current_task()
        self._ready.set()
        try:
            await report_state_loop(client, self._report, self._interval,
                                    log_heartbeats=self._log)
        except asyncio.CancelledError:
            pass
        finally:
            with contextlib.suppress(Exception):
                await client.close()

    def stop(self) -> None:
        loop, task = self._loop, self._task
        if loop is not None and task is not None and self._thread.is_alive():
            loop.call_soon_threadsafe(task.cancel)
            self._thread.join(5)
