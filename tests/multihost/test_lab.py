"""End to end on several hosts: 2 network nodes (DHCP, L3, metadata and L2 agents,
dhcp_agents_per_network = 2) and 2 compute hosts (L2 agent), VXLAN tenant networks."""

from __future__ import annotations

from tests.multihost.conftest import DOWN_TIME
from tests.support.multihost import MultiHostLab, SimHost, wait_for

EXPECTED = {("net-1", "DHCP agent"), ("net-2", "DHCP agent"), ("net-1", "L3 agent"),
            ("net-2", "L3 agent"), ("net-1", "Metadata agent"), ("net-2", "Metadata agent"),
            ("net-1", "Linux bridge agent"), ("net-2", "Linux bridge agent"),
            ("cmp-1", "Linux bridge agent"), ("cmp-2", "Linux bridge agent")}


def test_every_agent_registers_alive(lab: MultiHostLab) -> None:
    wait_for(lambda: {k for k, alive in lab.agents_alive().items() if alive} >= EXPECTED,
             timeout=60)


def test_guests_on_both_compute_hosts_lease_over_vxlan_and_get_their_metadata(
        lab: MultiHostLab) -> None:
    wait_for(lambda: {k for k, alive in lab.agents_alive().items() if alive} >= EXPECTED,
             timeout=60)
    net = lab.cli("net-create", "test-metadata-in-dhcp")
    assert net["provider:network_type"] == "vxlan"
    lab.cli("subnet-create", "--no-gateway", "--name", "test-metadata-in-dhcp",
            "test-metadata-in-dhcp", "192.168.111.0/24")
    dhcp = lab.cli("port", "list", "--network", net["id"], "--device-owner", "network:dhcp")
    assert sorted(p["binding:host_id"] for p in dhcp) == ["net-1", "net-2"]
    dhcp_ips = [p["fixed_ips"][0]["ip_address"] for p in dhcp]
    servers = {}
    for host in ("cmp-1", "cmp-2"):
        servers[host] = lab.cli("server", "create", f"vm-{host}", "--network", net["id"],
                                "--host", host)
    dns_lines = set()
    for name in ("net-1", "net-2"):
        opts = lab.host(name).state / "dhcp" / net["id"] / "opts"
        wait_for(opts.exists, timeout=60)
        dns_lines |= {line for line in opts.read_text().splitlines() if "dns-server" in line}
    # Both DHCP servers named, in one order that every network node agrees on (seed 002).
    (line,) = dns_lines
    assert sorted(line.split("option:dns-server,")[1].split(",")) == sorted(dhcp_ips)
    for host_name, server in servers.items():
        host = lab.host(host_name)
        port = lab.cli("port", "list", "--device-id", server["id"])[0]
        assert port["binding:host_id"] == host_name
        guest = lab.boot_guest(host, port["id"])
        routes = lab.dhcp(host, guest)
        assert "169.254.169.254 via" in routes, routes
        meta = lab.metadata(host, guest)
        assert meta["uuid"] == server["id"] and meta["name"] == f"vm-{host_name}"


def _guest_on_bound_host(lab: MultiHostLab, server_id: str) -> tuple[SimHost, str]:
    port = lab.cli("port", "list", "--device-id", server_id)[0]
    host = lab.host(port["binding:host_id"])
    return host, lab.boot_guest(host, port["id"])


def test_router_path_on_the_l3_agents_host(lab: MultiHostLab) -> None:
    net = lab.cli("net-create", "test-metadata-in-dhcp-with-gw")
    lab.cli("subnet-create", "--name", "test-metadata-in-dhcp-with-gw",
            "test-metadata-in-dhcp-with-gw", "172.31.0.0/24")
    router = lab.cli("router-create", "testrouter")
    lab.cli_raw("router-interface-add", "testrouter", "test-metadata-in-dhcp-with-gw")
    hosts = {p["binding:host_id"] for p in lab.cli("port", "list", "--device-id",
                                                   router["id"])}
    assert len(hosts) == 1 and hosts <= {"net-1", "net-2"}
    agent = {"host": hosts.pop()}
    server = lab.cli("server", "create", "vm-routed", "--network", net["id"], "--host", "cmp-2")
    host, guest = _guest_on_bound_host(lab, server["id"])
    routes = lab.dhcp(host, guest)
    assert "default via 172.31.0.1" in routes, routes
    assert lab.metadata(host, guest)["uuid"] == server["id"]
    # Only the chosen L3 agent built the router.
    other = "net-2" if agent["host"] == "net-1" else "net-1"
    assert f"qrouter-{router['id']}" in lab.host(agent["host"]).private_namespaces()
    assert f"qrouter-{router['id']}" not in lab.host(other).private_namespaces()


def test_two_projects_on_the_same_cidr_never_see_each_other(lab: MultiHostLab) -> None:
    guests = {}
    for project in ("proj-a", "proj-b"):
        lab.admin_cmd("project", "create", project, "--or-show")
        lab.admin_cmd("user", "create", f"user-{project}", "--project", project, "--password",
                      "pw", "--or-show")
        creds = {"user": f"user-{project}", "project": project, "password": "pw"}
        net = lab.cli("network", "create", f"net-{project}", **creds)
        lab.cli("subnet", "create", f"sub-{project}", "--network", net["id"], "--subnet-range",
                "10.0.0.0/24", **creds)
        server = lab.cli("server", "create", f"vm-{project}", "--network", net["id"], **creds)
        host, guest = _guest_on_bound_host(lab, server["id"])
        lab.dhcp(host, guest)
        guests[project] = (server, host, guest)
    for server, host, guest in guests.values():
        meta = lab.metadata(host, guest)
        assert meta["uuid"] == server["id"] and meta["project_id"] == server["tenant_id"]


def _state(host: SimHost) -> dict[str, object]:
    """Files, addresses and dnsmasq pids of every qdhcp namespace on a network node."""
    out: dict[str, object] = {}
    for ns in sorted(n for n in host.private_namespaces() if n.startswith("qdhcp-")):
        net_id = ns.removeprefix("qdhcp-")
        conf = host.state / "dhcp" / net_id
        out[ns] = (
            {f: (conf / f).read_text() for f in ("opts", "host", "pid") if (conf / f).exists()},
            host.run("ip", "-n", ns, "-br", "addr").stdout,
        )
    return out


def test_stopped_host_turns_dead_and_a_restart_converges_to_the_same_state(
        lab: MultiHostLab) -> None:
    node = lab.host("net-1")
    before = _state(node)
    assert before, "net-1 serves no network"
    node.stop_agents()
    wait_for(lambda: not any(alive for (h, _), alive in lab.agents_alive().items()
                             if h == "net-1"), timeout=DOWN_TIME * 4)
    node.start_agents()
    wait_for(lambda: all(alive for (h, _), alive in lab.agents_alive().items() if h == "net-1"),
             timeout=60)
    wait_for(lambda: _state(node) == before, timeout=60)


def test_flat_provider_network_on_a_physnet(lab: MultiHostLab) -> None:
    """A flat segment on physnet1 (each host's `ph0`). The VLAN variant needs 802.1Q in the
    kernel (CONFIG_VLAN_8021Q); its plan and diff are table-tested in tests/l2."""
    net = lab.cli("network", "create", "flat-1", "--provider-network-type", "flat",
                  "--provider-physical-network", "physnet1")
    assert (net["provider:network_type"], net["provider:segmentation_id"]) == ("flat", None)
    lab.cli("subnet", "create", "flat-1", "--network", net["id"], "--subnet-range",
            "10.99.0.0/24", "--no-gateway")
    server = lab.cli("server", "create", "vm-flat", "--network", net["id"], "--host", "cmp-1")
    host, guest = _guest_on_bound_host(lab, server["id"])
    assert "169.254.169.254 via" in lab.dhcp(host, guest)
    assert lab.metadata(host, guest)["uuid"] == server["id"]
    brq = f"brq{net['id'][:11]}"
    assert f"master {brq}" in host.run("ip", "-o", "link", "show", "ph0").stdout
