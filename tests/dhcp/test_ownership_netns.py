"""Agents remove only what they created: a `qdhcp-`/`qrouter-` namespace of another node on the
same host (same names, no claim in our state directory) survives every sync; one we claimed and
whose network is gone is removed."""

from __future__ import annotations

import asyncio
import os
import subprocess

from openimds.dhcp.agent import DhcpAgent
from openimds.dhcp.apply import DhcpApplier
from openimds.dhcp.plan import DhcpOptions
from openimds.dhcp.settings import DhcpSettings
from openimds.l3.agent import L3Agent
from openimds.l3.apply import RouterApplier, RouterSettings
from openimds.l3.plan import L3Options
from openimds.linux.netns import netns_exists
from openimds.proxy import HaproxySupervisor
from openimds.proxy.haproxy import ProxyDefaults
from openimds.reconcile import MemoryInventory
from openimds.reconcile.claims import Claims
from tests.dhcp.test_agent_netns import until
from tests.fabric.lab import Lab, lab  # noqa: F401 - fixture


def _agents(lab: Lab) -> tuple[DhcpAgent, L3Agent]:  # noqa: F811
    confs = os.path.join(lab.state, "dhcp")
    proxy = ProxyDefaults(state_path=lab.state, socket_path=lab.socket)
    opts = DhcpOptions(enable_isolated_metadata=True, dhcp_confs=confs, proxy=proxy)
    dhcp = DhcpAgent(
        MemoryInventory(),
        DhcpApplier(
            DhcpSettings(fabric=lab.fabric, state_path=lab.state, options=opts),
            HaproxySupervisor(lab.state),
        ),
        opts,
        fabric_namespace=lab.fabric,
        watch_timeout=0.2,
    )
    l3 = L3Agent(
        MemoryInventory(),
        RouterApplier(
            RouterSettings(fabric=lab.fabric, state_path=lab.state, proxy=proxy),
            HaproxySupervisor(lab.state),
        ),
        L3Options(),
        fabric_namespace=lab.fabric,
        watch_timeout=0.2,
    )
    return dhcp, l3


async def test_foreign_namespaces_survive_and_claimed_orphans_go(lab: Lab) -> None:  # noqa: F811
    foreign_net, foreign_router, ours = lab.new_id(), lab.new_id(), lab.new_id()
    for ns in (f"qdhcp-{foreign_net}", f"qrouter-{foreign_router}", f"qdhcp-{ours}"):
        subprocess.run(["ip", "netns", "add", ns], check=True)
    Claims(lab.state, "network").add(ours)  # as if we created it before a crash

    dhcp, l3 = _agents(lab)
    assert dhcp.orphan_keys() == {ours}
    assert l3.orphan_keys() == set()
    for agent in (dhcp, l3):  # start-up: full sync and work the queue, then stop
        task = asyncio.create_task(agent.run())
        await until(lambda: not netns_exists(f"qdhcp-{ours}"), timeout=20)
        await asyncio.sleep(1.5)  # several passes of the worker and the watch
        agent.stop()
        await asyncio.wait_for(task, 30)

    assert netns_exists(f"qdhcp-{foreign_net}")
    assert netns_exists(f"qrouter-{foreign_router}")
    assert not netns_exists(f"qdhcp-{ours}")
    assert Claims(lab.state, "network").ids() == set()
