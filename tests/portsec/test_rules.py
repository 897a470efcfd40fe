"""Port security as a pure computation: Neutron port dicts in, nftables text out (and, as
root, that the kernel loads that text)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from typing import Any

import pytest

from openimds.portsec import (
    AddressPair,
    PortSecurity,
    link_local_from_mac,
    port_security_from_neutron,
    port_security_rules,
)

MAC = "fa:16:3e:00:00:05"
NET = "0b2a1c9e-5f8d-4a1b-9c3e-7d6f5e4a3b21"


def port(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": "4f1c2d3e-aaaa-bbbb-cccc-000000000005", "network_id": NET, "mac_address": MAC,
        "fixed_ips": [{"subnet_id": "s", "ip_address": "10.0.0.5"}],
        "device_owner": "compute:nova", "device_id": "vm",
    }
    return {**base, **kw}


@pytest.mark.parametrize(
    ("row", "want"),
    [
        # Neutron's defaults: on, no pairs, fixed IPs bound to the port's MAC.
        (port(), PortSecurity(port()["id"], MAC, (AddressPair("10.0.0.5", MAC),))),
        (port(port_security_enabled=False), None),
        (port(device_owner="network:dhcp"), None),  # trusted, as in Neutron
        (port(device_owner="network:router_interface"), None),
        (port(mac_address=None), None),
        (port(mac_address="FA:16:3E:00:00:05", fixed_ips=[
            {"ip_address": "fd00::0005"}, {"ip_address": "10.0.0.5"}]),
         PortSecurity(port()["id"], MAC, (AddressPair("fd00::5", MAC),
                                          AddressPair("10.0.0.5", MAC)))),
        (port(allowed_address_pairs=[
            {"ip_address": "10.0.0.100"},  # MAC defaults to the port's
            {"ip_address": "10.1.0.0/24", "mac_address": "fa:16:3e:00:00:99"},
            {"ip_address": "10.0.0.5/32"}]),  # the same as a fixed IP: once
         PortSecurity(port()["id"], MAC, (AddressPair("10.0.0.5", MAC),
                                          AddressPair("10.0.0.100", MAC),
                                          AddressPair("10.1.0.0/24", "fa:16:3e:00:00:99")))),
    ],
)
def test_port_security_from_neutron(row: dict[str, Any], want: PortSecurity | None) -> None:
    assert port_security_from_neutron(row) == want


def test_bad_mac_is_refused() -> None:
    with pytest.raises(ValueError, match="MAC"):
        port_security_from_neutron(port(mac_address="fa:16:3e:00:00"))


def test_link_local_is_the_macs_eui64() -> None:
    assert link_local_from_mac("fa:16:3e:00:00:05") == "fe80::f816:3eff:fe00:5"
    assert link_local_from_mac("52:54:00:de:5b:bf") == "fe80::5054:ff:fede:5bbf"


def chain(text: str, tap: str) -> list[str]:
    lines = [ln.strip() for ln in text.splitlines()]
    start = lines.index(f"chain port-{tap} {{") + 1
    return lines[start: lines.index("}", start)]


def test_rules_for_one_port_only_pass_its_own_sources() -> None:
    ps = port_security_from_neutron(port(fixed_ips=[{"ip_address": "10.0.0.5"},
                                                    {"ip_address": "fd00::5"}]))
    assert ps is not None
    text = port_security_rules(NET, [ps])
    lines = [ln.strip() for ln in text.splitlines()]
    # Whole-state: the table is created (if missing), deleted and loaded again in one go.
    assert lines[:3] == ["table bridge openimds-ps-0b2a1c9e-5f", "delete table bridge "
                         "openimds-ps-0b2a1c9e-5f", "table bridge openimds-ps-0b2a1c9e-5f {"]
    assert "type filter hook prerouting priority -200; policy accept;" in lines
    assert lines[5:8] == ["iifname vmap {", '"tap4f1c2d3e-aa" : jump port-tap4f1c2d3e-aa', "}"]
    c = chain(text, "tap4f1c2d3e-aa")
    assert c[0] == f"ether saddr != {{ {MAC} }} drop"
    assert f"ether type ip ether saddr . ip saddr {{ {MAC} . 10.0.0.5 }} accept" in c
    assert ("ether type arp ether saddr . arp saddr ether . arp saddr ip "
            f"{{ {MAC} . {MAC} . 10.0.0.5 }} accept") in c
    assert (f"ether type ip6 ether saddr . ip6 saddr {{ {MAC} . fd00::5, "
            f"{MAC} . fe80::f816:3eff:fe00:5 }} accept") in c
    assert ("ether type ip6 icmpv6 type nd-neighbor-advert @th,64,128 != "
            "{ 0xfd000000000000000000000000000005, 0xfe80000000000000f8163efffe000005 } drop"
            ) in c
    assert "ether type ip udp sport 67 drop" in c  # no rogue DHCP server
    assert "ether type ip6 icmpv6 type nd-router-advert drop" in c
    assert c[-1] == "drop"  # anything else from this tap
    # Nothing from any other address: the only ip/arp accepts are the ones above.
    accepts = [r for r in c if r.startswith(("ether type ip ", "ether type arp"))
               and r.endswith("accept")]
    assert len(accepts) == 4  # ip 10.0.0.5, DHCP from 0.0.0.0, arp 10.0.0.5, ARP probe


def test_many_allowed_pairs_are_one_set_lookup_per_family() -> None:
    """Fifty pairs (two with a MAC of their own, one a CIDR) are one rule per family and
    protocol, not fifty: a frame from the last pair costs what one from the first does."""
    other = "fa:16:3e:00:00:99"
    pairs = [{"ip_address": f"10.0.1.{n}"} for n in range(46)]
    pairs += [{"ip_address": "10.0.2.7", "mac_address": other},
              {"ip_address": "10.0.3.0/24"}, {"ip_address": "fd00::7"},
              {"ip_address": "fd00::8", "mac_address": other}]
    ps = port_security_from_neutron(port(allowed_address_pairs=pairs))
    assert ps is not None
    c = chain(port_security_rules(NET, [ps]), "tap4f1c2d3e-aa")
    ip_rules = [r for r in c if r.startswith("ether type ip ether saddr . ip saddr")]
    arp_rules = [r for r in c if r.startswith("ether type arp ether saddr . arp saddr ether")]
    ip6_rules = [r for r in c if r.startswith("ether type ip6 ether saddr . ip6 saddr")]
    assert len(ip_rules) == len(arp_rules) == len(ip6_rules) == 1
    assert f"{MAC} . 10.0.0.5, {MAC} . 10.0.1.0," in ip_rules[0]  # the fixed IP first
    assert f", {other} . 10.0.2.7, {MAC} . 10.0.3.0/24 }} accept" in ip_rules[0]
    assert f"{other} . {other} . 10.0.2.7" in arp_rules[0]
    assert f"{MAC} . fd00::7, {other} . fd00::8" in ip6_rules[0]
    # Both MACs' link-local addresses, each from its own MAC.
    assert f"{other} . fe80::f816:3eff:fe00:99" in ip6_rules[0]
    assert f"ether saddr != {{ {MAC}, {other} }} drop" == c[0]


@pytest.mark.root
def test_the_kernel_loads_the_pair_sets(make_netns: Callable[[str], str]) -> None:
    """nft and the kernel accept the concatenated sets as written (single addresses and
    prefixes, both families, a second MAC), and read them back with every element."""
    ns = make_netns("ps")
    other = "fa:16:3e:00:00:99"
    pairs = [{"ip_address": f"10.0.1.{n}"} for n in range(46)]
    pairs += [{"ip_address": "10.0.3.0/24"}, {"ip_address": "fd00::8", "mac_address": other},
              {"ip_address": "fd00:1::/127"}]
    ps = port_security_from_neutron(port(allowed_address_pairs=pairs))
    assert ps is not None
    subprocess.run(["ip", "netns", "exec", ns, "nft", "-f", "-"], check=True, text=True,
                   input=port_security_rules(NET, [ps]))
    listed = subprocess.run(["ip", "netns", "exec", ns, "nft", "list", "ruleset"], check=True,
                            capture_output=True, text=True).stdout
    assert f"{MAC} . 10.0.1.45" in listed and f"{MAC} . 10.0.3.0/24" in listed
    assert f"{MAC} . {MAC} . 10.0.3.0/24" in listed
    assert f"{other} . fd00::8" in listed and f"{MAC} . fd00:1::/127" in listed


def test_allowed_pair_cidr_becomes_a_range_for_nd() -> None:
    ps = port_security_from_neutron(port(fixed_ips=[], allowed_address_pairs=[
        {"ip_address": "fd00:1::/127"}]))
    assert ps is not None
    c = chain(port_security_rules(NET, [ps]), "tap4f1c2d3e-aa")
    assert any("0xfd000001000000000000000000000000-0xfd000001000000000000000000000001" in r
               for r in c)


def test_no_protected_port_only_removes_the_table_and_order_is_stable() -> None:
    assert port_security_rules(NET, []) == (
        "table bridge openimds-ps-0b2a1c9e-5f\ndelete table bridge openimds-ps-0b2a1c9e-5f\n")
    a = port_security_from_neutron(port())
    b = port_security_from_neutron(port(id="00000000-b", mac_address="fa:16:3e:00:00:06",
                                        fixed_ips=[{"ip_address": "10.0.0.6"}]))
    assert a is not None and b is not None
    assert port_security_rules(NET, [a, b]) == port_security_rules(NET, [b, a])


def prerouting(text: str) -> list[str]:
    lines = [ln.strip() for ln in text.splitlines()]
    start = lines.index("chain prerouting {") + 1
    body = lines[start:]
    return body[:body.index("}", body.index("iifname vmap {") + 1) + 1]


def test_a_thousand_taps_are_one_verdict_map_lookup() -> None:
    """The base chain dispatches on the input tap with one verdict map, not one rule per tap:
    a frame costs the same with 1,000 protected ports on the bridge as with one."""
    ports = [port_security_from_neutron(port(id=f"{n:08x}-0000-4000-8000-{n:012x}",
                                             mac_address=f"fa:16:3e:00:{n >> 8:02x}:{n & 255:02x}",
                                             fixed_ips=[{"ip_address": f"10.0.{n >> 8}.{n & 255}"}]))
             for n in range(1000)]
    chosen = [p for p in ports if p is not None]
    text = port_security_rules(NET, chosen)
    body = prerouting(text)
    assert body[0] == "type filter hook prerouting priority -200; policy accept;"
    assert body[1] == "iifname vmap {" and body[-1] == "}"
    entries = body[2:-1]
    assert len(entries) == 1000
    assert entries == sorted(entries)  # stable: computed from the ports alone
    assert [e.rstrip(",") for e in entries] == [
        f'"{p.tap}" : jump port-{p.tap}' for p in sorted(chosen, key=lambda p: p.port_id)]
    assert all(e.endswith(",") for e in entries[:-1]) and not entries[-1].endswith(",")
    # Every tap still has its own chain, and nothing else hooks the bridge.
    assert text.count("chain port-tap") == 1000
    assert text.count("type filter hook") == 1
