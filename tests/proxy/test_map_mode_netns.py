"""Map mode end to end in namespaces: real haproxy (HaproxySupervisor), the metadata agent's
MapKeeper on a real PortIndex, and a loopback HTTP server standing in for the metadata API that
echoes the headers it receives.

    guest ns A  oig0 10.0.0.5 ─veth─ proxy ns A (network net-a)  ┐ haproxy of each network runs
    guest ns B  oig0 10.0.0.5 ─veth─ proxy ns B (network net-b)  ┘ here, listening in its ns
                                                                   → 127.0.0.1:<port> "API"

Both tenants use 10.0.0.5: each namespace's map is its own, so each guest gets its own
identity; a port change reaches the running map without a reload; an unknown source gets 404.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from http.server import ThreadingHTTPServer

import pytest

from openimds.agent.index import PortEntry, PortIndex, PortRemoved, PortUpsert
from openimds.agent.map_keeper import MapKeeper
from openimds.proxy.haproxy import (
    Connections,
    InstanceLimit,
    ProxySpec,
    proxy_spec_for_network,
)
from openimds.proxy.runtime_api import RuntimeApi
from openimds.proxy.supervisor import HaproxySupervisor, Outcome
from openimds.wire import sign_instance_id
from tests.fabric.lab import wait_for
from tests.proxy.test_supervisor import (
    MD_IP,
    SPOOFED,
    _EchoHandler,
    guest_get,
    header_values,
)

pytestmark = pytest.mark.root

GUEST_IP = "10.0.0.5"
PROXY_IP = "10.0.0.2"
SECRET = "map-secret"


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


def _port(pid: str, net: str, ip: str, device: str, project: str, mac: str) -> PortEntry:
    return PortEntry.from_api({
        "id": pid, "network_id": net, "mac_address": mac,
        "fixed_ips": [{"subnet_id": "s", "ip_address": ip}],
        "device_id": device, "device_owner": "compute:nova", "project_id": project,
    })


@dataclass
class Lab:
    sup: HaproxySupervisor
    state: str
    api_port: int
    proxies: dict[str, str]  # network -> proxy ns
    guests: dict[str, str]  # network -> guest ns

    def spec(self, network: str, limit: InstanceLimit | None = None) -> ProxySpec:
        conns = Connections(identity="haproxy_map", api_servers=(("127.0.0.1", self.api_port),),
                            instance_limit=limit)
        return proxy_spec_for_network(network, state_path=self.state,
                                      socket_path=os.path.join(self.state, "unused"),
                                      log_target=None, user="nobody", group="nogroup",
                                      connections=conns)


@pytest.fixture
def lab(make_netns: Callable[[str], str]) -> Iterator[Lab]:
    if shutil.which("haproxy") is None:
        pytest.fail("haproxy is not installed (apt-get install -y haproxy)")
    proxies, guests = {}, {}
    for net in ("net-a", "net-b"):
        pns, gns = make_netns("mpx"), make_netns("mgs")
        _ip("-n", pns, "link", "add", "oip0", "type", "veth", "peer", "name", "oig0",
            "netns", gns)  # fmt: skip
        _ip("-n", pns, "addr", "add", f"{PROXY_IP}/24", "dev", "oip0")
        _ip("-n", pns, "addr", "add", f"{MD_IP}/32", "dev", "oip0")
        _ip("-n", pns, "link", "set", "oip0", "up")
        _ip("-n", gns, "addr", "add", f"{GUEST_IP}/24", "dev", "oig0")
        _ip("-n", gns, "link", "set", "oig0", "up")
        _ip("-n", gns, "route", "add", f"{MD_IP}/32", "via", PROXY_IP)
        proxies[net], guests[net] = pns, gns
    api = ThreadingHTTPServer(("127.0.0.1", 0), _EchoHandler)
    api.daemon_threads = True
    thread = threading.Thread(target=api.serve_forever, daemon=True)
    thread.start()
    root = tempfile.mkdtemp(prefix="oim-", dir="/tmp")
    os.chmod(root, 0o755)
    sup = HaproxySupervisor(os.path.join(root, "state"))
    try:
        yield Lab(sup, sup.state_path, api.server_address[1], proxies, guests)
    finally:
        # haproxy runs outside the test namespaces in map mode: stop it by its pid.
        for rid in sup.owned_ids():
            sup.stop(rid)
        api.shutdown()
        api.server_close()
        shutil.rmtree(root, ignore_errors=True)


def test_overlapping_tenants_port_change_and_unknown_source(lab: Lab) -> None:
    index = PortIndex()
    index.replace(1, [
        _port("p-a", "net-a", GUEST_IP, "vm-a", "proj-a", "fa:16:3e:00:00:0a"),
        _port("p-b", "net-b", GUEST_IP, "vm-b", "proj-b", "fa:16:3e:00:00:0b"),
    ], [])
    keeper = MapKeeper(index, lab.state, SECRET)
    for net in ("net-a", "net-b"):
        assert lab.sup.ensure(lab.spec(net), lab.proxies[net]) is Outcome.STARTED
    # Before the agent has written the map the proxy answers 404, never another's identity.
    [early] = guest_get(lab.guests["net-a"], MD_IP, 80, "/latest/meta-data/")
    assert early["status"] == 404, early
    asyncio.run(keeper.run_pass())

    for net, instance, project in (("net-a", "vm-a", "proj-a"), ("net-b", "vm-b", "proj-b")):
        [resp] = guest_get(lab.guests[net], MD_IP, 80, "/latest/meta-data/instance-id", SPOOFED)
        assert resp["status"] == 200, resp
        assert header_values(resp, "X-Instance-ID") == [instance]
        assert header_values(resp, "X-Tenant-ID") == [project]
        assert header_values(resp, "X-Instance-ID-Signature") == [
            sign_instance_id(SECRET, instance)]
        # Exactly one X-Forwarded-For: the guest's real address, as the agent sends it.
        assert header_values(resp, "X-Forwarded-For") == [GUEST_IP]
        assert header_values(resp, "X-Neutron-Network-ID") == []
        # The guest sent X-Forwarded-For: noted for the API's token-PUT rule (403), as on the
        # agent's path.
        assert header_values(resp, "X-OpenIMDS-Guest-Forwarded") == ["1"]
        assert_no_spoof_except_identity(resp)

    # The port now belongs to another instance: the running map follows, no reload.
    pid = lab.sup.pid("net-a")
    moved = replace(index.port("p-a"), device_id="vm-a2")  # type: ignore[arg-type]
    index.apply(PortUpsert(moved))
    keeper.changed({"net-a"})
    asyncio.run(keeper.run_pass())
    [resp] = guest_get(lab.guests["net-a"], MD_IP, 80, "/latest/meta-data/instance-id")
    assert header_values(resp, "X-Instance-ID") == ["vm-a2"]
    assert lab.sup.pid("net-a") == pid
    assert lab.sup.ensure(lab.spec("net-a"), lab.proxies["net-a"]) is Outcome.UNCHANGED
    # The file holds the same, so a restarted haproxy starts right.
    with open(lab.spec("net-a").map_file or "") as fh:
        assert fh.read().startswith(f"{GUEST_IP} vm-a2|proj-a|")

    # The port is gone: that source is unknown, 404 (the other tenant is untouched).
    index.apply(PortRemoved("p-a"))
    keeper.changed({"net-a"})
    asyncio.run(keeper.run_pass())
    [resp] = guest_get(lab.guests["net-a"], MD_IP, 80, "/latest/meta-data/instance-id")
    assert resp["status"] == 404, resp
    assert "Instance was not found on network net-a." in resp["body"]
    [resp] = guest_get(lab.guests["net-b"], MD_IP, 80, "/latest/meta-data/instance-id")
    assert header_values(resp, "X-Instance-ID") == ["vm-b"]
    assert lab.sup.pid("net-a") == pid


def assert_no_spoof_except_identity(resp: dict) -> None:
    # The identity headers are ours in map mode; the guest's copies must be gone.
    values = {v for _, v in resp["body"]["headers"]}
    for _, spoof in SPOOFED:
        assert spoof not in values, resp


def test_restarted_haproxy_loads_the_map_file(lab: Lab) -> None:
    index = PortIndex()
    index.replace(1, [_port("p-a", "net-a", GUEST_IP, "vm-a", "proj-a", "fa:16:3e:00:00:0a")],
                  [])
    keeper = MapKeeper(index, lab.state, SECRET)
    spec = lab.spec("net-a")
    lab.sup.ensure(spec, lab.proxies["net-a"])
    asyncio.run(keeper.run_pass())
    pid = lab.sup.pid("net-a")
    assert pid is not None
    os.kill(pid, 9)
    # SIGKILL is delivered asynchronously: wait until the supervisor sees it gone.
    wait_for(lambda: lab.sup.pid("net-a") is None)
    # Restarted from its config and the map file alone, before the keeper runs again.
    assert lab.sup.ensure(spec, lab.proxies["net-a"]) is Outcome.RESTARTED
    [resp] = guest_get(lab.guests["net-a"], MD_IP, 80, "/latest/meta-data/instance-id")
    assert header_values(resp, "X-Instance-ID") == ["vm-a"]
    entries = asyncio.run(RuntimeApi(spec.stats_socket or "").show_map(spec.map_file or ""))
    assert [k for k, _ in entries] == [GUEST_IP, "fe80::f816:3eff:fe00:a"]


def test_recreated_namespace_gets_a_new_proxy(lab: Lab, make_netns: Callable[[str], str]) -> None:
    spec = lab.spec("net-a")
    ns = lab.proxies["net-a"]
    lab.sup.ensure(spec, ns)
    old = lab.sup.pid("net-a")
    subprocess.run(["ip", "netns", "delete", ns], check=True)
    subprocess.run(["ip", "netns", "add", ns], check=True)
    _ip("-n", ns, "link", "set", "lo", "up")
    _ip("-n", ns, "addr", "add", f"{MD_IP}/32", "dev", "lo")
    assert lab.sup.ensure(spec, ns) is Outcome.RESTARTED
    assert lab.sup.pid("net-a") not in (None, old)



def test_per_instance_limit_answers_429_with_retry_after(lab: Lab) -> None:
    index = PortIndex()
    index.replace(1, [_port("p-a", "net-a", GUEST_IP, "vm-a", "proj-a", "fa:16:3e:00:00:0a")],
                  [])
    keeper = MapKeeper(index, lab.state, SECRET)
    # Three at once, then one per 100 s: the fourth request in a row is over the limit.
    lab.sup.ensure(lab.spec("net-a", InstanceLimit(rate=0.01, burst=3)), lab.proxies["net-a"])
    asyncio.run(keeper.run_pass())
    got = guest_get(lab.guests["net-a"], MD_IP, 80, "/latest/meta-data/", count=5)
    assert [r["status"] for r in got] == [200, 200, 200, 429, 429], got
    assert "Too many requests" in got[3]["body"]


def test_switching_modes_replaces_the_proxy_both_ways(lab: Lab) -> None:
    index = PortIndex()
    index.replace(1, [_port("p-a", "net-a", GUEST_IP, "vm-a", "proj-a", "fa:16:3e:00:00:0a")],
                  [])
    ns = lab.proxies["net-a"]
    agent_spec = proxy_spec_for_network("net-a", state_path=lab.state,
                                        socket_path=os.path.join(lab.state, "unused"),
                                        log_target=None)
    lab.sup.ensure(agent_spec, ns)
    in_ns = lab.sup.pid("net-a")
    # agent -> haproxy_map: the proxy moves out of the namespace, still listening in it.
    lab.sup.ensure(lab.spec("net-a"), ns)
    asyncio.run(MapKeeper(index, lab.state, SECRET).run_pass())
    [resp] = guest_get(lab.guests["net-a"], MD_IP, 80, "/latest/meta-data/instance-id")
    assert header_values(resp, "X-Instance-ID") == ["vm-a"]
    assert lab.sup.pid("net-a") not in (None, in_ns)
    # and back: the agent's proxy listens again (its agent socket is absent here: 503).
    lab.sup.ensure(agent_spec, ns)
    assert lab.sup.is_listening(agent_spec)
    [resp] = guest_get(lab.guests["net-a"], MD_IP, 80, "/latest/meta-data/instance-id")
    assert resp["status"] == 503, resp


def test_a_proxy_stopped_and_started_again_gets_its_map_back(lab: Lab) -> None:
    index = PortIndex()
    index.replace(1, [_port("p-a", "net-a", GUEST_IP, "vm-a", "proj-a", "fa:16:3e:00:00:0a")],
                  [])
    keeper = MapKeeper(index, lab.state, SECRET)
    spec, ns = lab.spec("net-a"), lab.proxies["net-a"]
    lab.sup.ensure(spec, ns)
    asyncio.run(keeper.run_pass())
    # Stopped (its files removed) and started again between two passes: a new, empty map.
    lab.sup.stop("net-a")
    lab.sup.ensure(spec, ns)
    [resp] = guest_get(lab.guests["net-a"], MD_IP, 80, "/latest/meta-data/instance-id")
    assert resp["status"] == 404
    asyncio.run(keeper.run_pass())  # no index change: the new file alone makes it due
    [resp] = guest_get(lab.guests["net-a"], MD_IP, 80, "/latest/meta-data/instance-id")
    assert header_values(resp, "X-Instance-ID") == ["vm-a"]
