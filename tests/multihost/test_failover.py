"""Automatic failover of scheduling on several hosts (issue 11 item 3), in a lab of its own:
2 network nodes (DHCP, L3, metadata and L2 agents, one DHCP agent per network) and 2 compute
hosts, VXLAN tenant networks, a short agent_down_time so that a death is seen quickly.

* A power cut of the node holding an isolated network's DHCP port: the port (same MAC and
  address) moves to the other DHCP agent, guests on both compute hosts get their own metadata
  through the new holder over the route they already have, and a guest booted afterwards
  leases from it. When the node comes back it removes its copy of the network and the new
  holder is left alone (same dnsmasq, same binding).
* The same for a non-HA router: its interface ports move to the other L3 agent, guests reach
  metadata through the new `qrouter-` namespace, and the returning node does not rebuild it.
* A heartbeat that comes back within agent_down_time changes nothing (no flapping).
"""

from __future__ import annotations

import os
import signal
import sqlite3
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from tests.support.multihost import MultiHostLab, SimHost, wait_for

NETWORK_NODE = ("dhcp-agent", "l3-agent", "metadata-agent", "l2-agent")
COMPUTE = ("l2-agent",)
# Short, so a death is noticed in seconds; at least 5 reports (report_interval = 1) so a
# heartbeat late by a second or two under load is not a death.
DOWN_TIME = 6
NODES = ("net-1", "net-2")


@pytest.fixture(scope="module")
def lab() -> Iterator[MultiHostLab]:
    from tests.conftest import IN_CI

    if os.geteuid() != 0:
        if IN_CI:
            pytest.fail("CI=true but not root: the multi-host lab must run in CI")
        pytest.skip("needs root (network and mount namespaces)")
    lab = MultiHostLab(
        [("net-1", NETWORK_NODE), ("net-2", NETWORK_NODE), ("cmp-1", COMPUTE),
         ("cmp-2", COMPUTE)],
        # l3_ha = false: these routers are the non-HA kind (one L3 agent each) whatever the
        # default becomes once HA routers exist.
        extra_control=(f"agent_down_time = {DOWN_TIME}\ndhcp_agents_per_network = 1\n"
                       "l3_ha = false\n"
                       "[ml2]\ntenant_network_types = vxlan\n"
                       "[ml2_type_vxlan]\nvni_ranges = 1000:1999\n"))
    try:
        lab.start()
        wait_for(lambda: all_alive(lab, *NODES, "cmp-1", "cmp-2"), timeout=90)
        yield lab
    finally:
        lab.cleanup()


def all_alive(lab: MultiHostLab, *hosts: str) -> bool:
    agents = lab.cli("network", "agent", "list")
    return all(a["alive"] for a in agents if a["host"] in hosts) and {
        a["host"] for a in agents} >= set(hosts)


def other(name: str) -> str:
    return NODES[1] if name == NODES[0] else NODES[0]


def dhcp_port(lab: MultiHostLab, network_id: str) -> dict[str, object]:
    (port,) = lab.cli("port", "list", "--network", network_id, "--device-owner",
                      "network:dhcp")
    return dict(port)


def router_hosts(lab: MultiHostLab, router_id: str) -> set[str]:
    return {p["binding:host_id"] for p in lab.cli("port", "list", "--device-id", router_id)}


def guest_for(lab: MultiHostLab, network_id: str, host_name: str) -> tuple[str, SimHost, str]:
    """A server on `host_name`, plugged, leased: (server id, host, guest namespace)."""
    server = lab.cli("server", "create", f"vm-{uuid.uuid4().hex[:6]}", "--network", network_id,
                     "--host", host_name)
    port = lab.cli("port", "list", "--device-id", server["id"])[0]
    host = lab.host(port["binding:host_id"])
    guest = lab.boot_guest(host, port["id"])
    return server["id"], host, guest


def own_metadata(lab: MultiHostLab, guests: list[tuple[str, SimHost, str]],
                 within: float = 30) -> None:
    for server_id, host, guest in guests:
        assert lab.metadata(host, guest, within=within)["uuid"] == server_id


def names(host: SimHost, resource_id: str) -> list[str]:
    """Files and directories under the host's state path that name a resource."""
    return [str(p) for p in host.state.rglob("*") if resource_id in p.name]


def control_log(lab: MultiHostLab) -> str:
    return (lab.root / "control-api.log").read_text(errors="replace")


def test_dead_dhcp_node_network_moves_and_the_returning_node_leaves_it(
        lab: MultiHostLab) -> None:
    net = lab.cli("net-create", "iso-failover")
    lab.cli("subnet-create", "--no-gateway", "--name", "iso-failover", "iso-failover",
            "192.168.60.0/24")
    before = dhcp_port(lab, net["id"])
    dead, alive = str(before["binding:host_id"]), other(str(before["binding:host_id"]))
    guests = [guest_for(lab, net["id"], h) for h in ("cmp-1", "cmp-2")]
    for _, host, guest in guests:
        routes = lab.dhcp(host, guest)
        assert f"169.254.169.254 via {before['fixed_ips'][0]['ip_address']}" in routes, routes
    own_metadata(lab, guests)

    cut = time.monotonic()
    lab.power_cut(lab.host(dead))
    wait_for(lambda: dhcp_port(lab, net["id"])["binding:host_id"] == alive,
             timeout=DOWN_TIME * 4)
    moved = time.monotonic() - cut
    after = dhcp_port(lab, net["id"])
    # Neutron's reserved_dhcp_port hand-over: same port, MAC and address, the new device_id.
    assert (after["id"], after["mac_address"], after["fixed_ips"]) == (
        before["id"], before["mac_address"], before["fixed_ips"])
    assert after["device_id"] != before["device_id"]
    assert f"network {net['id']} moved from the dead DHCP agent on {dead} to {alive}" \
        in control_log(lab)
    new_holder = lab.host(alive)
    wait_for(lambda: f"qdhcp-{net['id']}" in new_holder.private_namespaces(), timeout=60)
    # The guests keep the route they leased (via the moved address) and get their own data.
    own_metadata(lab, guests, within=60)
    print(f"\nDHCP node cut: network moved after {moved:.1f} s, both guests answered after "
          f"{time.monotonic() - cut:.1f} s (agent_down_time {DOWN_TIME} s)")
    # A guest booted now leases from the new holder and gets its metadata too.
    late = guest_for(lab, net["id"], "cmp-1")
    assert "169.254.169.254 via" in lab.dhcp(late[1], late[2])
    own_metadata(lab, [late])
    pid_file = new_holder.state / "dhcp" / net["id"] / "pid"
    dnsmasq = pid_file.read_text()

    returning = lab.host(dead)
    assert names(returning, net["id"]), "the power cut should have left the node's files"
    lab.power_on(returning)
    wait_for(lambda: all_alive(lab, dead), timeout=90)
    # Its reconcile removes the copy it no longer serves (its files from before the cut) ...
    wait_for(lambda: not names(returning, net["id"]), timeout=60)
    assert f"qdhcp-{net['id']}" not in returning.private_namespaces()
    # ... and the new holder is untouched.
    assert dhcp_port(lab, net["id"])["binding:host_id"] == alive
    assert pid_file.read_text() == dnsmasq
    own_metadata(lab, [*guests, late])
    assert "moved from the dead DHCP agent on " + alive not in control_log(lab)


def test_dead_l3_node_router_moves_and_the_returning_node_leaves_it(lab: MultiHostLab) -> None:
    wait_for(lambda: all_alive(lab, *NODES), timeout=90)
    net = lab.cli("net-create", "routed-failover")
    lab.cli("subnet-create", "--name", "routed-failover", "routed-failover", "172.30.0.0/24")
    router = lab.cli("router-create", "failover-router")
    lab.cli_raw("router-interface-add", "failover-router", "routed-failover")
    (dead,) = router_hosts(lab, router["id"])
    alive = other(dead)
    guests = [guest_for(lab, net["id"], h) for h in ("cmp-1", "cmp-2")]
    for _, host, guest in guests:
        routes = lab.dhcp(host, guest)
        # The router path: 169.254.169.254 (if routed at all) and the default via the router.
        assert "default via 172.30.0.1" in routes, routes
        assert all("via 172.30.0.1" in line for line in routes.splitlines()
                   if "169.254.169.254" in line), routes
    own_metadata(lab, guests)

    cut = time.monotonic()
    lab.power_cut(lab.host(dead))
    wait_for(lambda: router_hosts(lab, router["id"]) == {alive}, timeout=DOWN_TIME * 4)
    moved = time.monotonic() - cut
    assert f"router {router['id']} moved from the dead L3 agent on {dead} to {alive}" \
        in control_log(lab)
    new_holder = lab.host(alive)
    qrouter = f"qrouter-{router['id']}"
    wait_for(lambda: qrouter in new_holder.private_namespaces(), timeout=60)
    own_metadata(lab, guests, within=60)
    print(f"\nL3 node cut: router moved after {moved:.1f} s, both guests answered after "
          f"{time.monotonic() - cut:.1f} s (agent_down_time {DOWN_TIME} s)")
    links = new_holder.run("ip", "-n", qrouter, "-br", "link").stdout

    returning = lab.host(dead)
    assert (returning.state / "claims" / "router" / router["id"]).exists(), \
        "the power cut should have left the node's claim of the router on its disk"
    lab.power_on(returning)
    wait_for(lambda: all_alive(lab, dead), timeout=90)
    # The returning L3 agent drops its claim, and every other file naming the router,
    # instead of rebuilding it.
    wait_for(lambda: not names(returning, router["id"]), timeout=60)
    assert qrouter not in returning.private_namespaces()
    assert router_hosts(lab, router["id"]) == {alive}
    assert new_holder.run("ip", "-n", qrouter, "-br", "link").stdout == links
    own_metadata(lab, guests)


def heartbeat_age(lab: MultiHostLab, host: str, agent_type: str) -> float:
    """Seconds since the agent's last heartbeat, read from the lab's SQLite file (read-only):
    milliseconds per look, where a CLI call can take seconds on a busy machine."""
    db = sqlite3.connect(f"file:{lab.root / 'openimds.sqlite'}?mode=ro", uri=True)
    try:
        (stamp,) = db.execute("SELECT heartbeat_timestamp FROM agents WHERE host = ? AND "
                              "agent_type = ?", (host, agent_type)).fetchone()
    finally:
        db.close()
    at = datetime.fromisoformat(stamp)
    at = at if at.tzinfo else at.replace(tzinfo=UTC)
    return (datetime.now(UTC) - at).total_seconds()


def test_heartbeat_back_within_agent_down_time_changes_nothing(lab: MultiHostLab) -> None:
    wait_for(lambda: all_alive(lab, *NODES), timeout=90)
    net = lab.cli("net-create", "iso-no-flap")
    lab.cli("subnet-create", "--no-gateway", "--name", "iso-no-flap", "iso-no-flap",
            "192.168.61.0/24")
    before = dhcp_port(lab, net["id"])
    holder = lab.host(str(before["binding:host_id"]))
    guest = guest_for(lab, net["id"], "cmp-2")
    lab.dhcp(guest[1], guest[2])
    own_metadata(lab, [guest])
    routers = {r["id"]: router_hosts(lab, r["id"]) for r in lab.cli("router", "list")}
    log_before = control_log(lab)
    pids = [p.pid for p in holder.procs.values()]
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        # Silent for more than half the window: several failover passes (every
        # agent_down_time / 4) see the late heartbeat.
        late = wait_for(lambda: (age := heartbeat_age(lab, holder.name, "DHCP agent")) >
                        DOWN_TIME * 0.6 and age, timeout=DOWN_TIME * 2, interval=0.05)
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)
    assert late < DOWN_TIME, f"the pause overran the window ({late:.1f} s)"
    wait_for(lambda: heartbeat_age(lab, holder.name, "DHCP agent") < DOWN_TIME / 2,
             timeout=DOWN_TIME)
    assert dhcp_port(lab, net["id"]) == before
    assert {r["id"]: router_hosts(lab, r["id"]) for r in lab.cli("router", "list")} == routers
    assert "moved from the dead" not in control_log(lab)[len(log_before):]
    own_metadata(lab, [guest])


def served(lab: MultiHostLab, host: str) -> set[str]:
    """The qdhcp-/qrouter- namespaces the inventory schedules to a host."""
    out = set()
    for p in lab.cli("port", "list", "--device-owner", "network:dhcp"):
        if p["binding:host_id"] == host:
            out.add(f"qdhcp-{p['network_id']}")
    for p in lab.cli("port", "list", "--device-owner", "network:router_interface"):
        if p["binding:host_id"] == host:
            out.add(f"qrouter-{p['device_id']}")
    return out


def built(host: SimHost) -> set[str]:
    return {n for n in host.private_namespaces() if n.startswith(("qdhcp-", "qrouter-"))}


def test_frozen_node_past_agent_down_time_loses_its_network_and_removes_its_copy(
        lab: MultiHostLab) -> None:
    """Not a power cut: the node's agents stop (SIGSTOP) for longer than agent_down_time while
    its namespaces, dnsmasq and haproxy stay up, as in a partition. Its network moves; when
    its agents run again they take down their copy (the moved port's address included) and
    keep what is still theirs; the new holder is not touched."""
    wait_for(lambda: all_alive(lab, *NODES), timeout=90)
    net = lab.cli("net-create", "iso-frozen")
    lab.cli("subnet-create", "--no-gateway", "--name", "iso-frozen", "iso-frozen",
            "192.168.62.0/24")
    before = dhcp_port(lab, net["id"])
    frozen, alive = lab.host(str(before["binding:host_id"])), other(
        str(before["binding:host_id"]))
    guest = guest_for(lab, net["id"], "cmp-1")
    lab.dhcp(guest[1], guest[2])
    own_metadata(lab, [guest])
    wait_for(lambda: f"qdhcp-{net['id']}" in built(frozen), timeout=60)
    pids = [p.pid for p in frozen.procs.values()]
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        wait_for(lambda: dhcp_port(lab, net["id"])["binding:host_id"] == alive,
                 timeout=DOWN_TIME * 4)
        new_holder = lab.host(alive)
        wait_for(lambda: f"qdhcp-{net['id']}" in built(new_holder), timeout=60)
        pid_file = new_holder.state / "dhcp" / net["id"] / "pid"
        dnsmasq = wait_for(lambda: pid_file.exists() and pid_file.read_text(), timeout=60)
        # The frozen node still has its copy: nothing on it has run since.
        assert f"qdhcp-{net['id']}" in built(frozen)
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)
    wait_for(lambda: all_alive(lab, frozen.name), timeout=60)
    wait_for(lambda: built(frozen) == served(lab, frozen.name), timeout=60)
    assert f"qdhcp-{net['id']}" not in built(frozen)
    assert dhcp_port(lab, net["id"])["binding:host_id"] == alive
    assert built(new_holder) == served(lab, alive)
    own_metadata(lab, [guest])
    assert pid_file.read_text() == dnsmasq
