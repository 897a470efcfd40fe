"""An HA router on one L3 agent in real namespaces, with the real keepalived.

Alone on its HA network, the router's keepalived becomes master after its first VRRP timeout
and takes the gateway address and fe80::a9fe:a9fe onto the qr- device; the agent reports the
router `active`; a guest reaches the proxy through the REDIRECT; the qr- device has no kernel
link-local address (every copy shares its MAC). keepalived killed with -9 leaves its addresses
behind: the agent clears them, starts it again and it becomes master again. Deleting the
router stops keepalived and removes its files. (Two instances and failover between hosts:
tests/multihost/test_ha_failover.py.)
"""

from __future__ import annotations

import asyncio
import json
import os
import signal

import pytest

from openimds.l3.agent import L3Agent
from openimds.l3.apply import RouterApplier, RouterSettings
from openimds.l3.ha import ha_name
from openimds.l3.plan import L3Options, qr_name
from openimds.linux.netns import netns_exists
from openimds.linux.observe import addresses
from openimds.proxy import HaproxySupervisor
from openimds.proxy.haproxy import ProxyDefaults
from openimds.reconcile import MemoryInventory
from tests.fabric import inventory as rows
from tests.fabric.lab import Lab, lab, wait_for  # noqa: F401 - fixture

pytestmark = pytest.mark.root

IPV6 = os.path.exists("/proc/net/if_inet6")
OPTS = L3Options(ipv6_enabled=IPV6, ha_advert_int=1)


def make_agent(lab: Lab, inv: MemoryInventory) -> L3Agent:  # noqa: F811
    settings = RouterSettings(fabric=lab.fabric, state_path=lab.state,
                              proxy=ProxyDefaults(state_path=lab.state, socket_path=lab.socket))
    applier = RouterApplier(settings, HaproxySupervisor(lab.state))
    return L3Agent(inv, applier, OPTS, fabric_namespace=lab.fabric, watch_timeout=1.0,
                   owns=lambda key: key in lab.ids, host="h1")


def cidrs(ns: str, dev: str) -> set[str]:
    return {a.cidr for a in addresses(ns, dev)}


async def test_ha_router_alone_becomes_master_and_recovers_keepalived(lab: Lab) -> None:  # noqa: F811
    inv = MemoryInventory()
    rid, n1, s1, nha, sha = (lab.new_id() for _ in range(5))
    inv.put("network", rows.network(n1, [s1]))
    inv.put("subnet", rows.subnet(s1, n1, "10.9.0.0/24", "10.9.0.1"))
    inv.put("network", rows.network(nha, [sha]))
    inv.put("subnet", rows.subnet(sha, nha, "169.254.192.0/18", None, enable_dhcp=False))
    inv.put("router", {**rows.router(rid), "ha": True, "ha_vr_id": 5})
    qr = {**rows.port(lab.new_id(), n1, s1, "10.9.0.1", "network:router_interface", rid),
          "binding:host_id": ""}
    ha = {**rows.port(lab.new_id(), nha, sha, "169.254.192.9", "network:router_ha_interface",
                      rid), "binding:host_id": "h1"}
    vm = rows.port(lab.new_id(), n1, s1, "10.9.0.5", "compute:nova", "vm-1")
    for p in (qr, ha, vm):
        rev = inv.put("port", p)
    lab.echo_agent()
    ns = f"qrouter-{rid}"
    qr_dev, ha_dev = qr_name(qr["id"]), ha_name(ha["id"])

    agent = make_agent(lab, inv)
    task = asyncio.create_task(agent.run())
    try:
        await agent.wait_synced(rev, timeout=30)
        keepalived = agent.applier.keepalived
        first = keepalived.pid(rid)
        assert first is not None
        assert cidrs(ns, ha_dev) >= {"169.254.192.9/18"}
        await asyncio.to_thread(wait_for, lambda: "10.9.0.1/24" in cidrs(ns, qr_dev), 20)
        assert "169.254.0.5/24" in cidrs(ns, ha_dev)
        if IPV6:
            assert "fe80::a9fe:a9fe/128" in cidrs(ns, qr_dev)
            # Only keepalived's address: no kernel link-local from the shared MAC.
            assert {c for c in cidrs(ns, qr_dev) if c.startswith("fe80:")} == {
                "fe80::a9fe:a9fe/128"}
        assert agent.ha_states() == {rid: "active"}

        guest = await asyncio.to_thread(
            lambda: lab.guest(n1, vm, addresses=("10.9.0.5/24",), gateway="10.9.0.1"))
        rc, body = await asyncio.to_thread(lab.curl, guest,
                                           "http://169.254.169.254/openstack/latest/")
        assert rc == 0, body
        assert json.loads(body)["headers"]["x-neutron-router-id"] == rid

        # kill -9: the VIPs stay behind; the agent clears them and starts keepalived again.
        os.kill(first, signal.SIGKILL)
        second = await asyncio.to_thread(
            wait_for, lambda: (p := keepalived.pid(rid)) not in (None, first) and p, 20)
        assert second
        await asyncio.to_thread(wait_for, lambda: "10.9.0.1/24" in cidrs(ns, qr_dev), 20)
        assert agent.ha_states() == {rid: "active"}

        inv.delete("port", qr["id"])
        inv.delete("port", ha["id"])
        rev = inv.delete("router", rid)
        await agent.wait_synced(rev, timeout=30)
        assert not netns_exists(ns)
        assert keepalived.pid(rid) is None
        assert not os.path.exists(keepalived.folder(rid))
    finally:
        agent.stop()
        await asyncio.wait_for(task, 30)
