"""The DHCP agent end to end in real namespaces, driven by the in-memory inventory.

One scenario per test, all inside the lab's namespaces (tests/fabric/lab.py):
isolated network → qdhcp namespace, tap, dnsmasq, haproxy on 169.254.169.254:80; a guest
gets a lease with the metadata route and reaches the proxy; a router attach changes the opts
within seconds while the proxy stays for the lease window and then goes; an agent restart
adopts dnsmasq and haproxy (same pids, same bytes); deleting the network removes everything.
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

from openimds.dhcp.agent import DhcpAgent
from openimds.dhcp.apply import DhcpApplier
from openimds.dhcp.plan import DhcpOptions
from openimds.dhcp.settings import DhcpSettings
from openimds.linux.dnsmasq import find_dnsmasq
from openimds.linux.fabric import bridge_name
from openimds.linux.netns import netns_exists
from openimds.linux.observe import addresses, find_link
from openimds.proxy import HaproxySupervisor
from openimds.proxy.haproxy import ProxyDefaults, config_path
from openimds.proxy.supervisor import listening_sockets
from openimds.reconcile import MemoryInventory
from tests.fabric import inventory as inv_rows
from tests.fabric.lab import Lab, lab  # noqa: F401 - fixture

pytestmark = pytest.mark.root


def make_agent(lab: Lab, inv: MemoryInventory, *, lease: int = 86400) -> DhcpAgent:  # noqa: F811
    opts = DhcpOptions(
        enable_isolated_metadata=True,
        dhcp_lease_duration=lease,
        dhcp_confs=os.path.join(lab.state, "dhcp"),
        proxy=ProxyDefaults(state_path=lab.state, socket_path=lab.socket),
    )
    settings = DhcpSettings(fabric=lab.fabric, state_path=lab.state, options=opts)
    applier = DhcpApplier(settings, HaproxySupervisor(lab.state))
    return DhcpAgent(
        inv, applier, opts, fabric_namespace=lab.fabric, watch_timeout=1.0,
        owns=lambda key: key in lab.ids,
    )


async def until(check: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await asyncio.to_thread(check)
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: last {value!r}")
        await asyncio.sleep(0.1)


class Running:
    """An agent task that is always stopped, even when the test fails."""

    def __init__(self, agent: DhcpAgent) -> None:
        self.agent = agent
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> DhcpAgent:
        self.task = asyncio.create_task(self.agent.run())
        return self.agent

    async def __aexit__(self, *exc: object) -> None:
        self.agent.stop()
        assert self.task is not None
        await asyncio.wait_for(self.task, 30)


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def v4_addresses(ns: str, dev: str) -> set[str]:
    return {a.cidr for a in addresses(ns, dev) if a.family == 4}


def state_bytes(conf_dir: str, proxy_conf: str) -> dict[str, bytes]:
    out = {p.name: p.read_bytes() for p in Path(conf_dir).iterdir() if p.is_file()}
    out["haproxy.conf"] = Path(proxy_conf).read_bytes()
    return out


async def test_isolated_network_lifecycle(lab: Lab) -> None:  # noqa: F811
    inv = MemoryInventory()
    net, sub, rtr = lab.new_id(), lab.new_id(), lab.new_id()
    dhcp_port = inv_rows.port(lab.new_id(), net, sub, "10.9.0.2", "network:dhcp", f"dhcp-{net}")
    vm_port = inv_rows.port(lab.new_id(), net, sub, "10.9.0.5", "compute:nova", "vm-1")
    inv.put("network", inv_rows.network(net, [sub]))
    inv.put("subnet", inv_rows.subnet(sub, net, "10.9.0.0/24", "10.9.0.1"))
    inv.put("port", dhcp_port)
    rev = inv.put("port", vm_port)
    lab.echo_agent()
    ns = f"qdhcp-{net}"
    tap = f"tap{dhcp_port['id'][:11]}"
    conf_dir = os.path.join(lab.state, "dhcp", net)
    sup = HaproxySupervisor(lab.state)

    agent = make_agent(lab, inv, lease=8)
    async with Running(agent):
        await agent.wait_synced(rev, timeout=30)
        # Namespace, tap with the DHCP port's MAC and addresses incl. the metadata address.
        assert netns_exists(ns)
        link = find_link(ns, tap)
        assert link is not None and link.mac == dhcp_port["mac_address"] and link.up
        assert v4_addresses(ns, tap) == {"10.9.0.2/24", "169.254.169.254/32"}
        bridge = find_link(lab.fabric, bridge_name(net))
        assert bridge is not None and bridge.kind == "bridge"
        # dnsmasq with the planned files, running in the namespace.
        opts_text = Path(conf_dir, "opts").read_text()
        assert opts_text.startswith(
            "tag:tag0,option:classless-static-route,169.254.169.254/32,10.9.0.2,0.0.0.0/0,10.9.0.1\n"
        )
        assert Path(conf_dir, "host").read_text() == (
            f"{vm_port['mac_address']},host-10-9-0-5.openstacklocal,10.9.0.5\n"
        )
        dns = find_dnsmasq(os.path.join(conf_dir, "pid"))
        assert dns is not None and f"--interface={tap}" in dns.argv
        assert "--keep-in-foreground" not in dns.argv  # daemon: survives the agent
        # haproxy listening on 169.254.169.254:80 inside the namespace.
        proxy_pid = sup.pid(net)
        assert proxy_pid is not None
        assert ("169.254.169.254", 80) in listening_sockets(proxy_pid)

        # A guest plugged into the bridge leases its address and the metadata route.
        guest = await asyncio.to_thread(lab.guest, net, vm_port)
        routes = await asyncio.to_thread(lab.dhcp, guest)
        assert "169.254.169.254 via 10.9.0.2 dev eth0" in routes, routes
        assert "10.9.0.5" in await asyncio.to_thread(
            lambda: os.popen(f"ip -n {guest} -4 addr show eth0").read()
        )
        rc, body = await asyncio.to_thread(lab.curl, guest, "http://169.254.169.254/latest/")
        assert rc == 0, body
        headers = json.loads(body)["headers"]
        assert headers["x-neutron-network-id"] == net
        assert headers["x-forwarded-for"] == "10.9.0.5"

        # Attach a router on the gateway: opts change within seconds, same dnsmasq (SIGHUP).
        dns_pid = dns.pid
        t0 = time.monotonic()
        inv.put("router", inv_rows.router(rtr))
        rev = inv.put(
            "port", inv_rows.port(lab.new_id(), net, sub, "10.9.0.1", "network:router_interface", rtr)
        )
        await until(
            lambda: "169.254.169.254/32,10.9.0.1," in Path(conf_dir, "opts").read_text(), 5
        )
        assert time.monotonic() - t0 < 5
        await agent.wait_synced(rev)
        found = find_dnsmasq(os.path.join(conf_dir, "pid"))
        assert found is not None and found.pid == dns_pid
        # Lease window: the proxy and the address stay for now...
        assert sup.pid(net) == proxy_pid
        assert "169.254.169.254/32" in v4_addresses(ns, tap)
        # ...a renewed lease routes metadata via the router...
        routes = await asyncio.to_thread(lab.dhcp, guest)
        assert "169.254.169.254 via 10.9.0.1 dev eth0" in routes, routes
        # ...and after dhcp_lease_duration (8 s from the router port) both go.
        await until(lambda: sup.pid(net) is None, 15)
        await until(lambda: "169.254.169.254/32" not in v4_addresses(ns, tap), 5)
        assert not os.path.exists(config_path(lab.state, net))

    # Detach the router while no agent runs; a new agent converges on startup (the proxy
    # comes back at once: the subnet is isolated again).
    for p in inv.rows("ports"):
        if p["device_owner"] == "network:router_interface":
            inv.delete("port", p["id"])
    rev = inv.delete("router", rtr)
    agent = make_agent(lab, inv, lease=8)
    async with Running(agent):
        await agent.wait_synced(rev, timeout=30)
        assert "169.254.169.254/32,10.9.0.2" in Path(conf_dir, "opts").read_text()
        assert sup.pid(net) is not None
        before = state_bytes(conf_dir, config_path(lab.state, net))
        pids = (find_dnsmasq(os.path.join(conf_dir, "pid")).pid, sup.pid(net))  # type: ignore[union-attr]

    # Restart: the next agent adopts both processes and rewrites nothing.
    agent = make_agent(lab, inv, lease=8)
    async with Running(agent):
        await agent.wait_synced(inv.revision, timeout=30)
        after = state_bytes(conf_dir, config_path(lab.state, net))
        assert after == before
        assert (find_dnsmasq(os.path.join(conf_dir, "pid")).pid, sup.pid(net)) == pids  # type: ignore[union-attr]
        assert agent.counters.by_outcome["ok"] >= 1

        # Delete the network: everything created for it goes.
        for p in inv.rows("ports"):
            inv.delete("port", p["id"])
        inv.delete("subnet", sub)
        rev = inv.delete("network", net)
        await agent.wait_synced(rev, timeout=30)
        assert not netns_exists(ns)
        assert not os.path.exists(conf_dir)
        assert not os.path.exists(config_path(lab.state, net))
        assert find_link(lab.fabric, bridge_name(net)) is None
        assert find_link(lab.fabric, f"tap{dhcp_port['id'][:11]}") is None
        for pid in pids:
            assert not alive(pid)
