"""The L3 agent's router proxy comes back at once after kill -9 (issue 16, defect 7): the
pidfd watch, not the resync (an hour here), restarts it while a routed guest polls through the
REDIRECT; the outage is printed."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest

from openimds.proxy import HaproxySupervisor
from openimds.reconcile import MemoryInventory
from tests.fabric import inventory as rows
from tests.fabric.lab import Lab, lab  # noqa: F401 - fixture
from tests.fabric.outage import GuestPoller
from tests.l3.test_agent_netns import Running, make_agent

pytestmark = pytest.mark.root


async def test_killed_router_proxy_is_restarted_by_the_watch(lab: Lab) -> None:  # noqa: F811
    inv = MemoryInventory()
    rid, net, sub = lab.new_id(), lab.new_id(), lab.new_id()
    inv.put("network", rows.network(net, [sub]))
    inv.put("subnet", rows.subnet(sub, net, "10.18.0.0/24", "10.18.0.1"))
    inv.put("router", rows.router(rid))
    inv.put("port", rows.port(lab.new_id(), net, sub, "10.18.0.1", "network:router_interface",
                              rid))
    vm = rows.port(lab.new_id(), net, sub, "10.18.0.5", "compute:nova", "vm")
    rev = inv.put("port", vm)
    lab.echo_agent()
    sup = HaproxySupervisor(lab.state)
    agent = make_agent(lab, inv)
    agent.resync_interval = 3600.0
    async with Running(agent):
        await agent.wait_synced(rev, timeout=30)
        guest = await asyncio.to_thread(
            lambda: lab.guest(net, vm, addresses=("10.18.0.5/24",), gateway="10.18.0.1"))
        poller = GuestPoller(guest, "http", "http://169.254.169.254/latest/meta-data/")
        try:
            await asyncio.to_thread(poller.wait_success_after, time.monotonic() - 60, 10.0)
            old = sup.pid(rid)
            assert old is not None
            t_kill = time.monotonic()
            os.kill(old, signal.SIGKILL)
            gap, failed = await asyncio.to_thread(poller.wait_success_after, t_kill, 10.0)
            print(f"\nrouter haproxy kill -9: guest outage {gap * 1000:.0f} ms, "
                  f"{failed} failed attempts")
            new = sup.pid(rid)
            assert new is not None and new != old
            assert agent.counters.child_exits[rid] == 1
        finally:
            poller.stop()
