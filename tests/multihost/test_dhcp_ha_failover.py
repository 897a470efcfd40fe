"""Node loss on the isolated path (issue 11 item 5(b)): the DHCP node holding an isolated
network's metadata next hop loses power.

Lab: 3 network nodes (DHCP, L3, metadata and L2 agents) and 2 compute hosts, VXLAN tenant
networks, `dhcp_agents_per_network = 2` (so the failover pass has a third node to move the
dead agent's DHCP port to) and `ha_vrrp_advert_int = 1`. One isolated network (no router) is
served by two DHCP agents: it gets a `network:metadata` port, whose address is the
169.254.169.254/32 next hop in options 121/249 and which keepalived holds in one of the two
DHCP namespaces (docs/dhcp-l3.md). One guest on each compute host polls meta_data.json every
200 ms while the node holding that address loses power (every process killed, namespaces and
underlay link gone). Every answer must be the guest's own metadata or a connection
error/timeout: never another instance's data, never an HTTP error. The outage ends (the other
DHCP namespace takes the address over), no guest's route changes (they never renew here, and a
renewal afterwards hands out the very same route from the surviving DHCP server), the dead
agent's DHCP port moves to the third node, and powering the node back on converges without a
second outage. The outage itself is measured in bench/bench_ha_failover.py --path isolated.

Item 5(c) in the same lab: one node is both an HA router's master and the holder of an
isolated network's next hop; the same assertions for the guests of both networks.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.multihost.conftest import node_loss_lab
from tests.multihost.test_ha_failover import active_host, router_agents
from tests.support.multihost import MultiHostLab, SimHost, wait_for
from tests.support.polling import Poller, outage, second_outages, timeline

DOWN_TIME = 8
NODES = {"net-1", "net-2", "net-3"}


@pytest.fixture(scope="module")
def iso_lab() -> Iterator[MultiHostLab]:
    yield from node_loss_lab(DOWN_TIME)


def dhcp_hosts(lab: MultiHostLab, network_id: str) -> set[str]:
    return {p["binding:host_id"] for p in lab.cli("port", "list", "--network", network_id,
                                                  "--device-owner", "network:dhcp")}


def vip_of(lab: MultiHostLab, network_id: str) -> str:
    (port,) = lab.cli("port", "list", "--network", network_id, "--device-owner",
                      "network:metadata")
    return str(port["fixed_ips"][0]["ip_address"])


def holds(host: SimHost, network_id: str, ip: str) -> bool:
    """The host's DHCP namespace of the network has `ip` on its tap (the kernel's view)."""
    ns = f"qdhcp-{network_id}"
    if ns not in host.private_namespaces():
        return False
    out = host.run("ip", "-n", ns, "-4", "-o", "addr", "show", check=False).stdout
    return f" {ip}/32 " in out


def holders(lab: MultiHostLab, network_id: str, ip: str) -> list[str]:
    return sorted(name for name in NODES if holds(lab.host(name), network_id, ip))


def reported(lab: MultiHostLab, network_id: str) -> dict[str, str]:
    """host -> `active`/`standby` from the DHCP agents' configurations.metadata_next_hops."""
    agents = lab.api("GET", "/v2.0/agents?agent_type=DHCP%20agent")["agents"]
    return {a["host"]: a["configurations"]["metadata_next_hops"][network_id] for a in agents
            if a["alive"] and network_id in a["configurations"].get("metadata_next_hops", {})}


def metadata_route(lab: MultiHostLab, host: SimHost, guest: str) -> str:
    routes = host.run("ip", "netns", "exec", guest, "ip", "-4", "route").stdout
    return next((line.strip() for line in routes.splitlines()
                 if line.startswith("169.254.169.254")), "")


def isolated_setup(lab: MultiHostLab, name: str, cidr: str
                   ) -> tuple[dict[str, Any], str, list[tuple[str, SimHost, str]]]:
    """An isolated network with DHCP on two nodes and a guest on each compute host, leased:
    (network, metadata next hop address, [(server id, host, guest)])."""
    net = lab.cli("network", "create", name)
    lab.cli("subnet", "create", name, "--network", net["id"], "--subnet-range", cidr,
            "--no-gateway")
    assert len(dhcp_hosts(lab, net["id"])) == 2
    vip = vip_of(lab, net["id"])
    guests = []
    for cmp in ("cmp-1", "cmp-2"):
        server = lab.cli("server", "create", f"vm-{name}-{cmp}", "--network", net["id"],
                         "--host", cmp)
        port = lab.cli("port", "list", "--device-id", server["id"])[0]
        host = lab.host(cmp)
        guest = lab.boot_guest(host, port["id"])
        routes = lab.dhcp(host, guest)
        # Whichever DHCP server answered: the one shared next hop, never its own address.
        assert f"169.254.169.254 via {vip} dev eth0" in routes, routes
        guests.append((server["id"], host, guest))
    for server_id, host, guest in guests:
        assert lab.metadata(host, guest, within=90)["uuid"] == server_id
    return net, vip, guests


def check_answers(lab: MultiHostLab, guests: list[tuple[str, SimHost, str]],
                  pollers: list[Poller], routes_before: list[str], vip: str | None, *,
                  cut: float, moved: float, on: float, label: str = "") -> list[str]:
    """The assertions of a node-loss test on each guest's answers; `vip` (isolated path): the
    route the guest holds did not change and a renewal hands out the same one. Returns one
    line per guest for the report."""
    report = []
    for (own, host, guest), pl, before in zip(guests, pollers, routes_before, strict=True):
        answers = pl.answers()
        events = (f"moved at {moved - cut:.1f} s, power on at {on - cut:.1f} s; "
                  f"{timeline(answers, cut)}")
        wrong = [(x[0] - cut, *x[1:]) for x in answers if x[1] == 200 and x[2] != own]
        assert not wrong, f"{host.name} got another's metadata: {wrong[:3]}; {events}"
        errors = [(x[0] - cut, *x[1:]) for x in answers if x[1] not in (0, 200)]
        assert not errors, f"{host.name} got HTTP errors: {errors[:5]}; {events}"
        second = second_outages(answers, on)
        assert not second, f"{host.name}: a second outage after power-on: {events}"
        assert metadata_route(lab, host, guest) == before
        if vip is not None:
            # The route the guest holds never changed, and a renewal now (from the survivor
            # or the third node) hands out the very same one.
            assert before == f"169.254.169.254 via {vip} dev eth0"
            assert f"169.254.169.254 via {vip} dev eth0" in lab.dhcp(host, guest)
        assert lab.metadata(host, guest)["uuid"] == own
        report.append(f"{label}{host.name}: outage {outage(answers, cut):.2f} s, {len(answers)} "
                      f"answers, {sum(1 for x in answers if x[1] == 0)} connection "
                      "errors/timeouts")
    return report


def test_power_cut_of_the_metadata_next_hop_node(iso_lab: MultiHostLab) -> None:
    lab = iso_lab
    wait_for(lambda: {h for (h, t), alive in lab.agents_alive().items()
                      if alive and t == "DHCP agent"} == NODES, timeout=90)
    net, vip, guests = isolated_setup(lab, "iso-ha", "10.30.0.0/24")
    served = dhcp_hosts(lab, net["id"])
    # Exactly one of the two DHCP namespaces holds the address, and its agent says so.
    (victim_name,) = wait_for(lambda: holders(lab, net["id"], vip), timeout=60)
    assert victim_name in served
    wait_for(lambda: reported(lab, net["id"]) == {
        h: "active" if h == victim_name else "standby" for h in served}, timeout=60)
    routes_before = [metadata_route(lab, host, guest) for _, host, guest in guests]

    victim = lab.host(victim_name)
    survivor = (served - {victim_name}).pop()
    pollers = [Poller(lab, host, guest, f"iso-{i}") for i, (_, host, guest) in
               enumerate(guests)]
    try:
        wait_for(lambda: all(sum(1 for x in pl.answers() if x[1] == 200) >= 10
                             for pl in pollers), timeout=60)
        cut = time.time()
        lab.power_cut(victim)
        # Both guests get answers again: from the other DHCP namespace, now holding the
        # address, over the route they already have.
        wait_for(lambda: all(any(t > cut and st == 200 for t, st, _ in pl.answers())
                             for pl in pollers), timeout=60)
        assert holders(lab, net["id"], vip) == [survivor]
        # The failover pass moves the dead agent's DHCP port to the third node, which joins
        # as a backup: the survivor keeps the address.
        wait_for(lambda: dhcp_hosts(lab, net["id"]) == NODES - {victim_name}, timeout=90)
        moved = time.time()
        third = (NODES - served).pop()
        wait_for(lambda: reported(lab, net["id"]) == {survivor: "active", third: "standby"},
                 timeout=60)
        on = time.time()
        lab.power_on(victim)
        wait_for(lambda: all(alive for (h, _), alive in lab.agents_alive().items()
                             if h == victim_name), timeout=90)
        # Converged: the returning node builds nothing of the network (not scheduled there
        # any more), the address stays where it is, and the guests keep getting answers.
        wait_for(lambda: f"qdhcp-{net['id']}" not in victim.private_namespaces(), timeout=60)
        settle = time.time()
        wait_for(lambda: all(sum(1 for x in pl.answers() if x[0] > settle and x[1] == 200)
                             >= 15 for pl in pollers), timeout=60)
        assert holders(lab, net["id"], vip) == [survivor]
    finally:
        for pl in pollers:
            pl.stop()

    report = check_answers(lab, guests, pollers, routes_before, vip,
                           cut=cut, moved=moved, on=on)
    print(f"\npower cut of {victim_name} (metadata next hop of an isolated network): "
          + "; ".join(report))


def dhcp_agent_id(lab: MultiHostLab, host: str) -> str:
    return str(next(a["id"] for a in lab.cli("network", "agent", "list")
                    if a["host"] == host and a["agent_type"] == "DHCP agent"))


def kill_next_hop_keepalived(host: SimHost, network_id: str) -> None:
    """SIGKILL to the keepalived of the network's DHCP namespace on `host` (a process of this
    lab, found by its pid file): its address is taken over by the other DHCP namespace, and
    the agent starts it again as a backup."""
    pid = int((host.state / "dhcp_ha" / network_id / "keepalived.pid").read_text())
    os.kill(pid, signal.SIGKILL)


def test_power_cut_of_a_node_holding_the_active_router_and_the_next_hop(
        iso_lab: MultiHostLab) -> None:
    """Issue 11 item 5(c): the same node is the master of an HA router and holds an isolated
    network's metadata next hop; both fail over, every guest of both networks recovers."""
    lab = iso_lab
    wait_for(lambda: all(lab.agents_alive().get((h, t)) for h in NODES
                         for t in ("DHCP agent", "L3 agent")), timeout=120)
    # The router path: an HA router (2 L3 agents) on its own network, a guest per host.
    rnet = lab.cli("network", "create", "both-routed")
    rsub = lab.cli("subnet", "create", "both-routed", "--network", rnet["id"],
                   "--subnet-range", "10.41.0.0/24")
    router = lab.cli("router", "create", "both")["id"]
    assert lab.cli_raw("router", "add", "subnet", router, rsub["id"]).returncode == 0
    assert lab.cli("router", "show", router)["ha"] is True
    rguests = []
    for cmp in ("cmp-1", "cmp-2"):
        server = lab.cli("server", "create", f"vm-both-{cmp}", "--network", rnet["id"],
                         "--host", cmp)
        port = lab.cli("port", "list", "--device-id", server["id"])[0]
        host = lab.host(cmp)
        guest = lab.boot_guest(host, port["id"])
        assert "default via 10.41.0.1" in lab.dhcp(host, guest)
        rguests.append((server["id"], host, guest))
    for server_id, host, guest in rguests:
        assert lab.metadata(host, guest, within=90)["uuid"] == server_id
    victim_name = wait_for(lambda: active_host(lab, router), timeout=60)

    # The isolated path: served by the victim and one other node, the victim holding the
    # address (an admin moves the network onto the victim's DHCP agent if needed, and the
    # other holder's keepalived is killed once so that the victim takes the address over).
    net, vip, iguests = isolated_setup(lab, "both-iso", "10.42.0.0/24")
    if victim_name not in dhcp_hosts(lab, net["id"]):
        dropped = sorted(dhcp_hosts(lab, net["id"]))[0]
        lab.api("DELETE", f"/v2.0/agents/{dhcp_agent_id(lab, dropped)}/dhcp-networks/"
                          f"{net['id']}")
        lab.api("POST", f"/v2.0/agents/{dhcp_agent_id(lab, victim_name)}/dhcp-networks",
                {"network_id": net["id"]})
        assert vip_of(lab, net["id"]) == vip  # the next hop stays through the change
    other = (dhcp_hosts(lab, net["id"]) - {victim_name}).pop()
    wait_for(lambda: reported(lab, net["id"]).keys() == {victim_name, other}, timeout=60)
    if wait_for(lambda: holders(lab, net["id"], vip), timeout=60) != [victim_name]:
        kill_next_hop_keepalived(lab.host(other), net["id"])
        wait_for(lambda: holders(lab, net["id"], vip) == [victim_name], timeout=60)
    wait_for(lambda: reported(lab, net["id"]) == {victim_name: "active", other: "standby"},
             timeout=60)
    assert active_host(lab, router) == victim_name
    for server_id, host, guest in iguests:
        assert lab.metadata(host, guest, within=60)["uuid"] == server_id

    guests = [*rguests, *iguests]
    routes_before = [metadata_route(lab, host, guest) for _, host, guest in guests]
    victim = lab.host(victim_name)
    pollers = [Poller(lab, host, guest, f"both-{i}") for i, (_, host, guest) in
               enumerate(guests)]
    try:
        wait_for(lambda: all(sum(1 for x in pl.answers() if x[1] == 200) >= 10
                             for pl in pollers), timeout=60)
        cut = time.time()
        lab.power_cut(victim)
        wait_for(lambda: all(any(t > cut and st == 200 for t, st, _ in pl.answers())
                             for pl in pollers), timeout=60)
        assert holders(lab, net["id"], vip) == [other]
        # Rescheduling: the router's dead slot and the dead DHCP port both move away.
        wait_for(lambda: victim_name not in router_agents(lab, router)
                 and len(router_agents(lab, router)) == 2
                 and victim_name not in dhcp_hosts(lab, net["id"])
                 and len(dhcp_hosts(lab, net["id"])) == 2, timeout=90)
        moved = time.time()
        on = time.time()
        lab.power_on(victim)
        wait_for(lambda: all(alive for (h, _), alive in lab.agents_alive().items()
                             if h == victim_name), timeout=90)
        wait_for(lambda: not {f"qdhcp-{net['id']}", f"qrouter-{router}"}
                 & set(victim.private_namespaces()), timeout=60)
        settle = time.time()
        wait_for(lambda: all(sum(1 for x in pl.answers() if x[0] > settle and x[1] == 200)
                             >= 15 for pl in pollers), timeout=60)
        assert holders(lab, net["id"], vip) == [other]
    finally:
        for pl in pollers:
            pl.stop()

    report = check_answers(lab, rguests, pollers[:2], routes_before[:2], None,
                           cut=cut, moved=moved, on=on, label="router path ")
    report += check_answers(lab, iguests, pollers[2:], routes_before[2:], vip,
                            cut=cut, moved=moved, on=on, label="isolated path ")
    print(f"\npower cut of {victim_name} (active router and metadata next hop): "
          + "; ".join(report))
