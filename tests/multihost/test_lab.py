"""End to end on several hosts: 2 network nodes (DHCP, L3, metadata and L2 agents,
dhcp_agents_per_network = 2) and 2 compute hosts (L2 agent), VXLAN tenant networks."""

from __future__ import annotations

from tests.support.multihost import MultiHostLab, wait_for

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
