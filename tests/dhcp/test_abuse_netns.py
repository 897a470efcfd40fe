"""One guest cannot starve another (issue 16, defect 3): B's guest holds 1,100 idle TCP
connections to 169.254.169.254:80 on a shared network, and A's guest on the same network still
gets its answer within cloud-init's own 10 s client timeout (before the per-source limit and the
short header timeout it waited ~30 s). The delay A sees is printed."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

import pytest

from openimds.reconcile import MemoryInventory
from tests.dhcp.test_agent_netns import Running, make_agent
from tests.fabric import inventory as inv_rows
from tests.fabric.lab import CLEAN_ENV, Lab, lab, sh  # noqa: F401 - fixture

pytestmark = pytest.mark.root

HOG = os.path.join(os.path.dirname(__file__), "..", "fabric", "guest_hog.py")
CLOUD_INIT_TIMEOUT = 10


async def test_idle_connections_of_one_guest_do_not_delay_another(lab: Lab) -> None:  # noqa: F811
    inv = MemoryInventory()
    net, sub = lab.new_id(), lab.new_id()
    inv.put("network", inv_rows.network(net, [sub]))
    inv.put("subnet", inv_rows.subnet(sub, net, "10.29.0.0/24", "10.29.0.1"))
    inv.put("port", inv_rows.port(lab.new_id(), net, sub, "10.29.0.2", "network:dhcp",
                                  f"dhcp-{net}"))
    ports = [inv_rows.port(lab.new_id(), net, sub, f"10.29.0.{i}", "compute:nova", f"vm-{i}")
             for i in (5, 6)]
    rev = 0
    for p in ports:
        rev = inv.put("port", p)
    lab.echo_agent()
    guests = []
    for p in ports:
        ip = p["fixed_ips"][0]["ip_address"]
        g = await asyncio.to_thread(lab.guest, net, p, addresses=(f"{ip}/24",))
        sh("ip", "route", "replace", "169.254.169.254/32", "via", "10.29.0.2", netns=g)
        guests.append(g)
    guest_a, guest_b = guests

    async with Running(make_agent(lab, inv)) as agent:
        await agent.wait_synced(rev, timeout=30)
        python = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
        hog = subprocess.Popen(
            ["ip", "netns", "exec", guest_b, python, HOG, "169.254.169.254", "80", "1100"],
            stdout=subprocess.PIPE, text=True, env=CLEAN_ENV,
        )
        try:
            assert hog.stdout is not None
            ready = await asyncio.to_thread(hog.stdout.readline)
            assert ready.startswith("ready 1100"), ready
            t0 = time.monotonic()
            rc, body = await asyncio.to_thread(
                lab.curl, guest_a, "http://169.254.169.254/latest/meta-data/",
                timeout=CLOUD_INIT_TIMEOUT,
            )
            delay = time.monotonic() - t0
            print(f"\nA's answer with B holding 1,100 idle connections: {delay * 1000:.0f} ms "
                  f"(B: {ready.split()[2]} established)")
            assert rc == 0, f"curl exit {rc} after {delay:.1f}s"
            assert '"x-forwarded-for": "10.29.0.5"' in body
        finally:
            hog.kill()
            hog.wait(timeout=10)
