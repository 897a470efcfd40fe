"""Table tests for the pure DHCP plan (spec neutron-metadata.md 3.1-3.6, seed-configs.md)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from openimds.dhcp.model import NetworkInfo, PortInfo, SubnetInfo, networks_from_neutron
from openimds.dhcp.plan import (
    DhcpOptions,
    desired_dhcp_state,
    dhcp_device_id,
    isolated_subnets,
    tap_name,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
NOW = datetime(2026, 6, 1, tzinfo=UTC)
ISO = DhcpOptions(enable_isolated_metadata=True, dhcp_confs="/var/lib/neutron/dhcp")


def port(pid, mac, ips, owner="compute:nova", device="vm", created=T0) -> PortInfo:
    return PortInfo(pid, mac, tuple(ips), owner, device, created)


def dhcp_port(pid, ips, mac="fa:16:3e:00:00:02", created=T0) -> PortInfo:
    return port(pid, mac, ips, "network:dhcp", "dhcp-x", created)


def router_port(pid, ips, router="r1", created=T0) -> PortInfo:
    return port(pid, "fa:16:3e:00:00:01", ips, "network:router_interface", router, created)


def net(subnets, ports, nid="18b28e2a-30a2-4374-83e1-54bdfeda66a3", mtu=1500) -> NetworkInfo:
    return NetworkInfo(nid, "n", "p", mtu, tuple(subnets), tuple(ports))


# --- seed 2, network 1: 192.168.111.0/24, no gateway, DHCP port .1, three DNS servers -------
SEED1_SUBNET = SubnetInfo(
    "s111",
    "192.168.111.0/24",
    4,
    None,
    True,
    dns_nameservers=("192.168.111.1", "192.168.111.3", "192.168.111.2"),
)
SEED1_DHCP = dhcp_port("25fabc7f-c2aa-4d3c-9a1e-000000000001", [("s111", "192.168.111.1")])
SEED1 = net([SEED1_SUBNET], [SEED1_DHCP])
SEED1_OPTS = (
    "tag:tag0,option:classless-static-route,169.254.169.254/32,192.168.111.1\n"
    "tag:tag0,249,169.254.169.254/32,192.168.111.1\n"
    "tag:tag0,option:router\n"
    "tag:tag0,option:dns-server,192.168.111.1,192.168.111.3,192.168.111.2\n"
)

# --- seed 2, network 2: 172.31.0.0/24, gateway .1, DHCP port .4 ------------------------------
NET2 = "f673b2b9-360f-4815-b308-362e4725fd85"
SEED2_SUBNET = SubnetInfo(
    "s172",
    "172.31.0.0/24",
    4,
    "172.31.0.1",
    True,
    dns_nameservers=("172.31.0.3", "172.31.0.2", "172.31.0.4"),
)
SEED2_DHCP = dhcp_port("3da34c9a-1d11-4c4c-8b8b-000000000004", [("s172", "172.31.0.4")])
SEED2_OPTS_ISOLATED = (
    "tag:tag0,option:classless-static-route,169.254.169.254/32,172.31.0.4,0.0.0.0/0,172.31.0.1\n"
    "tag:tag0,249,169.254.169.254/32,172.31.0.4,0.0.0.0/0,172.31.0.1\n"
    "tag:tag0,option:router,172.31.0.1\n"
    "tag:tag0,option:dns-server,172.31.0.3,172.31.0.2,172.31.0.4\n"
)
SEED2_OPTS_ROUTED = (
    "tag:tag0,option:classless-static-route,169.254.169.254/32,172.31.0.1,0.0.0.0/0,172.31.0.1\n"
    "tag:tag0,249,169.254.169.254/32,172.31.0.1,0.0.0.0/0,172.31.0.1\n"
    "tag:tag0,option:router,172.31.0.1\n"
    "tag:tag0,option:dns-server,172.31.0.3,172.31.0.2,172.31.0.4\n"
)
ATTACHED_AT = datetime(2026, 5, 31, 12, 0, tzinfo=UTC)  # 12 h before NOW


def seed2(router: bool) -> NetworkInfo:
    ports = [SEED2_DHCP]
    if router:
        ports.append(router_port("rp1", [("s172", "172.31.0.1")], "testrouter", ATTACHED_AT))
    return net([SEED2_SUBNET], ports, nid=NET2)


def test_seed1_isolated_no_gateway_opts_and_addresses() -> None:
    plan = desired_dhcp_state(SEED1, ISO, NOW)
    assert plan is not None
    assert plan.opts == SEED1_OPTS
    assert plan.namespace == "qdhcp-18b28e2a-30a2-4374-83e1-54bdfeda66a3"
    assert plan.interface == "tap25fabc7f-c2"  # as in the seed's `ip -4 a`
    assert plan.addresses == ("192.168.111.1/24", "169.254.169.254/32")
    assert plan.metadata_proxy and plan.next_change_at is None
    assert plan.proxy_router_id is None and not plan.proxy_bind_ipv6


def test_seed1_dnsmasq_command_line_has_the_seed_shape() -> None:
    plan = desired_dhcp_state(SEED1, ISO, NOW)
    assert plan is not None
    d = "/var/lib/neutron/dhcp/18b28e2a-30a2-4374-83e1-54bdfeda66a3"
    assert plan.dnsmasq.argv() == [
        "dnsmasq",
        "--keep-in-foreground",
        "--no-hosts",
        "--no-resolv",
        "--strict-order",
        "--bind-interfaces",
        "--interface=tap25fabc7f-c2",
        "--except-interface=lo",
        f"--pid-file={d}/pid",
        f"--dhcp-hostsfile={d}/host",
        f"--addn-hosts={d}/addn_hosts",
        f"--dhcp-optsfile={d}/opts",
        f"--dhcp-leasefile={d}/leases",
        "--dhcp-range=set:tag0,192.168.111.0,static,255.255.255.0,86400s",
        "--dhcp-lease-max=256",
        "--conf-file=/dev/null",
        # Not in the seed's line; Neutron adds it when the network has an MTU (option 26).
        "--dhcp-option-force=option:mtu,1500",
        "--domain=openstacklocal",
    ]
    assert set(plan.files()) == {f"{d}/host", f"{d}/addn_hosts", f"{d}/opts"}


def test_no_dns_adds_port_zero_and_servers_and_lease_options() -> None:
    opts = DhcpOptions(
        serve_dns=False,
        dnsmasq_dns_servers=("8.8.8.8",),
        dhcp_lease_duration=-1,
        dnsmasq_lease_max=100,
        dnsmasq_config_file="/etc/neutron/dnsmasq-neutron.conf",
    )
    plan = desired_dhcp_state(SEED1, opts, NOW)
    assert plan is not None
    argv = plan.dnsmasq.argv()
    assert argv[-1] == "--port=0"
    assert "--server=8.8.8.8" in argv
    assert "--dhcp-range=set:tag0,192.168.111.0,static,255.255.255.0,infinite" in argv
    assert "--dhcp-lease-max=100" in argv  # capped by dnsmasq_lease_max
    assert "--conf-file=/etc/neutron/dnsmasq-neutron.conf" in argv


def test_seed2_isolated_with_gateway() -> None:
    plan = desired_dhcp_state(seed2(router=False), ISO, NOW)
    assert plan is not None
    assert plan.opts == SEED2_OPTS_ISOLATED
    assert plan.addresses == ("172.31.0.4/24", "169.254.169.254/32")
    assert plan.metadata_proxy and plan.next_change_at is None


def test_seed2_router_attached_inside_lease_window() -> None:
    # The route moves to the gateway at once; address and proxy stay one lease time.
    plan = desired_dhcp_state(seed2(router=True), ISO, NOW)
    assert plan is not None
    assert plan.opts == SEED2_OPTS_ROUTED
    assert plan.metadata_proxy
    assert "169.254.169.254/32" in plan.addresses
    assert plan.next_change_at == ATTACHED_AT + timedelta(seconds=86400)
    assert plan.isolated == ()


@pytest.mark.parametrize(
    "delta, served",
    [
        (timedelta(seconds=0), True),
        (timedelta(seconds=86399), True),
        (timedelta(seconds=86400), False),  # the window is half-open: at its end it is over
        (timedelta(days=30), False),
    ],
)
def test_seed2_lease_window_edges(delta: timedelta, served: bool) -> None:
    plan = desired_dhcp_state(seed2(router=True), ISO, ATTACHED_AT + delta)
    assert plan is not None
    assert plan.opts == SEED2_OPTS_ROUTED  # opts never depend on the clock
    assert plan.metadata_proxy is served
    assert ("169.254.169.254/32" in plan.addresses) is served
    assert plan.next_change_at == (ATTACHED_AT + timedelta(days=1) if served else None)
    assert plan.addresses[0] == "172.31.0.4/24"


def test_lease_window_follows_lease_duration_and_is_restart_proof() -> None:
    opts = DhcpOptions(enable_isolated_metadata=True, dhcp_lease_duration=600)
    a = desired_dhcp_state(seed2(True), opts, ATTACHED_AT + timedelta(seconds=599))
    b = desired_dhcp_state(seed2(True), opts, ATTACHED_AT + timedelta(seconds=599))
    assert a == b and a is not None and a.metadata_proxy
    c = desired_dhcp_state(seed2(True), opts, ATTACHED_AT + timedelta(seconds=601))
    assert c is not None and not c.metadata_proxy


def test_infinite_lease_keeps_proxy_forever() -> None:
    opts = DhcpOptions(enable_isolated_metadata=True, dhcp_lease_duration=-1)
    plan = desired_dhcp_state(seed2(True), opts, NOW + timedelta(days=3650))
    assert plan is not None and plan.metadata_proxy and plan.next_change_at is None


def test_all_metadata_options_off_routed_subnet_still_gets_gateway_route() -> None:
    # Liberty+ (LP #1460793): non-isolated subnet with gateway -> route via the gateway.
    plan = desired_dhcp_state(seed2(router=True), DhcpOptions(), NOW)
    assert plan is not None
    assert plan.opts == SEED2_OPTS_ROUTED
    assert not plan.metadata_proxy
    assert plan.addresses == ("172.31.0.4/24",)


def test_all_metadata_options_off_isolated_subnet_gets_no_metadata_route() -> None:
    plan = desired_dhcp_state(seed2(router=False), DhcpOptions(), NOW)
    assert plan is not None
    assert plan.opts == (
        "tag:tag0,option:router,172.31.0.1\n"
        "tag:tag0,option:dns-server,172.31.0.3,172.31.0.2,172.31.0.4\n"
    )
    assert not plan.metadata_proxy and plan.addresses == ("172.31.0.4/24",)


def test_force_metadata_routes_via_dhcp_port_even_with_router() -> None:
    plan = desired_dhcp_state(seed2(router=True), DhcpOptions(force_metadata=True), NOW)
    assert plan is not None
    assert plan.opts == SEED2_OPTS_ISOLATED
    assert plan.metadata_proxy and plan.next_change_at is None
    assert "169.254.169.254/32" in plan.addresses


def test_router_on_non_gateway_ip_keeps_subnet_isolated() -> None:
    network = net([SEED2_SUBNET], [SEED2_DHCP, router_port("rp", [("s172", "172.31.0.9")])])
    assert isolated_subnets(network) == {"s172": True}
    plan = desired_dhcp_state(network, ISO, NOW)
    assert plan is not None and plan.opts == SEED2_OPTS_ISOLATED and plan.metadata_proxy


# --- spec 3.4 examples (Neutron unit-test values) -------------------------------------------
def test_spec_router_attached_with_host_route() -> None:
    subnet = SubnetInfo(
        "a", "192.168.0.0/24", 4, "192.168.0.1", True, host_routes=(("20.0.0.1/24", "20.0.0.1"),)
    )
    network = net(
        [subnet], [dhcp_port("d", [("a", "192.168.0.2")]), router_port("r", [("a", "192.168.0.1")])]
    )
    plan = desired_dhcp_state(network, ISO, NOW)
    assert plan is not None
    routes = "20.0.0.1/24,20.0.0.1,169.254.169.254/32,192.168.0.1,0.0.0.0/0,192.168.0.1"
    assert plan.opts.splitlines()[:3] == [
        f"tag:tag0,option:classless-static-route,{routes}",
        f"tag:tag0,249,{routes}",
        "tag:tag0,option:router,192.168.0.1",
    ]


def test_spec_isolated_with_gateway() -> None:
    subnet = SubnetInfo("a", "192.168.1.0/24", 4, "192.168.1.1", True)
    plan = desired_dhcp_state(net([subnet], [dhcp_port("d", [("a", "192.168.1.2")])]), ISO, NOW)
    assert plan is not None
    assert plan.opts == (
        "tag:tag0,option:classless-static-route,169.254.169.254/32,192.168.1.2,0.0.0.0/0,192.168.1.1\n"
        "tag:tag0,249,169.254.169.254/32,192.168.1.2,0.0.0.0/0,192.168.1.1\n"
        "tag:tag0,option:router,192.168.1.1\n"
    )


def test_spec_isolated_without_gateway() -> None:
    subnet = SubnetInfo("a", "192.168.1.0/24", 4, None, True)
    plan = desired_dhcp_state(net([subnet], [dhcp_port("d", [("a", "192.168.1.1")])]), ISO, NOW)
    assert plan is not None
    assert plan.opts == (
        "tag:tag0,option:classless-static-route,169.254.169.254/32,192.168.1.1\n"
        "tag:tag0,249,169.254.169.254/32,192.168.1.1\n"
        "tag:tag0,option:router\n"
    )


def test_spec_two_subnets_on_one_segment_get_on_link_routes_first() -> None:
    a = SubnetInfo("a", "192.168.0.0/24", 4, "192.168.0.1", True)
    b = SubnetInfo("b", "192.168.1.0/24", 4, "192.168.1.1", True)
    c = SubnetInfo("c", "192.168.2.0/24", 4, None, True)
    d = dhcp_port("d", [("a", "192.168.0.2"), ("b", "192.168.1.2"), ("c", "192.168.2.2")])
    plan = desired_dhcp_state(net([a, b, c], [d]), ISO, NOW)
    assert plan is not None
    lines = plan.opts.splitlines()
    assert lines[0] == (
        "tag:tag0,option:classless-static-route,192.168.2.0/24,0.0.0.0,192.168.1.0/24,0.0.0.0,"
        "169.254.169.254/32,192.168.0.2,0.0.0.0/0,192.168.0.1"
    )
    assert lines[3] == (
        "tag:tag1,option:classless-static-route,192.168.2.0/24,0.0.0.0,192.168.0.0/24,0.0.0.0,"
        "169.254.169.254/32,192.168.1.2,0.0.0.0/0,192.168.1.1"
    )
    assert lines[6] == (
        "tag:tag2,option:classless-static-route,192.168.1.0/24,0.0.0.0,192.168.0.0/24,0.0.0.0,"
        "169.254.169.254/32,192.168.2.2"
    )
    assert lines[8] == "tag:tag2,option:router"
    assert plan.addresses == (
        "192.168.0.2/24",
        "192.168.1.2/24",
        "192.168.2.2/24",
        "169.254.169.254/32",
    )
    assert plan.dnsmasq.ranges == (
        "set:tag0,192.168.0.0,static,255.255.255.0,86400s",
        "set:tag1,192.168.1.0,static,255.255.255.0,86400s",
        "set:tag2,192.168.2.0,static,255.255.255.0,86400s",
    )
    assert plan.dnsmasq.lease_max == 768


def test_default_host_route_becomes_the_gateway_when_none() -> None:
    subnet = SubnetInfo(
        "a",
        "10.0.0.0/24",
        4,
        None,
        True,
        host_routes=(("10.9.0.0/16", "10.0.0.7"), ("0.0.0.0/0", "10.0.0.254")),
    )
    plan = desired_dhcp_state(net([subnet], [dhcp_port("d", [("a", "10.0.0.2")])]), ISO, NOW)
    assert plan is not None
    routes = "10.9.0.0/16,10.0.0.7,169.254.169.254/32,10.0.0.2,0.0.0.0/0,10.0.0.254"
    assert plan.opts == (
        f"tag:tag0,option:classless-static-route,{routes}\n"
        f"tag:tag0,249,{routes}\n"
        "tag:tag0,option:router,10.0.0.254\n"
    )


def test_dns_any_address_suppresses_dns() -> None:
    subnet = SubnetInfo("a", "10.0.0.0/24", 4, None, True, dns_nameservers=("0.0.0.0",))
    plan = desired_dhcp_state(
        net([subnet], [dhcp_port("d", [("a", "10.0.0.2")])]), DhcpOptions(), NOW
    )
    assert plan is not None
    assert plan.opts == "tag:tag0,option:router\ntag:tag0,option:dns-server\n"


# --- IPv6 -------------------------------------------------------------------------------------
V6 = SubnetInfo(
    "v6",
    "2001:db8::/64",
    6,
    "2001:db8::1",
    True,
    dns_nameservers=("2001:db8::53", "2001:4860:4860::8888"),
    ipv6_address_mode="dhcpv6-stateful",
)


def test_ipv6_subnet_gets_no_routes_and_v6_dns_and_fe80_metadata() -> None:
    v4 = SubnetInfo("v4", "10.0.0.0/24", 4, "10.0.0.1", True)
    d = dhcp_port("d6d6d6d6-aaaa", [("v4", "10.0.0.2"), ("v6", "2001:db8::2")])
    vm = port("vm1", "fa:16:3e:aa:bb:cc", [("v4", "10.0.0.5"), ("v6", "2001:db8::5")])
    plan = desired_dhcp_state(net([v4, V6], [d, vm]), ISO, NOW)
    assert plan is not None
    assert plan.opts == (
        "tag:tag0,option:classless-static-route,169.254.169.254/32,10.0.0.2,0.0.0.0/0,10.0.0.1\n"
        "tag:tag0,249,169.254.169.254/32,10.0.0.2,0.0.0.0/0,10.0.0.1\n"
        "tag:tag0,option:router,10.0.0.1\n"
        "tag:tag1,option6:dns-server,[2001:db8::53],[2001:4860:4860::8888]\n"
        "tag:tag1,option6:domain-search,openstacklocal\n"
    )
    assert plan.addresses == (
        "10.0.0.2/24",
        "2001:db8::2/64",
        "169.254.169.254/32",
        "fe80::a9fe:a9fe/128",
    )
    assert plan.proxy_bind_ipv6
    assert plan.dnsmasq.ranges[1] == "set:tag1,2001:db8::,static,64,86400s"
    assert plan.host_file == (
        "fa:16:3e:aa:bb:cc,host-10-0-0-5.openstacklocal,10.0.0.5\n"
        "fa:16:3e:aa:bb:cc,host-2001-db8--5.openstacklocal,[2001:db8::5]\n"
    )
    assert plan.addn_hosts == (
        "10.0.0.5\thost-10-0-0-5.openstacklocal host-10-0-0-5\n"
        "2001:db8::5\thost-2001-db8--5.openstacklocal host-2001-db8--5\n"
    )


def test_fe80_metadata_only_while_no_router_serves_the_ipv6_subnet() -> None:
    # The v4 subnet stays isolated (metadata over the DHCP port), but the router holds
    # fe80::a9fe:a9fe on the v6 link: a second owner would fight it over neighbour discovery.
    v4 = SubnetInfo("v4", "10.0.0.0/24", 4, None, True)
    d = dhcp_port("d", [("v4", "10.0.0.2"), ("v6", "2001:db8::2")])
    r = router_port("r", [("v6", "2001:db8::1")])
    opts = DhcpOptions(enable_isolated_metadata=True)
    plan = desired_dhcp_state(net([v4, V6], [d, r]), opts, NOW)
    assert plan is not None and plan.metadata_proxy
    assert "fe80::a9fe:a9fe/128" not in plan.addresses and not plan.proxy_bind_ipv6


def test_ipv6_only_network_without_host_ipv6() -> None:
    d = dhcp_port("d", [("v6", "2001:db8::2")])
    opts = DhcpOptions(enable_isolated_metadata=True, ipv6_enabled=False)
    plan = desired_dhcp_state(net([V6], [d]), opts, NOW)
    assert plan is not None
    assert "classless-static-route" not in plan.opts and "option:router" not in plan.opts
    assert plan.addresses == ("2001:db8::2/64", "169.254.169.254/32")
    assert plan.metadata_proxy and not plan.proxy_bind_ipv6


def test_slaac_subnet_has_no_opts_no_range_no_host_entries() -> None:
    slaac = SubnetInfo("s", "2001:db8:1::/64", 6, "2001:db8:1::1", True, ipv6_address_mode="slaac")
    v4 = SubnetInfo("v4", "10.0.0.0/24", 4, None, True)
    d = dhcp_port("d", [("v4", "10.0.0.2"), ("s", "2001:db8:1::2")])
    vm = port("vm", "fa:16:3e:00:00:05", [("v4", "10.0.0.5"), ("s", "2001:db8:1::5")])
    plan = desired_dhcp_state(net([v4, slaac], [d, vm]), DhcpOptions(), NOW)
    assert plan is not None
    assert "tag1" not in plan.opts
    assert plan.dnsmasq.ranges == ("set:tag0,10.0.0.0,static,255.255.255.0,86400s",)
    assert plan.host_file == "fa:16:3e:00:00:05,host-10-0-0-5.openstacklocal,10.0.0.5\n"


@pytest.mark.parametrize("mode,range_mode,enable_ra", [
    ("slaac", "ra-only", False),
    ("dhcpv6-stateless", "ra-stateless", False),
    ("dhcpv6-stateful", "static", True),
])
def test_isolated_ipv6_subnet_gets_router_advertisements(mode: str, range_mode: str,
                                                         enable_ra: bool) -> None:
    sub = SubnetInfo("s", "2001:db8:1::/64", 6, None, True, ipv6_address_mode=mode,
                     ipv6_ra_mode=mode)
    d = dhcp_port("d0d0d0d0-1111", [("s", "2001:db8:1::2")])
    plan = desired_dhcp_state(net([sub], [d]), ISO, NOW)
    assert plan is not None
    assert plan.dnsmasq.ranges == (f"set:tag0,2001:db8:1::,{range_mode},64,86400s",)
    argv = plan.dnsmasq.argv()
    # Router lifetime 0: the DHCP port is nobody's default router.
    assert f"--ra-param={plan.interface},mtu:1500,100,0" in argv
    assert ("--enable-ra" in argv) is enable_ra


def test_no_advertisements_from_the_dhcp_port_when_a_router_or_nobody_owns_them() -> None:
    # A router port holds the gateway: the router advertises (l3 plan), not the DHCP port.
    routed = SubnetInfo("s", "2001:db8:1::/64", 6, "2001:db8:1::1", True,
                        ipv6_address_mode="dhcpv6-stateless", ipv6_ra_mode="dhcpv6-stateless")
    d = dhcp_port("d", [("s", "2001:db8:1::2")])
    r = router_port("r", [("s", "2001:db8:1::1")])
    plan = desired_dhcp_state(net([routed], [d, r]), ISO, NOW)
    assert plan is not None
    assert plan.dnsmasq.ranges == ("set:tag0,2001:db8:1::,static,64,86400s",)
    assert not any(a.startswith(("--ra-param", "--enable-ra")) for a in plan.dnsmasq.argv())
    # No ipv6_ra_mode: an external router sends them.
    external = SubnetInfo("s", "2001:db8:1::/64", 6, None, True, ipv6_address_mode="slaac")
    plan = desired_dhcp_state(net([external], [d]), ISO, NOW)
    assert plan is not None and plan.dnsmasq.ranges == ()
    assert not any(a.startswith("--ra-param") for a in plan.dnsmasq.argv())


# --- enable_metadata_network (spec 3.6) -------------------------------------------------------
def test_metadata_network_proxy_identifies_router() -> None:
    meta = SubnetInfo("m", "169.254.169.252/30", 4, "169.254.169.253", True)
    network = net(
        [meta],
        [
            dhcp_port("d", [("m", "169.254.169.254")]),
            router_port("rp", [("m", "169.254.169.253")], router="rtr-1"),
        ],
    )
    on = DhcpOptions(enable_isolated_metadata=True, enable_metadata_network=True)
    plan = desired_dhcp_state(network, on, NOW)
    assert plan is not None
    assert plan.metadata_proxy and plan.proxy_router_id == "rtr-1"
    # The DHCP port already holds 169.254.169.254: no second copy of it.
    assert plan.addresses == ("169.254.169.254/30",)
    assert plan.next_change_at is None
    # Without enable_metadata_network it is an ordinary routed subnet (old router port).
    off = desired_dhcp_state(network, ISO, NOW)
    assert off is not None and not off.metadata_proxy
    # enable_metadata_network needs enable_isolated_metadata.
    alone = desired_dhcp_state(network, DhcpOptions(enable_metadata_network=True), NOW)
    assert alone is not None and not alone.metadata_proxy


def test_ovn_metadata_port_takes_the_route_and_no_proxy() -> None:
    subnet = SubnetInfo("a", "10.0.0.0/24", 4, None, True)
    ovn = port("o", "fa:16:3e:00:00:09", [("a", "10.0.0.9")], "network:distributed", "ovnmeta-n")
    plan = desired_dhcp_state(
        net([subnet], [dhcp_port("d", [("a", "10.0.0.2")]), ovn]),
        DhcpOptions(force_metadata=True),
        NOW,
    )
    assert plan is not None
    assert plan.opts.splitlines()[0] == (
        "tag:tag0,option:classless-static-route,169.254.169.254/32,10.0.0.9"
    )
    assert not plan.metadata_proxy and plan.addresses == ("10.0.0.2/24",)


# --- nothing to do ----------------------------------------------------------------------------
def test_no_dhcp_subnet_or_no_dhcp_port_means_nothing() -> None:
    off = SubnetInfo("a", "10.0.0.0/24", 4, None, False)
    assert desired_dhcp_state(net([off], [dhcp_port("d", [("a", "10.0.0.2")])]), ISO, NOW) is None
    on = SubnetInfo("a", "10.0.0.0/24", 4, None, True)
    assert desired_dhcp_state(net([on], []), ISO, NOW) is None
    assert desired_dhcp_state(net([], []), ISO, NOW) is None


def test_dhcp_port_is_chosen_by_device_id() -> None:
    subnet = SubnetInfo("a", "10.0.0.0/24", 4, None, True)
    nid = "netid"
    mine = PortInfo(
        "p-mine",
        "fa:16:3e:00:00:03",
        (("a", "10.0.0.3"),),
        "network:dhcp",
        dhcp_device_id("node-2", nid),
        T0 + timedelta(hours=1),
    )
    other = PortInfo(
        "p-other",
        "fa:16:3e:00:00:02",
        (("a", "10.0.0.2"),),
        "network:dhcp",
        dhcp_device_id("node-1", nid),
        T0,
    )
    network = net([subnet], [other, mine], nid=nid)
    plan = desired_dhcp_state(
        network, DhcpOptions(dhcp_port_device_id=dhcp_device_id("node-2", nid)), NOW
    )
    assert plan is not None and plan.port_id == "p-mine" and plan.addresses == ("10.0.0.3/24",)
    oldest = desired_dhcp_state(network, DhcpOptions(), NOW)
    assert oldest is not None and oldest.port_id == "p-other"
    assert (
        desired_dhcp_state(network, DhcpOptions(dhcp_port_device_id="dhcp-elsewhere"), NOW) is None
    )


def test_host_file_skips_dhcp_and_floating_ports_and_sorts_by_port_id() -> None:
    subnet = SubnetInfo("a", "10.0.0.0/24", 4, "10.0.0.1", True)
    ports = [
        port("zz", "fa:16:3e:00:00:0b", [("a", "10.0.0.11")]),
        dhcp_port("d", [("a", "10.0.0.2")]),
        port("fip", "fa:16:3e:00:00:0f", [("a", "10.0.0.15")], "network:floatingip"),
        router_port("rp", [("a", "10.0.0.1")]),
        port("aa", "FA:16:3E:00:00:0A".lower(), [("a", "10.0.0.10")]),
    ]
    plan = desired_dhcp_state(net([subnet], ports), DhcpOptions(dns_domain=""), NOW)
    assert plan is not None
    assert plan.host_file == (
        "fa:16:3e:00:00:0a,host-10-0-0-10,10.0.0.10\n"
        "fa:16:3e:00:00:01,host-10-0-0-1,10.0.0.1\n"
        "fa:16:3e:00:00:0b,host-10-0-0-11,10.0.0.11\n"
    )
    assert "--domain" not in " ".join(plan.dnsmasq.argv())


def test_tap_name_is_neutrons() -> None:
    assert tap_name("25fabc7f-c2aa-4d3c-9a1e-000000000001") == "tap25fabc7f-c2"
    assert len(tap_name("x" * 36)) == 14


def test_from_neutron_converts_api_bodies() -> None:
    networks = {
        "networks": [
            {"id": "n1", "name": "net", "project_id": "p", "mtu": 1450, "subnets": ["s2", "s1"]}
        ]
    }
    subnets = {
        "subnets": [
            {
                "id": "s1",
                "network_id": "n1",
                "cidr": "10.0.1.0/24",
                "ip_version": 4,
                "gateway_ip": None,
                "enable_dhcp": True,
                "host_routes": [],
                "dns_nameservers": [],
                "allocation_pools": [{"start": "10.0.1.2", "end": "10.0.1.254"}],
            },
            {
                "id": "s2",
                "network_id": "n1",
                "cidr": "10.0.0.0/24",
                "ip_version": 4,
                "gateway_ip": "10.0.0.1",
                "enable_dhcp": True,
                "host_routes": [{"destination": "10.9.0.0/16", "nexthop": "10.0.0.9"}],
                "dns_nameservers": ["10.0.0.53"],
                "allocation_pools": [],
            },
            {"id": "sx", "network_id": "other", "cidr": "10.7.0.0/24", "ip_version": 4},
        ]
    }
    ports = {
        "ports": [
            {
                "id": "p1",
                "network_id": "n1",
                "mac_address": "FA:16:3E:00:00:02",
                "fixed_ips": [{"subnet_id": "s2", "ip_address": "10.0.0.2"}],
                "device_owner": "network:dhcp",
                "device_id": "dhcpx-n1",
                "created_at": "2026-01-02T03:04:05Z",
            },
            {
                "id": "p9",
                "network_id": "other",
                "mac_address": "fa:16:3e:00:00:09",
                "fixed_ips": [],
            },
        ]
    }
    got = networks_from_neutron(networks, subnets, ports)["n1"]
    assert [s.id for s in got.subnets] == ["s2", "s1"]
    assert got.mtu == 1450
    assert got.subnets[0].host_routes == (("10.9.0.0/16", "10.0.0.9"),)
    assert got.subnets[1].allocation_pools == (("10.0.1.2", "10.0.1.254"),)
    assert got.ports == (
        PortInfo(
            "p1",
            "fa:16:3e:00:00:02",
            (("s2", "10.0.0.2"),),
            "network:dhcp",
            "dhcpx-n1",
            datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        ),
    )


def test_networks_from_neutron_equals_one_network_at_a_time() -> None:
    """The grouped build (one pass over the rows) gives what filtering per network gives,
    also with a subnet that names no network (it counts for each) and in Neutron's order."""
    from openimds.dhcp.model import network_from_neutron

    networks = [{"id": "n1", "subnets": ["s2", "s1"]}, {"id": "n2"}, {"id": "n3"}]
    subnets = [
        {"id": "s1", "network_id": "n1", "cidr": "10.0.0.0/24", "ip_version": 4},
        {"id": "s2", "network_id": "n1", "cidr": "10.0.1.0/24", "ip_version": 4},
        {"id": "s3", "network_id": "n2", "cidr": "10.0.2.0/24", "ip_version": 4},
    ]
    ports = [
        {"id": f"p{i}", "network_id": ["n1", "n2", "n1", "n9"][i % 4],
         "mac_address": f"FA:16:3E:00:00:{i:02x}",
         "fixed_ips": [{"subnet_id": "s1", "ip_address": f"10.0.0.{i + 10}"}]}
        for i in range(12)
    ]
    for subs in (subnets, [*subnets, {"id": "s4", "cidr": "10.0.3.0/24", "ip_version": 4}]):
        got = networks_from_neutron(networks, subs, ports)
        assert got == {n["id"]: network_from_neutron(n, subs, ports) for n in networks}
    got = networks_from_neutron(networks, subnets, ports)
    assert [s.id for s in got["n1"].subnets] == ["s2", "s1"]
    assert [p.id for p in got["n1"].ports] == ["p0", "p2", "p4", "p6", "p8", "p10"]
    assert got["n3"].ports == () and got["n3"].subnets == ()
