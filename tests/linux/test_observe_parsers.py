"""Parsers of `ip -j` output, tested on text captured on these machines (iproute2 6.1.0)."""

from __future__ import annotations

from openimds.linux.addresses import address_argv
from openimds.linux.observe import Address, Link, normalize_cidr, parse_addresses, parse_links

# `ip -n FABRIC -j -d link show` (bridge + one veth port whose peer is in another namespace),
# trimmed of keys the parser does not read.
LINKS_FABRIC = """[{"ifindex":1,"ifname":"lo","flags":["LOOPBACK"],"mtu":65536,"operstate":"DOWN",
"link_type":"loopback","address":"00:00:00:00:00:00"},
{"ifindex":2,"ifname":"oitbr0","flags":["BROADCAST","MULTICAST","UP","LOWER_UP"],"mtu":1500,
"operstate":"UP","link_type":"ether","address":"92:34:fe:cb:ba:f5",
"linkinfo":{"info_kind":"bridge","info_data":{"forward_delay":0,"stp_state":0}}},
{"ifindex":3,"link_index":2,"ifname":"oitv0","flags":["BROADCAST","MULTICAST","UP","LOWER_UP"],
"mtu":1500,"master":"oitbr0","operstate":"UP","link_type":"ether",
"address":"92:34:fe:cb:ba:f5","link_netnsid":0,
"linkinfo":{"info_kind":"veth","info_slave_kind":"bridge"}}]
"""

# `ip -n TARGET -j addr show` with IPv4, a tentative global IPv6, nodad fe80::a9fe:a9fe and the
# kernel's own link-local.
ADDRS_TARGET = """[{"ifindex":1,"ifname":"lo","flags":["LOOPBACK"],"mtu":65536,"addr_info":[]},
{"ifindex":2,"link_index":3,"ifname":"oittap0","flags":["BROADCAST","MULTICAST","UP","LOWER_UP"],
"mtu":1500,"address":"fa:16:3e:00:00:02","link_netnsid":0,"addr_info":[
{"family":"inet","local":"10.0.0.2","prefixlen":24,"broadcast":"10.0.0.255","scope":"global",
"label":"oittap0","valid_life_time":4294967295,"preferred_life_time":4294967295},
{"family":"inet6","local":"2001:db8::2","prefixlen":64,"scope":"global","tentative":true},
{"family":"inet6","local":"fe80::a9fe:a9fe","prefixlen":128,"scope":"link","nodad":true},
{"family":"inet6","local":"fe80::f816:3eff:fe00:2","prefixlen":64,"scope":"link",
"tentative":true}]}]
"""


def test_parse_links() -> None:
    assert parse_links(LINKS_FABRIC) == [
        Link("lo", 1, None, "00:00:00:00:00:00", 65536, False, None, None, None),
        Link("oitbr0", 2, "bridge", "92:34:fe:cb:ba:f5", 1500, True, None, None, None),
        Link("oitv0", 3, "veth", "92:34:fe:cb:ba:f5", 1500, True, "oitbr0", 2, 0),
    ]
    assert parse_links("") == []


def test_parse_addresses() -> None:
    assert parse_addresses(ADDRS_TARGET) == [
        Address("oittap0", "10.0.0.2/24", 4, "global", False, False),
        Address("oittap0", "2001:db8::2/64", 6, "global", True, False),
        Address("oittap0", "fe80::a9fe:a9fe/128", 6, "link", False, False),
        Address("oittap0", "fe80::f816:3eff:fe00:2/64", 6, "link", True, False),
    ]


def test_normalize_cidr() -> None:
    assert normalize_cidr("2001:DB8::0002/64") == "2001:db8::2/64"
    assert normalize_cidr("10.0.0.5/24") == "10.0.0.5/24"
    assert normalize_cidr("169.254.169.254") == "169.254.169.254/32"


def test_address_argv() -> None:
    assert address_argv("ns", "tap1", "10.0.0.2/24", add=True) == [
        "ip",
        "-n",
        "ns",
        "addr",
        "add",
        "10.0.0.2/24",
        "brd",
        "+",
        "dev",
        "tap1",
    ]
    assert address_argv("ns", "tap1", "169.254.169.254/32", add=True)[-2:] == ["dev", "tap1"]
    assert address_argv("ns", "tap1", "fe80::a9fe:a9fe/128", add=True)[-1] == "nodad"
    assert address_argv("ns", "tap1", "2001:db8::2/64", add=True)[-1] == "tap1"
    assert address_argv("ns", "tap1", "10.0.0.2/24", add=False) == [
        "ip",
        "-n",
        "ns",
        "addr",
        "del",
        "10.0.0.2/24",
        "dev",
        "tap1",
    ]
