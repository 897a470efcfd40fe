"""Pins the device owners openimds shares with Neutron and Nova (openimds/wire.py)."""

from __future__ import annotations

import openimds.wire as wire


def test_device_owners_are_neutrons() -> None:
    assert wire.DHCP_OWNER == "network:dhcp"
    assert wire.DISTRIBUTED_OWNER == "network:distributed"
    assert wire.HA_OWNER == "network:router_ha_interface"
    assert wire.ROUTER_INTERFACE == "network:router_interface"
    assert set(wire.ROUTER_INTERFACE_OWNERS) == {
        "network:router_interface", "network:ha_router_replicated_interface",
        "network:router_interface_distributed"}
    assert wire.INSTANCE_OWNER_PREFIXES == ("compute:", "baremetal:")
    assert wire.METADATA_OWNER == "network:metadata"


def test_predicates() -> None:
    assert wire.is_router_interface("network:ha_router_replicated_interface")
    assert not wire.is_router_interface("network:router_gateway")
    assert not wire.is_router_interface(None)
    assert wire.is_instance_owner("compute:nova") and wire.is_instance_owner("baremetal:az1")
    assert not wire.is_instance_owner("network:dhcp")
    assert not wire.is_instance_owner("") and not wire.is_instance_owner(None)
    assert sorted(wire.__all__) == sorted(
        name for name in vars(wire) if name.isupper() or name.startswith("is_"))
