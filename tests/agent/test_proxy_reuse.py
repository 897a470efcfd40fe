"""Real haproxy (the rendered product config) in front of the real agent: pooled connections.

The proxy keeps its unix-socket connections to the agent open and shares them between guests
(`http-reuse always`). That is only correct because the identity is stamped on every request
(guest headers deleted, X-Neutron-Network-ID set, X-Forwarded-For appended) and the agent keeps
no per-connection state. Here two guests with different addresses, each on its own new TCP
connection, go through one and the same agent connection (same socket inode on the agent's
side), and each is still answered as itself.

    guest ns  oig0 10.0.0.5/24 + 10.0.0.6/24, 169.254.169.254/32 via 10.0.0.2
       │ veth
    proxy ns  oip0 10.0.0.2/24 + 169.254.169.254/32, haproxy (HaproxySupervisor)
       │ unix socket
    agent (run_worker, this process) -> loopback metadata-API stub (checks the signature)
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from openimds.feed import Kind, MemoryFeed
from openimds.proxy.haproxy import proxy_spec_for_network
from openimds.proxy.supervisor import HaproxySupervisor

from .fakes import port_dict
from .harness import RunningAgent, StubUpstream, settings_for

pytestmark = pytest.mark.root

SECRET = "S3cr3t!"
NET = "net-reuse"
PROXY_IP, GUEST_A, GUEST_B, MD_IP = "10.0.0.2", "10.0.0.5", "10.0.0.6", "169.254.169.254"

_CLIENT = r"""
import http.client, json, sys
src, spoof = sys.argv[1], sys.argv[2]
c = http.client.HTTPConnection("169.254.169.254", 80, timeout=10, source_address=(src, 0))
c.putrequest("GET", "/latest/meta-data/instance-id", skip_accept_encoding=True)
if spoof:
    c.putheader("X-Forwarded-For", spoof)
c.endheaders()
r = c.getresponse()
print(json.dumps({"status": r.status, "body": r.read().decode()}))
c.close()
"""


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


def agent_connections(socket_path: str, haproxy_pid: int) -> set[str]:
    """Inodes of the connected sockets the agent accepted on `socket_path` from haproxy.

    The accepted side carries the listening socket's path in /proc/net/unix (state 03 =
    connected), and it belongs to the *connecting* process's network namespace, so it is
    listed in haproxy's /proc/<pid>/net/unix, not in ours."""
    inodes = set()
    for line in Path(f"/proc/{haproxy_pid}/net/unix").read_text().splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 8 and fields[7] == socket_path and fields[5] == "03":
            inodes.add(fields[6])
    return inodes


@pytest.fixture
async def chain(make_netns: Callable[[str], str]) -> AsyncIterator[tuple[str, str, int]]:
    if shutil.which("haproxy") is None:
        pytest.fail("haproxy is not installed (apt-get install -y haproxy)")
    proxy_ns, guest_ns = make_netns("pxy"), make_netns("gst")
    _ip("-n", proxy_ns, "link", "add", "oip0", "type", "veth", "peer", "name", "oig0",
        "netns", guest_ns)
    for cmd in (("-n", proxy_ns, "addr", "add", f"{PROXY_IP}/24", "dev", "oip0"),
                ("-n", proxy_ns, "addr", "add", f"{MD_IP}/32", "dev", "oip0"),
                ("-n", proxy_ns, "link", "set", "oip0", "up"),
                ("-n", guest_ns, "addr", "add", f"{GUEST_A}/24", "dev", "oig0"),
                ("-n", guest_ns, "addr", "add", f"{GUEST_B}/24", "dev", "oig0"),
                ("-n", guest_ns, "link", "set", "oig0", "up"),
                ("-n", guest_ns, "route", "add", f"{MD_IP}/32", "via", PROXY_IP)):
        _ip(*cmd)
    # Short private dir: the agent and admin socket paths must fit in sockaddr_un.
    root = Path(tempfile.mkdtemp(prefix="oir-", dir="/tmp"))
    feed = MemoryFeed()
    feed.put(Kind.PORT, port_dict("p-a", NET, GUEST_A, device="vm-a", project="proj-a"))
    feed.put(Kind.PORT, port_dict("p-b", NET, GUEST_B, device="vm-b", project="proj-b"))
    upstream = StubUpstream(SECRET)
    await upstream.start()
    settings = settings_for(root, [upstream.url], SECRET)
    sup = HaproxySupervisor(str(root / "state"))
    try:
        async with RunningAgent(settings, feed) as agent:
            await agent.wait_ready()
            spec = proxy_spec_for_network(NET, state_path=sup.state_path,
                                          socket_path=settings.socket_path, log_target=None)
            # ensure() blocks (haproxy -c, start, readiness): off the loop the agent runs on.
            await asyncio.to_thread(sup.ensure, spec, proxy_ns)
            pid = sup.pid(NET)
            assert pid is not None
            yield guest_ns, settings.socket_path, pid
    finally:
        for rid in sup.owned_ids():
            await asyncio.to_thread(sup.stop, rid)
        await upstream.stop()
        shutil.rmtree(root, ignore_errors=True)


async def guest_get(ns: str, src: str, spoof: str = "") -> dict:
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    proc = await asyncio.create_subprocess_exec(
        "ip", "netns", "exec", ns, sys.executable, "-c", _CLIENT, src, spoof,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env)
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    return json.loads(out)


async def test_two_guests_share_one_agent_connection_and_keep_their_identity(
        chain: tuple[str, str, int]) -> None:
    guest_ns, socket_path, haproxy_pid = chain
    assert agent_connections(socket_path, haproxy_pid) == set()

    # Guest A also claims to be B: haproxy deletes that and appends A's real address.
    a = await guest_get(guest_ns, GUEST_A, spoof=GUEST_B)
    after_a = agent_connections(socket_path, haproxy_pid)
    b = await guest_get(guest_ns, GUEST_B)
    after_b = agent_connections(socket_path, haproxy_pid)

    assert a["status"] == 200 and b["status"] == 200, (a, b)
    ja, jb = json.loads(a["body"]), json.loads(b["body"])
    assert (ja["instance"], ja["tenant"], ja["xff"]) == ("vm-a", "proj-a", [GUEST_A])
    assert (jb["instance"], jb["tenant"], jb["xff"]) == ("vm-b", "proj-b", [GUEST_B])
    # One pooled connection carried both guests' requests: haproxy kept it after A's
    # answer (A's client connection was closed) and reused it for B's first request.
    assert len(after_a) == 1, after_a
    assert after_b == after_a
