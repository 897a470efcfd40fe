"""A guest that takes a neighbour's address gets nothing (issue 16, defect 4), on the one-host
fabric run by the DHCP agent: its port-security table drops B's frames from A's IP (ARP and IP)
and from A's MAC, while A, and B from its own address, are served. With port security off on B,
the same spoof reaches the proxy, which shows the rules are what stops it; an allowed address
pair lets B use an extra address."""

from __future__ import annotations

import asyncio
import json

import pytest

from openimds.reconcile import MemoryInventory
from tests.dhcp.test_agent_netns import Running, make_agent
from tests.fabric import inventory as inv_rows
from tests.fabric.lab import Lab, lab, sh, wait_for  # noqa: F401 - fixture

pytestmark = pytest.mark.root

URL = "http://169.254.169.254/latest/meta-data/"


def source_of(lab: Lab, guest: str, src: str) -> str | None:  # noqa: F811
    """The X-Forwarded-For the proxy saw for a request from `src`, or None (no answer)."""
    rc, body = lab.curl(guest, URL, timeout=2, extra=("--interface", src))
    if rc != 0:
        return None
    return str(json.loads(body)["headers"]["x-forwarded-for"])


def served(lab: Lab, guest: str, src: str) -> None:  # noqa: F811
    """Wait until a request from `src` is answered as coming from `src`, as a guest retries.

    Why not one attempt: the kernel's IPv4 neighbour table is one for all network namespaces
    of the host (its gc_thresh3, 1,024 by default, exists only in the initial namespace). When
    other jobs on the machine hold it full (a boot-storm benchmark holds ~1,020 entries), the
    proxy's namespace cannot create an entry for the guest's address, its SYN-ACK is dropped
    and a single 2 s curl fails (seen: rc 28, no entry for the guest in the proxy's namespace,
    1,028 entries in the table). That is not what this test is about; a blocked source stays
    blocked however often it tries (the checks for None), and the positive control at the end
    (port security off: the same spoof gets through) shows those checks can fail."""
    wait_for(lambda: source_of(lab, guest, src) == src, timeout=30)


async def test_a_guest_using_its_neighbours_address_gets_nothing(lab: Lab) -> None:  # noqa: F811
    inv = MemoryInventory()
    net, sub = lab.new_id(), lab.new_id()
    inv.put("network", inv_rows.network(net, [sub]))
    inv.put("subnet", inv_rows.subnet(sub, net, "10.39.0.0/24", "10.39.0.1"))
    inv.put("port", inv_rows.port(lab.new_id(), net, sub, "10.39.0.2", "network:dhcp",
                                  f"dhcp-{net}"))
    port_a = inv_rows.port(lab.new_id(), net, sub, "10.39.0.5", "compute:nova", "vm-a")
    port_b = inv_rows.port(lab.new_id(), net, sub, "10.39.0.6", "compute:nova", "vm-b")
    inv.put("port", port_a)
    rev = inv.put("port", port_b)
    lab.echo_agent()
    guests = {}
    for name, p in (("a", port_a), ("b", port_b)):
        ip = p["fixed_ips"][0]["ip_address"]
        g = await asyncio.to_thread(lab.guest, net, p, addresses=(f"{ip}/24",))
        sh("ip", "route", "replace", "169.254.169.254/32", "via", "10.39.0.2", netns=g)
        guests[name] = g
    a, b = guests["a"], guests["b"]
    # B takes A's address as a second one (what a tenant with root in its guest can do).
    sh("ip", "addr", "add", "10.39.0.5/32", "dev", "eth0", netns=b)

    async with Running(make_agent(lab, inv)) as agent:
        await agent.wait_synced(rev, timeout=30)
        await asyncio.to_thread(served, lab, a, "10.39.0.5")
        await asyncio.to_thread(served, lab, b, "10.39.0.6")
        assert await asyncio.to_thread(source_of, lab, b, "10.39.0.5") is None  # spoof: nothing

        # B also takes A's MAC: still nothing, from either address.
        sh("ip", "link", "set", "eth0", "address", port_a["mac_address"], netns=b)
        sh("ip", "neigh", "flush", "dev", "eth0", netns=b)
        assert await asyncio.to_thread(source_of, lab, b, "10.39.0.5") is None
        assert await asyncio.to_thread(source_of, lab, b, "10.39.0.6") is None
        sh("ip", "link", "set", "eth0", "address", port_b["mac_address"], netns=b)
        sh("ip", "neigh", "flush", "dev", "eth0", netns=b)

        # An allowed address pair is a source B may use.
        sh("ip", "addr", "add", "10.39.0.100/32", "dev", "eth0", netns=b)
        assert await asyncio.to_thread(source_of, lab, b, "10.39.0.100") is None
        rev = inv.put("port", {**port_b, "allowed_address_pairs": [{"ip_address": "10.39.0.100"}]})
        await agent.wait_synced(rev)
        await asyncio.to_thread(served, lab, b, "10.39.0.100")

        # Port security off on B: the same spoof gets through; the rules were what stopped it.
        rev = inv.put("port", {**port_b, "port_security_enabled": False})
        await agent.wait_synced(rev)
        sh("ip", "neigh", "flush", "dev", "eth0", netns=b)
        await asyncio.to_thread(served, lab, b, "10.39.0.5")
