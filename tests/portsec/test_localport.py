"""The localport table: the whole text for a network, and the empty (remove-only) form."""

from __future__ import annotations

import pytest

from openimds.portsec import LocalPort, localport_rules, localport_table

NET = "6f1c2a3b-0000-4000-8000-000000000001"


def test_rules_drop_the_port_mac_and_arp_for_its_addresses_on_the_uplink_only() -> None:
    text = localport_rules(NET, LocalPort("FA:16:3E:00:00:99", ("10.0.0.2", "10.1.0.2"),
                                          "vxlan-1001"))
    table = f"bridge {localport_table(NET)}"
    lines = [x.strip() for x in text.splitlines()]
    assert lines[:2] == [f"table {table}", f"delete table {table}"]
    assert "type filter hook forward priority -200; policy accept;" in lines
    for way in ("oifname", "iifname"):
        assert f'{way} "vxlan-1001" ether saddr fa:16:3e:00:00:99 drop' in lines
        assert f'{way} "vxlan-1001" ether daddr fa:16:3e:00:00:99 drop' in lines
        assert (f'{way} "vxlan-1001" ether type arp arp daddr ip '
                '{ 10.0.0.2, 10.1.0.2, 169.254.169.254 } drop') in lines
    # IPv4 to 169.254.169.254 crosses: a guest leased in the other mode routes it via the DHCP
    # port or the router on a network node (to their MACs), during a mode switch.
    assert not [x for x in lines if "ip daddr 169.254.169.254" in x]
    # Every rule names the uplink: local traffic (guest tap <-> qmeta tap) is never touched.
    rules = [x for x in lines if x.endswith(" drop")]
    assert rules and all('"vxlan-1001"' in x for x in rules)


def test_none_only_removes_the_table() -> None:
    table = f"bridge {localport_table(NET)}"
    assert localport_rules(NET, None) == f"table {table}\ndelete table {table}\n"


def test_malformed_mac_is_refused() -> None:
    with pytest.raises(ValueError, match="not a MAC"):
        localport_rules(NET, LocalPort("nope", ("10.0.0.2",), "eth1"))
