"""`enable_metadata_network` with a DHCP agent and an L3 agent sharing one state_path.

A network with a 169.254.169.252/30 subnet (spec neutron-metadata.md 3.6) attached to a router:
the DHCP proxy in `qdhcp-<net>` stamps X-Neutron-Router-ID, and the L3 proxy in
`qrouter-<router>` stamps the same router id. Their files are keyed by different ids (network
vs router), and each agent owns only its own, so through many passes, full syncs and orphan
sweeps of both agents neither proxy is ever restarted. When the network stops qualifying the
router-identified DHCP proxy is stopped; detaching the router turns it into a network proxy;
deleting everything leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import pytest

from openimds.dhcp.agent import DhcpAgent
from openimds.dhcp.apply import DhcpApplier
from openimds.dhcp.plan import DhcpOptions
from openimds.dhcp.settings import DhcpSettings
from openimds.l3.agent import L3Agent
from openimds.l3.apply import RouterApplier, RouterSettings
from openimds.l3.plan import L3Options
from openimds.linux.fabric import bridge_name
from openimds.linux.netns import netns_exists
from openimds.linux.observe import find_link
from openimds.proxy import HaproxySupervisor
from openimds.proxy.haproxy import ProxyDefaults, config_path, owned_proxy_ids, pidfile_path
from openimds.proxy.supervisor import listening_sockets
from openimds.reconcile import InventoryAgent, MemoryInventory
from openimds.reconcile.claims import Claims
from tests.dhcp.test_agent_netns import alive, until
from tests.fabric import inventory as rows
from tests.fabric.lab import Lab, lab  # noqa: F401 - fixture

pytestmark = pytest.mark.root

RESYNC = 0.3  # full syncs (with orphan sweeps) many times a second


def dhcp_agent(lab: Lab, inv: MemoryInventory, *, metadata_network: bool) -> DhcpAgent:  # noqa: F811
    opts = DhcpOptions(
        enable_isolated_metadata=True,
        enable_metadata_network=metadata_network,
        dhcp_lease_duration=8,
        dhcp_confs=os.path.join(lab.state, "dhcp"),
        proxy=ProxyDefaults(state_path=lab.state, socket_path=lab.socket),
    )
    settings = DhcpSettings(fabric=lab.fabric, state_path=lab.state, options=opts)
    return DhcpAgent(
        inv, DhcpApplier(settings, HaproxySupervisor(lab.state)), opts,
        fabric_namespace=lab.fabric, watch_timeout=0.5, resync_interval=RESYNC,
        owns=lambda key: key in lab.ids,
    )


def l3_agent(lab: Lab, inv: MemoryInventory) -> L3Agent:  # noqa: F811
    settings = RouterSettings(
        fabric=lab.fabric, state_path=lab.state,
        proxy=ProxyDefaults(state_path=lab.state, socket_path=lab.socket),
    )
    return L3Agent(
        inv, RouterApplier(settings, HaproxySupervisor(lab.state)),
        L3Options(ipv6_enabled=os.path.exists("/proc/net/if_inet6")),
        fabric_namespace=lab.fabric, watch_timeout=0.5, resync_interval=RESYNC,
        owns=lambda key: key in lab.ids,
    )


class Running:
    """An agent task that is always stopped, even when the test fails."""

    def __init__(self, agent: InventoryAgent) -> None:
        self.agent = agent
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> InventoryAgent:
        self.task = asyncio.create_task(self.agent.run())
        return self.agent

    async def __aexit__(self, *exc: object) -> None:
        self.agent.stop()
        assert self.task is not None
        await asyncio.wait_for(self.task, 30)


def headers_from(lab: Lab, ns: str) -> dict[str, Any]:  # noqa: F811
    """What the echo agent got for a request made inside `ns` (a test namespace)."""
    rc, body = lab.curl(ns, "http://169.254.169.254/latest/")
    assert rc == 0, body
    return dict(json.loads(body)["headers"])


async def passes(*agents: InventoryAgent, count: int = 4) -> None:
    """Until every agent has finished `count` more successful reconciles (full syncs)."""
    start = [a.counters.by_outcome["ok"] for a in agents]
    await until(
        lambda: all(a.counters.by_outcome["ok"] >= s + count for a, s in zip(agents, start,
                                                                           strict=True)),
        timeout=20,
    )
    for a in agents:
        assert a.counters.by_outcome["error"] == 0


async def test_dhcp_and_l3_proxies_coexist(lab: Lab) -> None:  # noqa: F811
    inv = MemoryInventory()
    net, sub, rtr = lab.new_id(), lab.new_id(), lab.new_id()
    dhcp_port = rows.port(lab.new_id(), net, sub, "169.254.169.254", "network:dhcp",
                          f"dhcp-{net}")
    router_port = rows.port(lab.new_id(), net, sub, "169.254.169.253",
                            "network:router_interface", rtr)
    # Attached long ago: without enable_metadata_network the lease window is already closed.
    router_port["created_at"] = "2020-01-01T00:00:00.000000Z"
    inv.put("network", rows.network(net, [sub]))
    inv.put("subnet", rows.subnet(sub, net, "169.254.169.252/30", "169.254.169.253"))
    inv.put("router", rows.router(rtr))
    inv.put("port", dhcp_port)
    rev = inv.put("port", router_port)
    lab.echo_agent()
    qdhcp, qrouter = f"qdhcp-{net}", f"qrouter-{rtr}"
    sup = HaproxySupervisor(lab.state)
    l3 = l3_agent(lab, inv)

    async with Running(l3):
        dhcp = dhcp_agent(lab, inv, metadata_network=True)
        async with Running(dhcp):
            await dhcp.wait_synced(rev, timeout=30)
            await l3.wait_synced(rev, timeout=30)
            # Two proxies, two sets of files: the DHCP one keyed by the network.
            dhcp_pid, l3_pid = sup.pid(net), sup.pid(rtr)
            assert dhcp_pid is not None and l3_pid is not None and dhcp_pid != l3_pid
            assert ("169.254.169.254", 80) in listening_sockets(dhcp_pid)
            assert ("0.0.0.0", 9697) in listening_sockets(l3_pid)
            dhcp_conf = Path(config_path(lab.state, net)).read_text()
            assert f"# owner: network {net}\n" in dhcp_conf
            assert f"http-request set-header X-Neutron-Router-ID {rtr}\n" in dhcp_conf
            assert f"pidfile     {pidfile_path(lab.state, net)}\n" in dhcp_conf
            assert owned_proxy_ids(lab.state, "network") == [net]
            assert owned_proxy_ids(lab.state, "router") == [rtr]
            assert dhcp.orphan_keys() >= {net} and rtr not in dhcp.orphan_keys()
            assert l3.orphan_keys() == {rtr}
            # The DHCP proxy identifies the router: the agent searches all its networks.
            got = await asyncio.to_thread(headers_from, lab, qdhcp)
            assert got["x-neutron-router-id"] == rtr
            assert "x-neutron-network-id" not in got

            # Many passes of both agents (each resync is a full sync with an orphan sweep):
            # nobody restarts the other's proxy. Each agent handed the other's key (as a
            # mistaken orphan would be) finds nothing of its own there and touches nothing.
            await passes(dhcp, l3)
            assert await l3.reconcile_once(net) == "ok"
            assert await dhcp.reconcile_once(rtr) == "ok"
            await passes(dhcp, l3)
            assert (sup.pid(net), sup.pid(rtr)) == (dhcp_pid, l3_pid)

        # The network stops qualifying (enable_metadata_network off; its router port is old,
        # so no lease window): the router-identified DHCP proxy goes, the L3 one stays.
        dhcp = dhcp_agent(lab, inv, metadata_network=False)
        async with Running(dhcp):
            await dhcp.wait_synced(inv.revision, timeout=30)
            await until(lambda: sup.pid(net) is None, 10)
            assert not alive(dhcp_pid)
            assert not os.path.exists(config_path(lab.state, net))
            assert not os.path.exists(pidfile_path(lab.state, net))
            await passes(dhcp, l3)
            assert sup.pid(rtr) == l3_pid

        # Back on, then detach the router: the L3 proxy and namespace go, and the DHCP
        # proxy (still a metadata network, now without a router) identifies the network.
        dhcp = dhcp_agent(lab, inv, metadata_network=True)
        async with Running(dhcp):
            await dhcp.wait_synced(inv.revision, timeout=30)
            dhcp_pid = await until(lambda: sup.pid(net), 10)
            assert (await asyncio.to_thread(headers_from, lab, qdhcp))[
                "x-neutron-router-id"
            ] == rtr
            inv.delete("port", router_port["id"])
            rev = inv.delete("router", rtr)
            await l3.wait_synced(rev, timeout=30)
            await dhcp.wait_synced(rev, timeout=30)
            await until(lambda: not netns_exists(qrouter), 10)
            assert sup.pid(rtr) is None and not alive(l3_pid)
            assert not os.path.exists(config_path(lab.state, rtr))
            dhcp_conf = Path(config_path(lab.state, net)).read_text()
            assert "# owner:" not in dhcp_conf
            assert f"http-request set-header X-Neutron-Network-ID {net}\n" in dhcp_conf
            got = await asyncio.to_thread(headers_from, lab, qdhcp)
            assert got["x-neutron-network-id"] == net
            assert "x-neutron-router-id" not in got
            await passes(dhcp)  # the L3 agent has no key left
            network_pid = sup.pid(net)
            assert network_pid is not None

            # Delete the network: nothing of either agent is left.
            inv.delete("port", dhcp_port["id"])
            inv.delete("subnet", sub)
            rev = inv.delete("network", net)
            await dhcp.wait_synced(rev, timeout=30)
            await l3.wait_synced(rev, timeout=30)
            await asyncio.sleep(4 * RESYNC)  # full syncs of both: nothing comes back

    assert not netns_exists(qdhcp) and not netns_exists(qrouter)
    for pid in (network_pid, dhcp_pid, l3_pid):
        assert not alive(pid)
    for rid in (net, rtr):
        assert not os.path.exists(config_path(lab.state, rid))
        assert not os.path.exists(pidfile_path(lab.state, rid))
    leftovers = [
        n for folder in ("ns-metadata-proxy", "external/pids")
        for n in os.listdir(os.path.join(lab.state, folder))
    ]
    assert leftovers == []
    assert Claims(lab.state, "network").ids() == set()
    assert Claims(lab.state, "router").ids() == set()
    assert not os.path.exists(os.path.join(lab.state, "dhcp", net))
    assert find_link(lab.fabric, bridge_name(net)) is None
