"""The L3 agent end to end in real namespaces, driven by the in-memory inventory.

A router on two networks: qrouter namespace, qr- ports with the gateway IPs bridged onto each
network's bridge, forwarding between them, our iptables chains exactly as planned, haproxy on
9697. A guest whose default route is the router reaches the proxy through the REDIRECT (the
fake metadata agent echoes the headers it got), a direct connection to <router ip>:9697 is
dropped; an agent restart adopts haproxy; deleting the router removes everything.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from openimds.l3.agent import L3Agent
from openimds.l3.apply import RouterApplier, RouterSettings
from openimds.l3.plan import L3Options, qr_name, render_iptables_restore
from openimds.linux import iptables
from openimds.linux.fabric import bridge_name, fabric_port_name
from openimds.linux.netns import get_sysctl, netns_exists
from openimds.linux.observe import addresses, find_link
from openimds.proxy import HaproxySupervisor
from openimds.proxy.haproxy import ProxyDefaults, config_path
from openimds.proxy.supervisor import listening_sockets
from openimds.reconcile import MemoryInventory
from tests.fabric import inventory as rows
from tests.fabric.lab import Lab, lab  # noqa: F401 - fixture

pytestmark = pytest.mark.root

OPTS = L3Options(ipv6_enabled=os.path.exists("/proc/net/if_inet6"))


def make_agent(lab: Lab, inv: MemoryInventory) -> L3Agent:  # noqa: F811
    settings = RouterSettings(
        fabric=lab.fabric, state_path=lab.state,
        proxy=ProxyDefaults(state_path=lab.state, socket_path=lab.socket),
    )
    applier = RouterApplier(settings, HaproxySupervisor(lab.state))
    return L3Agent(
        inv, applier, OPTS, fabric_namespace=lab.fabric, watch_timeout=1.0,
        owns=lambda key: key in lab.ids,
    )


class Running:
    def __init__(self, agent: L3Agent) -> None:
        self.agent = agent
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> L3Agent:
        self.task = asyncio.create_task(self.agent.run())
        return self.agent

    async def __aexit__(self, *exc: object) -> None:
        self.agent.stop()
        assert self.task is not None
        await asyncio.wait_for(self.task, 30)


async def off_loop(fn: Callable[..., Any], *args: Any) -> Any:
    return await asyncio.to_thread(fn, *args)


async def test_router_lifecycle(lab: Lab) -> None:  # noqa: F811
    inv = MemoryInventory()
    rid = lab.new_id()
    n1, s1, n2, s2 = (lab.new_id() for _ in range(4))
    inv.put("network", rows.network(n1, [s1]))
    inv.put("subnet", rows.subnet(s1, n1, "10.8.0.0/24", "10.8.0.1"))
    inv.put("network", rows.network(n2, [s2]))
    inv.put("subnet", rows.subnet(s2, n2, "10.7.0.0/24", "10.7.0.1"))
    inv.put("router", rows.router(rid))
    qr1 = rows.port(lab.new_id(), n1, s1, "10.8.0.1", "network:router_interface", rid)
    qr2 = rows.port(lab.new_id(), n2, s2, "10.7.0.1", "network:router_interface", rid)
    vm1 = rows.port(lab.new_id(), n1, s1, "10.8.0.5", "compute:nova", "vm-1")
    vm2 = rows.port(lab.new_id(), n2, s2, "10.7.0.5", "compute:nova", "vm-2")
    for p in (qr1, qr2, vm1, vm2):
        rev = inv.put("port", p)
    lab.echo_agent()
    ns = f"qrouter-{rid}"
    sup = HaproxySupervisor(lab.state)

    agent = make_agent(lab, inv)
    async with Running(agent):
        await agent.wait_synced(rev, timeout=30)
        assert netns_exists(ns)
        for port, cidr, net in ((qr1, "10.8.0.1/24", n1), (qr2, "10.7.0.1/24", n2)):
            link = find_link(ns, qr_name(port["id"]))
            assert link is not None and link.mac == port["mac_address"] and link.up
            assert {a.cidr for a in addresses(ns, link.name) if a.family == 4} == {cidr}
            near = find_link(lab.fabric, fabric_port_name(port["id"]))
            assert near is not None and near.master == bridge_name(net)
        assert get_sysctl(ns, "net.ipv4.ip_forward") == "1"
        # Our chains hold exactly the plan: rendering against the live rules gives nothing.
        from openimds.l3.model import routers_from_neutron
        from openimds.l3.plan import desired_router_state
        from openimds.reconcile import read_snapshot

        snap = await read_snapshot(inv)
        plan = desired_router_state(
            routers_from_neutron(snap.routers, snap.ports, snap.subnets, snap.networks)[rid], OPTS
        )
        saved = iptables.save(ns)
        assert render_iptables_restore(plan.rules, saved, plan.chain_prefix) == ""
        ours = [r for r in saved.rules() if "openimds-l3-" in r[1] or "openimds-l3-" in r[2]]
        assert sorted(ours) == sorted(plan.rules)
        # haproxy on 9697.
        proxy_pid = sup.pid(rid)
        assert proxy_pid is not None
        assert ("0.0.0.0", OPTS.metadata_port) in listening_sockets(proxy_pid)

        # Guests with the router as default gateway.
        g1 = await off_loop(
            lambda: lab.guest(n1, vm1, addresses=("10.8.0.5/24",), gateway="10.8.0.1")
        )
        g2 = await off_loop(
            lambda: lab.guest(n2, vm2, addresses=("10.7.0.5/24",), gateway="10.7.0.1")
        )
        # Forwarding between the router's networks.
        out = await off_loop(
            lambda: os.popen(f"ip netns exec {g1} busybox ping -c1 -W2 10.7.0.5").read()
        )
        assert "1 packets received" in out, out
        # Metadata through REDIRECT -> haproxy -> unix socket.
        rc, body = await off_loop(lab.curl, g1, "http://169.254.169.254/openstack/latest/")
        assert rc == 0, body
        got = json.loads(body)
        assert got["path"] == "/openstack/latest/"
        assert got["headers"]["x-neutron-router-id"] == rid
        assert got["headers"]["x-forwarded-for"] == "10.8.0.5"
        # A direct connection to the proxy port is dropped (curl times out: rc 28).
        rc, _ = await off_loop(lambda: lab.curl(g2, "http://10.7.0.1:9697/", timeout=2))
        assert rc == 28

        # Detach network 2: its qr- port and bridge-side veth go, network 1 keeps working.
        rev = inv.delete("port", qr2["id"])
        await agent.wait_synced(rev)
        assert find_link(ns, qr_name(qr2["id"])) is None
        assert find_link(lab.fabric, fabric_port_name(qr2["id"])) is None
        rc, _ = await off_loop(lab.curl, g1, "http://169.254.169.254/")
        assert rc == 0
        before = (Path(config_path(lab.state, rid)).read_bytes(), iptables.save(ns))

    # Restart: haproxy adopted (same pid), nothing rewritten.
    agent = make_agent(lab, inv)
    async with Running(agent):
        await agent.wait_synced(inv.revision, timeout=30)
        assert sup.pid(rid) == proxy_pid
        assert (Path(config_path(lab.state, rid)).read_bytes(), iptables.save(ns)) == before

        # Delete the router: namespace, veths and proxy go; the networks' bridges stay.
        inv.delete("port", qr1["id"])
        rev = inv.delete("router", rid)
        t0 = time.monotonic()
        await agent.wait_synced(rev, timeout=30)
        assert time.monotonic() - t0 < 10
        assert not netns_exists(ns)
        assert sup.pid(rid) is None
        assert not os.path.exists(config_path(lab.state, rid))
        assert find_link(lab.fabric, fabric_port_name(qr1["id"])) is None
        assert find_link(lab.fabric, bridge_name(n1)) is not None
