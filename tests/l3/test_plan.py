"""Table tests for the pure router plan and the iptables-restore renderer (spec 4.1, 4.3)."""

from __future__ import annotations

import pytest

from openimds.l3.model import RouterInfo, RouterInterface, routers_from_neutron
from openimds.l3.plan import L3Options, desired_router_state, qr_name, render_iptables_restore
from openimds.linux.iptables import parse_iptables_save

RID = "28120946-9f6a-4638-9747-603977b49816"
ROUTER = RouterInfo(
    RID,
    "testrouter",
    "p",
    (
        RouterInterface("bbbbbbbb-2222-4000", "net-b", "fa:16:3e:00:00:0b", ("172.31.0.1/24",)),
        RouterInterface("aaaaaaaa-1111-4000", "net-a", "fa:16:3e:00:00:0a", ("10.0.0.1/24",), 1450),
    ),
)
P = "openimds-l3-"

FULL_V4 = (
    ("mangle", "PREROUTING", f"-j {P}PREROUTING"),
    (
        "mangle",
        f"{P}PREROUTING",
        "-d 169.254.169.254/32 -i qr-+ -p tcp -m tcp --dport 80 -j MARK --set-xmark 0x1/0xffff",
    ),
    ("filter", "FORWARD", f"-j {P}FORWARD"),
    ("filter", f"{P}FORWARD", "-m mark --mark 0x1/0xffff -j DROP"),
    ("nat", "PREROUTING", f"-j {P}PREROUTING"),
    (
        "nat",
        f"{P}PREROUTING",
        "-d 169.254.169.254/32 -i qr-+ -p tcp -m tcp --dport 80 -j REDIRECT --to-ports 9697",
    ),
    ("filter", "INPUT", f"-j {P}INPUT"),
    ("filter", f"{P}INPUT", "-m mark --mark 0x1/0xffff -j ACCEPT"),
    ("filter", f"{P}INPUT", "-p tcp -m tcp --dport 9697 -j DROP"),
)
# With the proxy on: the token PUT's hop limit, DSCP → TTL, then DSCP cleared
# (proxy/hoplimit.py); 64 is the kernel's default TTL and needs no rule.
HOP_V4 = (
    ("mangle", "OUTPUT", f"-p tcp -j {P}OUTPUT"),
    *(("mangle", f"{P}OUTPUT", f"-m dscp --dscp 0x{n:02x} -j TTL --ttl-set {n}")
      for n in range(1, 64)),
    ("mangle", f"{P}OUTPUT", "-m dscp ! --dscp 0x00 -j DSCP --set-dscp 0x00"),
)


def test_router_plan_defaults() -> None:
    plan = desired_router_state(ROUTER, L3Options())
    assert plan.namespace == f"qrouter-{RID}"
    assert [p.name for p in plan.ports] == ["qr-aaaaaaaa-11", "qr-bbbbbbbb-22"]
    assert plan.ports[0].network_id == "net-a" and plan.ports[0].mtu == 1450
    # The gateway, and fe80::a9fe:a9fe for IPv6 guests (router path).
    assert plan.ports[1].addresses == ("172.31.0.1/24", "fe80::a9fe:a9fe/128")
    assert plan.ports[1].mac_address == "fa:16:3e:00:00:0b"
    assert plan.sysctls == (("net.ipv4.ip_forward", "1"), ("net.ipv6.conf.all.forwarding", "1"))
    assert plan.rules == FULL_V4 + HOP_V4
    assert plan.metadata_proxy and plan.proxy_listen == ("::", 9697)
    assert all("fe80::a9fe:a9fe/128" in r for _, c, r in plan.rules6 if c == f"{P}PREROUTING")


def test_seed_redirect_rule_is_ours_with_our_prefix() -> None:
    # Seed 2: -A neutron-l3-agent-PREROUTING -d 169.254.169.254/32 -i qr-+ -p tcp -m tcp
    #          --dport 80 -j REDIRECT --to-ports 9697
    plan = desired_router_state(ROUTER, L3Options(chain_prefix="neutron-l3-agent-"))
    nat = [r for t, c, r in plan.rules if t == "nat" and c == "neutron-l3-agent-PREROUTING"]
    assert nat == [
        "-d 169.254.169.254/32 -i qr-+ -p tcp -m tcp --dport 80 -j REDIRECT --to-ports 9697"
    ]


def test_proxy_disabled_keeps_mark_and_forward_drop_only() -> None:
    plan = desired_router_state(ROUTER, L3Options(enable_metadata_proxy=False, ipv6_enabled=False))
    assert plan.rules == FULL_V4[:4]
    assert not plan.metadata_proxy and plan.proxy_listen is None
    assert plan.rules6 == () and plan.sysctls == (("net.ipv4.ip_forward", "1"),)


def test_custom_port_and_mark_are_canonicalised() -> None:
    plan = desired_router_state(
        ROUTER, L3Options(metadata_port=9698, metadata_access_mark="10", ipv6_enabled=False)
    )
    text = "\n".join(r for _, _, r in plan.rules)
    assert "--set-xmark 0xa/0xffff" in text and "--mark 0xa/0xffff -j ACCEPT" in text
    assert "--to-ports 9698" in text and "--dport 9698 -j DROP" in text
    assert plan.proxy_listen == ("0.0.0.0", 9698)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"chain_prefix": "a-much-too-long-prefix-"},
        {"metadata_port": 0},
        {"metadata_access_mark": "zz"},
    ],
)
def test_bad_options_are_rejected(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        L3Options(**kwargs)


def test_qr_name() -> None:
    assert qr_name("4cc7cb93-8b8b-4859-93b1-628031b04f4c") == "qr-4cc7cb93-8b"


def test_render_fresh_namespace() -> None:
    assert render_iptables_restore(FULL_V4) == (
        "*mangle\n"
        f":{P}PREROUTING - [0:0]\n"
        f"-A {P}PREROUTING -d 169.254.169.254/32 -i qr-+ -p tcp -m tcp --dport 80 "
        "-j MARK --set-xmark 0x1/0xffff\n"
        f"-I PREROUTING 1 -j {P}PREROUTING\n"
        "COMMIT\n"
        "*nat\n"
        f":{P}PREROUTING - [0:0]\n"
        f"-A {P}PREROUTING -d 169.254.169.254/32 -i qr-+ -p tcp -m tcp --dport 80 "
        "-j REDIRECT --to-ports 9697\n"
        f"-I PREROUTING 1 -j {P}PREROUTING\n"
        "COMMIT\n"
        "*filter\n"
        f":{P}FORWARD - [0:0]\n"
        f":{P}INPUT - [0:0]\n"
        f"-A {P}FORWARD -m mark --mark 0x1/0xffff -j DROP\n"
        f"-A {P}INPUT -m mark --mark 0x1/0xffff -j ACCEPT\n"
        f"-A {P}INPUT -p tcp -m tcp --dport 9697 -j DROP\n"
        f"-I FORWARD 1 -j {P}FORWARD\n"
        f"-I INPUT 1 -j {P}INPUT\n"
        "COMMIT\n"
    )


# Captured from `ip netns exec <ns> iptables-save` after applying FULL_V4 (nf_tables 1.8.9),
# with a foreign rule and chain that must be left alone.
SAVED_IN_SYNC = f"""# Generated by iptables-save v1.8.9 (nf_tables) on Sun Nov 22 00:19:53 2026
*mangle
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:{P}PREROUTING - [0:0]
-A PREROUTING -j {P}PREROUTING
-A {P}PREROUTING -d 169.254.169.254/32 -i qr-+ -p tcp -m tcp --dport 80 -j MARK --set-xmark 0x1/0xffff
COMMIT
# Completed on Sun Nov 22 00:19:53 2026
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:{P}PREROUTING - [0:0]
:someone-else - [0:0]
-A PREROUTING -j {P}PREROUTING
-A POSTROUTING -s 10.0.0.0/24 -j someone-else
-A {P}PREROUTING -d 169.254.169.254/32 -i qr-+ -p tcp -m tcp --dport 80 -j REDIRECT --to-ports 9697
COMMIT
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:{P}FORWARD - [0:0]
:{P}INPUT - [0:0]
-A INPUT -j {P}INPUT
-A FORWARD -j {P}FORWARD
-A {P}FORWARD -m mark --mark 0x1/0xffff -j DROP
-A {P}INPUT -m mark --mark 0x1/0xffff -j ACCEPT
-A {P}INPUT -p tcp -m tcp --dport 9697 -j DROP
COMMIT
"""


def test_render_in_sync_is_empty() -> None:
    assert render_iptables_restore(FULL_V4, parse_iptables_save(SAVED_IN_SYNC)) == ""


def test_render_removes_duplicate_jumps_and_rewrites_drifted_chain() -> None:
    drifted = SAVED_IN_SYNC.replace(
        f"-A PREROUTING -j {P}PREROUTING\n-A POSTROUTING",
        f"-A PREROUTING -j {P}PREROUTING\n-A PREROUTING -j {P}PREROUTING\n-A POSTROUTING",
    ).replace("--to-ports 9697", "--to-ports 9999")
    text = render_iptables_restore(FULL_V4, parse_iptables_save(drifted))
    assert text == (
        "*nat\n"
        f":{P}PREROUTING - [0:0]\n"
        f"-D PREROUTING -j {P}PREROUTING\n"
        f"-A {P}PREROUTING -d 169.254.169.254/32 -i qr-+ -p tcp -m tcp --dport 80 "
        "-j REDIRECT --to-ports 9697\n"
        "COMMIT\n"
    )


def test_render_proxy_turned_off_removes_nat_chain_and_input_chain() -> None:
    rules = desired_router_state(ROUTER, L3Options(enable_metadata_proxy=False)).rules
    text = render_iptables_restore(rules, parse_iptables_save(SAVED_IN_SYNC))
    assert text == (
        "*nat\n"
        f":{P}PREROUTING - [0:0]\n"
        f"-D PREROUTING -j {P}PREROUTING\n"
        f"-X {P}PREROUTING\n"
        "COMMIT\n"
        "*filter\n"
        f":{P}FORWARD - [0:0]\n"
        f":{P}INPUT - [0:0]\n"
        f"-D INPUT -j {P}INPUT\n"
        f"-X {P}INPUT\n"
        f"-A {P}FORWARD -m mark --mark 0x1/0xffff -j DROP\n"
        "COMMIT\n"
    )


def test_render_teardown_touches_only_our_chains() -> None:
    text = render_iptables_restore([], parse_iptables_save(SAVED_IN_SYNC))
    assert "someone-else" not in text
    assert text.count("-X ") == 4 and text.count("-D ") == 4


def test_render_rejects_foreign_user_chain() -> None:
    with pytest.raises(ValueError):
        render_iptables_restore([("nat", "someone-else", "-j ACCEPT")])


def test_parse_counters_and_errors() -> None:
    state = parse_iptables_save(
        "*nat\n:PREROUTING ACCEPT [3:180]\n[3:180] -A PREROUTING -j X\nCOMMIT\n"
    )
    assert state.rules() == [("nat", "PREROUTING", "-j X")]
    with pytest.raises(ValueError):
        parse_iptables_save("*nat\n-A PREROUTING -j X\n")


def test_routers_from_neutron() -> None:
    routers = {"routers": [{"id": "r1", "name": "rt", "project_id": "p"}]}
    subnets = {
        "subnets": [{"id": "s1", "cidr": "10.0.0.0/24"}, {"id": "s2", "cidr": "2001:db8::/64"}]
    }
    networks = {"networks": [{"id": "n1", "mtu": 1450}]}
    ports = {
        "ports": [
            {
                "id": "p1",
                "network_id": "n1",
                "mac_address": "FA:16:3E:00:00:01",
                "device_owner": "network:router_interface",
                "device_id": "r1",
                "fixed_ips": [
                    {"subnet_id": "s1", "ip_address": "10.0.0.1"},
                    {"subnet_id": "s2", "ip_address": "2001:db8::1"},
                ],
            },
            {
                "id": "p2",
                "network_id": "n9",
                "mac_address": "fa:16:3e:00:00:02",
                "device_owner": "network:router_gateway",
                "device_id": "r1",
                "fixed_ips": [],
            },
            {
                "id": "p3",
                "network_id": "n1",
                "mac_address": "fa:16:3e:00:00:03",
                "device_owner": "compute:nova",
                "device_id": "r1",
                "fixed_ips": [],
            },
        ]
    }
    got = routers_from_neutron(routers, ports, subnets, networks)["r1"]
    assert got.interfaces == (
        RouterInterface("p1", "n1", "fa:16:3e:00:00:01", ("10.0.0.1/24", "2001:db8::1/64"), 1450),
    )


def test_extra_ipv6_metadata_addresses() -> None:
    plan = desired_router_state(ROUTER, L3Options(extra_ipv6_addresses=("fd00:ec2::254",)))
    assert plan.ports[0].addresses[-2:] == ("fe80::a9fe:a9fe/128", "fd00:ec2::254/128")
    redirects = [r for t, c, r in plan.rules6 if t == "nat" and c == f"{P}PREROUTING"]
    assert redirects == [
        f"-d {d} -i qr-+ -p tcp -m tcp --dport 80 -j REDIRECT --to-ports 9697"
        for d in ("fe80::a9fe:a9fe/128", "fd00:ec2::254/128")
    ]
    # One jump per builtin chain, and hop limits as IPv6 HL.
    assert [r for t, c, r in plan.rules6 if c == "PREROUTING"].count(f"-j {P}PREROUTING") == 2
    hop = [r for t, c, r in plan.rules6 if c == f"{P}OUTPUT"]
    assert hop[-1] == "-m dscp ! --dscp 0x00 -j DSCP --set-dscp 0x00"  # DSCP cleared last
    assert hop[:-1] and all("-j HL --hl-set" in r for r in hop[:-1])
    assert not any("fd00:ec2::254" in r for _, _, r in plan.rules)
    with pytest.raises(ValueError, match="not an IPv6 address"):
        L3Options(extra_ipv6_addresses=("10.0.0.1",))
