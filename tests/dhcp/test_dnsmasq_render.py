"""dnsmasq's files rendered from decisions given as plain values (no plan, no options)."""

from __future__ import annotations

from datetime import UTC, datetime

from openimds.dhcp.dnsmasq_render import (
    default_gateway,
    dhcp_ranges,
    render_addn_hosts,
    render_host_file,
    render_opts,
)
from openimds.dhcp.model import NetworkInfo, PortInfo, SubnetInfo

T0 = datetime(2026, 1, 1, tzinfo=UTC)
V4 = SubnetInfo("s4", "10.0.0.0/24", 4, "10.0.0.1", True,
                host_routes=(("192.168.0.0/16", "10.0.0.254"),))
V6 = SubnetInfo("s6", "fd00::/64", 6, "fd00::1", True, ipv6_address_mode="dhcpv6-stateful",
                ipv6_ra_mode="dhcpv6-stateful")
VM = PortInfo("p-vm", "fa:16:3e:00:00:05", (("s4", "10.0.0.5"), ("s6", "fd00::5")),
              "compute:nova", "i", T0)
DHCP = PortInfo("p-dhcp", "fa:16:3e:00:00:02", (("s4", "10.0.0.2"),), "network:dhcp", "d", T0)
NET = NetworkInfo("n", "n", "p", 1500, (V4, V6), (DHCP, VM))


def test_opts_follow_the_given_next_hop_and_dhcp_servers() -> None:
    routed = render_opts(NET, "example", {"s4": None}, {})
    assert routed.splitlines() == [
        "tag:tag0,option:classless-static-route,192.168.0.0/16,10.0.0.254,0.0.0.0/0,10.0.0.1",
        "tag:tag0,249,192.168.0.0/16,10.0.0.254,0.0.0.0/0,10.0.0.1",
        "tag:tag0,option:router,10.0.0.1",
        "tag:tag1,option6:domain-search,example",
    ]
    via_dhcp = render_opts(NET, "", {"s4": "10.0.0.2"},
                           {"s4": ["10.0.0.2", "10.0.0.3"], "s6": ["fd00::2"]})
    assert via_dhcp.splitlines() == [
        "tag:tag0,option:classless-static-route,192.168.0.0/16,10.0.0.254,"
        "169.254.169.254/32,10.0.0.2,0.0.0.0/0,10.0.0.1",
        "tag:tag0,249,192.168.0.0/16,10.0.0.254,169.254.169.254/32,10.0.0.2,0.0.0.0/0,10.0.0.1",
        "tag:tag0,option:router,10.0.0.1",
        "tag:tag0,option:dns-server,10.0.0.2,10.0.0.3",
    ]


def test_hosts_files_skip_network_ports_and_bracket_ipv6() -> None:
    assert render_host_file(NET, "example") == (
        "fa:16:3e:00:00:05,host-10-0-0-5.example,10.0.0.5\n"
        "fa:16:3e:00:00:05,host-fd00--5.example,[fd00::5]\n"
    )
    assert render_addn_hosts(NET, "") == (
        "10.0.0.5\thost-10-0-0-5 host-10-0-0-5\nfd00::5\thost-fd00--5 host-fd00--5\n"
    )


def test_ranges_and_the_default_gateway() -> None:
    assert dhcp_ranges([V4, V6], 600, advertised={"s6"}) == (
        ["set:tag0,10.0.0.0,static,255.255.255.0,600s", "set:tag1,fd00::,static,64,600s"],
        256 + 2**64,
    )
    assert dhcp_ranges([V4], -1, advertised=())[0] == [
        "set:tag0,10.0.0.0,static,255.255.255.0,infinite"]
    no_gateway = SubnetInfo("s", "10.1.0.0/24", 4, None, True,
                            host_routes=(("0.0.0.0/0", "10.1.0.9"), ("0.0.0.0/0", "10.1.0.8")))
    assert default_gateway(no_gateway) == "10.1.0.9"
    assert default_gateway(V4) == "10.0.0.1"
