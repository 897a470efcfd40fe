"""Two simulated hosts (namespaces joined by an underlay veth) each run an l2-agent over one
in-memory inventory: guests on both hosts reach each other over kernel VXLAN with head-end
replication; peers follow port bindings; a restart adopts; removal leaves foreign links alone."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass, field

import pytest

from openimds.l2.agent import L2Agent
from openimds.l2.apply import L2Applier
from openimds.l2.plan import L2Options
from openimds.linux.segments import flood_entries, observe_segment_links
from openimds.reconcile import MemoryInventory

NET = str(uuid.uuid4())
BRQ = f"brq{NET[:11]}"


def sh(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


@dataclass
class DictPeers:
    peers: dict[str, str] = field(default_factory=dict)

    async def tunnel_peers(self) -> Mapping[str, str]:
        return dict(self.peers)


@dataclass
class Host:
    name: str
    netns: str
    ip: str


@pytest.fixture
def hosts(make_netns: Callable[[str], str]) -> list[Host]:
    h1, h2 = make_netns("l2h1"), make_netns("l2h2")
    tag = uuid.uuid4().hex[:6]
    sh("ip", "link", "add", f"ul{tag}a", "netns", h1, "type", "veth", "peer", "name",
       f"ul{tag}b", "netns", h2)
    out = []
    for ns, dev, ip, name in ((h1, f"ul{tag}a", "192.0.2.1", "cmp-1"),
                              (h2, f"ul{tag}b", "192.0.2.2", "cmp-2")):
        sh("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", dev)
        sh("ip", "-n", ns, "link", "set", dev, "up")
        out.append(Host(name, ns, ip))
    return out


def plug_guest(make_netns: Callable[[str], str], host: Host, ip: str, mac: str) -> str:
    guest = make_netns("l2g")
    tap = f"tap{uuid.uuid4().hex[:8]}"
    sh("ip", "link", "add", tap, "netns", host.netns, "type", "veth", "peer", "name", "eth0",
       "netns", guest)
    sh("ip", "-n", guest, "link", "set", "eth0", "address", mac, "mtu", "1450", "up")
    sh("ip", "-n", guest, "addr", "add", f"{ip}/24", "dev", "eth0")
    sh("ip", "-n", host.netns, "link", "set", tap, "master", BRQ, "up")
    return guest


async def until(check: Callable[[], bool], timeout: float = 15.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


@dataclass
class Lab:
    inventory: MemoryInventory
    peers: DictPeers
    hosts: list[Host]
    agents: dict[str, L2Agent] = field(default_factory=dict)
    tasks: dict[str, asyncio.Task[None]] = field(default_factory=dict)

    def start(self, host: Host) -> L2Agent:
        agent = L2Agent(self.inventory, L2Applier(host.netns),
                        L2Options(host=host.name, local_ip=host.ip), self.peers,
                        peer_interval=0.1, watch_timeout=0.5)
        self.agents[host.name] = agent
        self.tasks[host.name] = asyncio.create_task(agent.run())
        return agent

    async def stop(self, host: Host) -> None:
        self.agents[host.name].stop()
        await self.tasks.pop(host.name)

    async def synced(self) -> None:
        for agent in self.agents.values():
            await agent.wait_synced(self.inventory.revision, timeout=15)


@pytest.fixture
async def lab(hosts: list[Host]) -> AsyncIterator[Lab]:
    lab = Lab(MemoryInventory(), DictPeers({h.name: h.ip for h in hosts}), hosts)
    lab.inventory.put("network", {"id": NET, "mtu": 1450, "provider:network_type": "vxlan",
                                  "provider:segmentation_id": 4242})
    try:
        yield lab
    finally:
        for name in list(lab.tasks):
            lab.agents[name].stop()
            await lab.tasks[name]


def links(host: Host) -> dict[str, object]:
    return {x.name: x for x in observe_segment_links(host.netns)}


SERVE = ("import socket,sys;s=socket.socket();s.setsockopt(socket.SOL_SOCKET,"
         "socket.SO_REUSEADDR,1);s.bind(('0.0.0.0',7777));s.listen();print('ready',flush=True)"
         "\nwhile True:\n c,_=s.accept();c.send(b'hello');c.close()")
CONNECT = ("import socket,sys\ntry:\n s=socket.create_connection((sys.argv[1],7777),timeout=1)"
           "\n sys.exit(0 if s.recv(5)==b'hello' else 1)\nexcept OSError:\n sys.exit(1)")


@pytest.fixture
def servers() -> Iterator[Callable[[str], None]]:
    """Start a TCP hello server in a guest (the machine has no ping); stopped by handle."""
    procs: list[subprocess.Popen[str]] = []

    def start(guest: str) -> None:
        proc = subprocess.Popen(["ip", "netns", "exec", guest, sys.executable, "-c", SERVE],
                                stdout=subprocess.PIPE, text=True)
        procs.append(proc)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"

    try:
        yield start
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def ping(guest: str, ip: str) -> bool:
    """A TCP round trip from `guest` to the hello server at `ip`."""
    return subprocess.run(["ip", "netns", "exec", guest, sys.executable, "-c", CONNECT, ip],
                          capture_output=True).returncode == 0


async def test_vxlan_between_two_hosts_follows_bindings_and_restarts(
        lab: Lab, hosts: list[Host], make_netns: Callable[[str], str],
        servers: Callable[[str], None]) -> None:
    h1, h2 = hosts
    for h in hosts:
        lab.start(h)
    await lab.synced()
    assert BRQ not in links(h1) and BRQ not in links(h2)  # no port bound yet: nothing built

    lab.inventory.put("port", {"id": "p1", "network_id": NET, "binding:host_id": "cmp-1"})
    await lab.synced()
    assert {BRQ, "vxlan-4242"} <= links(h1).keys() and BRQ not in links(h2)
    assert flood_entries(h1.netns, "vxlan-4242") == set()  # no peer has the network yet

    lab.inventory.put("port", {"id": "p2", "network_id": NET, "binding:host_id": "cmp-2"})
    await lab.synced()
    assert flood_entries(h1.netns, "vxlan-4242") == {"192.0.2.2"}
    assert flood_entries(h2.netns, "vxlan-4242") == {"192.0.2.1"}

    g1 = plug_guest(make_netns, h1, "10.0.0.11", "fa:16:3e:00:00:11")
    g2 = plug_guest(make_netns, h2, "10.0.0.12", "fa:16:3e:00:00:12")
    servers(g1)
    servers(g2)
    await until(lambda: ping(g1, "10.0.0.12"))
    assert ping(g2, "10.0.0.11")

    # Restart on host 1: the new agent adopts (no action), the data path never changes.
    before = links(h1)
    await lab.stop(h1)
    agent = lab.start(h1)
    await lab.synced()
    assert links(h1) == before and agent.counters.by_outcome["error"] == 0
    assert ping(g1, "10.0.0.12")

    # Host 2 loses the network: its uplink goes, host 1 drops it from the flood list; the
    # bridge stays on host 2 while the guest's tap is still on it.
    lab.inventory.delete("port", "p2")
    await lab.synced()
    assert "vxlan-4242" not in links(h2) and BRQ in links(h2)
    assert flood_entries(h1.netns, "vxlan-4242") == set()


async def test_removal_takes_only_what_the_agent_owns(lab: Lab, hosts: list[Host]) -> None:
    h1 = hosts[0]
    sh("ip", "-n", h1.netns, "link", "add", "brqforeign", "type", "bridge")
    lab.inventory.put("port", {"id": "p1", "network_id": NET, "binding:host_id": "cmp-1"})
    lab.start(h1)
    await lab.synced()
    assert {BRQ, "vxlan-4242"} <= links(h1).keys()
    lab.inventory.delete("port", "p1")
    lab.inventory.delete("network", NET)
    await lab.synced()
    found = links(h1)
    assert BRQ not in found and "vxlan-4242" not in found and "brqforeign" in found


async def test_orphans_are_found_by_alias_after_a_restart(lab: Lab, hosts: list[Host]) -> None:
    h1 = hosts[0]
    lab.inventory.put("port", {"id": "p1", "network_id": NET, "binding:host_id": "cmp-1"})
    lab.start(h1)
    await lab.synced()
    await lab.stop(h1)
    # While the agent is down the network goes away; the next start removes its devices.
    lab.inventory.delete("port", "p1")
    lab.inventory.delete("network", NET)
    lab.start(h1)
    await lab.synced()
    assert BRQ not in links(h1) and "vxlan-4242" not in links(h1)
