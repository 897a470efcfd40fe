"""Benchmark (issue 16, defect 7): what a guest loses when haproxy or dnsmasq is killed -9.

Not a test. One isolated network run by a real DHCP agent (in-memory inventory, periodic resync
set to an hour so only the pidfd watch can repair), a guest namespace polling the metadata proxy
over HTTP and dnsmasq over DNS back to back (tests/fabric/guest_poller.py, 0.2 s per try). Each
round kills one process and records the guest's outage: from its last answer before the kill to
its first answer after.

Rounds are spaced by the agent's crash-loop window (`CrashBackoff.calm`, 10 s), so each is a
lone kill (a kill within 10 s of the previous crash is backed off on purpose: 0.25 s, 0.5 s, ...).

Reference, measured in the same run: the same kill repaired by calling the agent's reconcile
directly, at once, from this process (no detection delay, no queue: the floor any supervisor
could reach with this start-up path). The ratio watch/direct says what detection and queueing
add. Bar: every outage < 1 s.

    .venv/bin/python bench/bench_child_restart.py [--rounds 5]

Root only; everything it creates is removed at the end (tests/fabric/lab.py cleanup).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from openimds.dhcp.agent import DhcpAgent  # noqa: E402
from openimds.linux.dnsmasq import find_dnsmasq  # noqa: E402
from openimds.linux.fabric import ensure_fabric  # noqa: E402
from openimds.proxy import HaproxySupervisor  # noqa: E402
from openimds.reconcile import MemoryInventory  # noqa: E402
from tests.dhcp.test_agent_netns import make_agent  # noqa: E402
from tests.fabric import inventory as inv_rows  # noqa: E402
from tests.fabric.lab import Lab, sh, wait_for  # noqa: E402
from tests.fabric.outage import GuestPoller  # noqa: E402


def _pids(lab: Lab, net: str) -> dict[str, int] | None:
    found = find_dnsmasq(os.path.join(lab.state, "dhcp", net, "pid"))
    proxy = HaproxySupervisor(lab.state).pid(net)
    if found is None or proxy is None:
        return None
    return {"haproxy": proxy, "dnsmasq": found.pid}


async def _round(lab: Lab, net: str, agent: DhcpAgent, pollers: dict[str, GuestPoller],
                 what: str, *, direct: bool) -> tuple[float, int]:
    poller = pollers[what]
    await asyncio.to_thread(poller.wait_success_after, time.monotonic() - 60, 10.0)
    if not direct:
        # A kill within `calm` of the previous one counts as a crash loop and is backed off on
        # purpose; each round here measures a lone kill.
        await asyncio.sleep(agent.crash_backoff.calm + 0.5)
    pids = await asyncio.to_thread(wait_for, lambda: _pids(lab, net), 30.0)
    t_kill = time.monotonic()
    os.kill(pids[what], signal.SIGKILL)
    if direct:
        await agent.reconcile_once(net)
    gap, failed = await asyncio.to_thread(poller.wait_success_after, t_kill, 30.0)
    if not direct:
        await agent.wait_synced(0, timeout=30)
    return gap, failed


async def run(lab: Lab, rounds: int) -> dict[tuple[str, str], list[tuple[float, int]]]:
    inv = MemoryInventory()
    net, sub = lab.new_id(), lab.new_id()
    vm = inv_rows.port(lab.new_id(), net, sub, "10.59.0.5", "compute:nova", "vm")
    inv.put("network", inv_rows.network(net, [sub]))
    inv.put("subnet", inv_rows.subnet(sub, net, "10.59.0.0/24", "10.59.0.1"))
    inv.put("port", inv_rows.port(lab.new_id(), net, sub, "10.59.0.2", "network:dhcp",
                                  f"dhcp-{net}"))
    rev = inv.put("port", vm)
    lab.echo_agent()
    results: dict[tuple[str, str], list[tuple[float, int]]] = {}

    # Reference: an agent that is not running; we call its reconcile ourselves at the kill.
    ref = make_agent(lab, inv)
    await asyncio.to_thread(ref.prepare)
    await ref.full_sync()
    while not ref.queue.idle():
        key = await ref.queue.get()
        await ref.reconcile_once(key)
        ref.queue.done(key)
    guest = await asyncio.to_thread(lab.guest, net, vm, addresses=("10.59.0.5/24",))
    sh("ip", "route", "replace", "169.254.169.254/32", "via", "10.59.0.2", netns=guest)
    pollers = {
        "haproxy": GuestPoller(guest, "http", "http://169.254.169.254/latest/meta-data/"),
        "dnsmasq": GuestPoller(guest, "dns", "10.59.0.2", "host-10-59-0-5.openstacklocal"),
    }
    try:
        for what in ("haproxy", "dnsmasq"):
            for _ in range(rounds):
                results.setdefault((what, "direct"), []).append(
                    await _round(lab, net, ref, pollers, what, direct=True))
        agent = make_agent(lab, inv)
        agent.resync_interval = 3600.0
        task = asyncio.create_task(agent.run())
        try:
            await agent.wait_synced(rev, timeout=30)
            for what in ("haproxy", "dnsmasq"):
                for _ in range(rounds):
                    results.setdefault((what, "watch"), []).append(
                        await _round(lab, net, agent, pollers, what, direct=False))
        finally:
            agent.stop()
            await asyncio.wait_for(task, 30)
    finally:
        for p in pollers.values():
            p.stop()
    return results


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    if os.geteuid() != 0:
        ap.error("needs root (network namespaces)")
    lab = Lab()
    try:
        ensure_fabric(lab.fabric)
        results = asyncio.run(run(lab, args.rounds))
    finally:
        lab.cleanup()
    load = Path("/proc/loadavg").read_text().split()[:3]
    print(f"kill -9 while a guest polls ({args.rounds} rounds each; load average "
          f"{' '.join(load)}, {os.cpu_count()} CPUs)")
    ok = True
    for what in ("haproxy", "dnsmasq"):
        direct = [g for g, _ in results[(what, "direct")]]
        watch = [g for g, _ in results[(what, "watch")]]
        failed = sum(f for _, f in results[(what, "watch")])
        ok = ok and max(watch) < 1.0
        print(f"  {what:8} watch  median {statistics.median(watch) * 1000:5.0f} ms, max "
              f"{max(watch) * 1000:5.0f} ms, failed guest tries {failed}")
        print(f"  {what:8} direct median {statistics.median(direct) * 1000:5.0f} ms, max "
              f"{max(direct) * 1000:5.0f} ms (reference: reconcile called at the kill)")
        print(f"  {what:8} ratio watch/direct (median) "
              f"{statistics.median(watch) / statistics.median(direct):.2f}")
    print(f"bar: every outage < 1 s: {'PASS' if ok else 'FAIL'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
