"""Crashed children come back at once (issue 16, defect 7): a kill -9 of the haproxy or the
dnsmasq of a network, while a guest polls it, is repaired by the DHCP agent through its pidfd
watch, not by the periodic resync (set to an hour here so only the watch can do it). The agent
that repairs is a *second* agent that adopted both processes from the first one.

The guest's outage is printed; the figure against a budget lives in bench/bench_child_restart.py.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest

from openimds.dhcp.agent import DhcpAgent
from openimds.linux.dnsmasq import find_dnsmasq
from openimds.linux.pidwatch import CrashBackoff
from openimds.proxy import HaproxySupervisor
from openimds.reconcile import MemoryInventory
from tests.dhcp.test_agent_netns import Running, make_agent
from tests.fabric import inventory as inv_rows
from tests.fabric.lab import Lab, lab, sh  # noqa: F401 - fixture
from tests.fabric.outage import GuestPoller

pytestmark = pytest.mark.root

NO_RESYNC = 3600.0


def _agent(lab: Lab, inv: MemoryInventory) -> DhcpAgent:  # noqa: F811
    agent = make_agent(lab, inv)
    agent.resync_interval = NO_RESYNC
    return agent


def _network(lab: Lab, inv: MemoryInventory) -> tuple[str, dict[str, object], int]:  # noqa: F811
    net, sub = lab.new_id(), lab.new_id()
    vm_port = inv_rows.port(lab.new_id(), net, sub, "10.19.0.5", "compute:nova", "vm-1")
    inv.put("network", inv_rows.network(net, [sub]))
    inv.put("subnet", inv_rows.subnet(sub, net, "10.19.0.0/24", "10.19.0.1",
                                      dns_nameservers=[]))
    inv.put("port", inv_rows.port(lab.new_id(), net, sub, "10.19.0.2", "network:dhcp",
                                  f"dhcp-{net}"))
    rev = inv.put("port", vm_port)
    return net, vm_port, rev


async def _recovered(poller: GuestPoller, t_kill: float, what: str) -> float:
    gap, failed = await asyncio.to_thread(poller.wait_success_after, t_kill, 10.0)
    print(f"\n{what}: guest outage {gap * 1000:.0f} ms, {failed} failed attempts")
    return gap


async def test_killed_haproxy_and_dnsmasq_are_restarted_by_an_adopting_agent(
    lab: Lab,  # noqa: F811
) -> None:
    inv = MemoryInventory()
    net, vm_port, rev = _network(lab, inv)
    lab.echo_agent()
    conf_dir = os.path.join(lab.state, "dhcp", net)
    pidfile = os.path.join(conf_dir, "pid")
    sup = HaproxySupervisor(lab.state)

    async with Running(_agent(lab, inv)) as first:
        await first.wait_synced(rev, timeout=30)
        pids = (sup.pid(net), find_dnsmasq(pidfile))
    assert pids[0] is not None and pids[1] is not None

    guest = await asyncio.to_thread(
        lab.guest, net, vm_port, addresses=("10.19.0.5/24",), gateway="10.19.0.1"
    )
    sh("ip", "route", "replace", "169.254.169.254/32", "via", "10.19.0.2", netns=guest)
    http = GuestPoller(guest, "http", "http://169.254.169.254/latest/meta-data/")
    dns = GuestPoller(guest, "dns", "10.19.0.2", "host-10-19-0-5.openstacklocal")
    try:
        second = _agent(lab, inv)
        async with Running(second):
            await second.wait_synced(inv.revision, timeout=30)
            # Adopted, not restarted: the same processes, now watched by the second agent.
            assert sup.pid(net) == pids[0]
            found = find_dnsmasq(pidfile)
            assert found is not None and found.pid == pids[1].pid
            await asyncio.to_thread(http.wait_success_after, time.monotonic() - 60, 10.0)
            await asyncio.to_thread(dns.wait_success_after, time.monotonic() - 60, 10.0)

            t_kill = time.monotonic()
            os.kill(pids[0], signal.SIGKILL)
            await _recovered(http, t_kill, "haproxy kill -9")
            new_proxy = sup.pid(net)
            assert new_proxy is not None and new_proxy != pids[0]

            # Let the repair pass finish (its exit would otherwise count as one of ours).
            await second.wait_synced(inv.revision)
            t_kill = time.monotonic()
            os.kill(pids[1].pid, signal.SIGKILL)
            await _recovered(dns, t_kill, "dnsmasq kill -9")
            found = find_dnsmasq(pidfile)
            assert found is not None and found.pid != pids[1].pid
            assert second.counters.child_exits[net] == 2
            # A fresh lease still works from the new dnsmasq.
            routes = await asyncio.to_thread(lab.dhcp, guest)
            assert "169.254.169.254 via 10.19.0.2 dev eth0" in routes, routes
    finally:
        http.stop()
        dns.stop()


@pytest.mark.parametrize(
    ("crash_times", "delays"),
    [
        ([0.0], [0.0]),  # a lone crash: restart at once
        ([0.0, 100.0], [0.0, 0.0]),  # crashes far apart: each restarted at once
        ([0.0, 1.0, 2.0, 3.0, 4.0], [0.0, 0.25, 0.5, 1.0, 2.0]),  # a crash loop backs off
        ([0.0, *[float(i) for i in range(1, 12)]], [0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0,
                                                     16.0, 30.0, 30.0, 30.0, 30.0]),
        ([0.0, 1.0, 2.0, 40.0], [0.0, 0.25, 0.5, 0.0]),  # calm again: back to immediate
    ],
)
def test_crash_backoff(crash_times: list[float], delays: list[float]) -> None:
    b = CrashBackoff()
    assert [b.record("k", t) for t in crash_times] == delays
    assert b.record("other", crash_times[-1]) == 0.0  # per key
