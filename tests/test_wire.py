"""Pins the device owners openimds shares with Neutron and Nova (openimds/wire.py)."""

from __future__ import annotations

import inspect

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
    # Everything the module defines is exported, and nothing else.
    defined = {name for name, value in vars(wire).items()
               if not name.startswith("_") and not inspect.ismodule(value)
               and name != "annotations"}
    assert sorted(wire.__all__) == sorted(defined)


def test_headers_and_addresses_are_the_peers() -> None:
    """The names Neutron's proxy and agent and Nova's metadata API put on the wire, and the
    ones cloud clients send (AWS IMDSv2)."""
    assert (wire.FORWARDED_FOR, wire.NETWORK_ID, wire.ROUTER_ID) == (
        "X-Forwarded-For", "X-Neutron-Network-ID", "X-Neutron-Router-ID")
    assert (wire.INSTANCE_ID, wire.INSTANCE_ID_SIGNATURE, wire.TENANT_ID) == (
        "X-Instance-ID", "X-Instance-ID-Signature", "X-Tenant-ID")
    assert (wire.PROVIDER, wire.PROVIDER_SIGNATURE) == (
        "X-Metadata-Provider", "X-Metadata-Provider-Signature")
    assert wire.OVN_NETWORK_ID == "X-OVN-Network-ID"
    assert (wire.TOKEN_HEADER, wire.TTL_HEADER) == (
        "X-aws-ec2-metadata-token", "X-aws-ec2-metadata-token-ttl-seconds")
    assert (wire.METADATA_IPV4, wire.METADATA_IPV6) == ("169.254.169.254", "fe80::a9fe:a9fe")
    # A guest can send none of the identity headers, nor any internal one.
    assert set(wire.IDENTITY_HEADERS) >= {
        wire.FORWARDED_FOR, wire.INSTANCE_ID, wire.INSTANCE_ID_SIGNATURE, wire.TENANT_ID,
        wire.NETWORK_ID, wire.ROUTER_ID}
    assert wire.PROVIDER_SIGNATURE.startswith(wire.IDENTITY_HEADER_PREFIXES)
    for internal in (wire.GUEST_FORWARDED_HEADER, wire.HOP_LIMIT_HEADER):
        assert internal.startswith(wire.INTERNAL_HEADER_PREFIX)


def test_vendordata_providers_are_novas() -> None:
    """`[api] vendordata_providers` values as nova.conf spells them."""
    assert wire.VENDORDATA_PROVIDERS == (wire.STATIC_JSON, wire.DYNAMIC_JSON) == (
        "StaticJSON", "DynamicJSON")


def test_the_instance_id_signature_is_neutrons_hmac() -> None:
    # Neutron's metadata agent: hmac.new(secret, instance_id, hashlib.sha256).hexdigest().
    signature = wire.sign_instance_id("s3cret", "instance-1")
    assert signature == "80610a3a6649a87c1b3e5df90c22509c6203183d8880bdeb7f5fb05d15ce2f6f"
    assert wire.verify_signature("s3cret", "instance-1", signature)
    assert not wire.verify_signature("s3cret", "instance-2", signature)
    assert not wire.verify_signature("other", "instance-1", signature)
    assert not wire.verify_signature("s3cret", "instance-1", "\udcff" * 64)


def test_namespace_and_device_names_are_neutrons() -> None:
    port = "8b1e2f3a-4c5d-6e7f-8091-a2b3c4d5e6f7"
    assert wire.tap_device(port) == "tap8b1e2f3a-4c"
    assert wire.router_interface_device(port) == "qr-8b1e2f3a-4c"
    assert wire.ha_device(port) == "ha-8b1e2f3a-4c"
    assert wire.bridge_device(port) == "brq8b1e2f3a-4c"
    for device in (wire.tap_device(port), wire.router_interface_device(port),
                   wire.ha_device(port), wire.bridge_device(port)):
        assert len(device) <= 15  # IFNAMSIZ - 1
    assert wire.dhcp_namespace(port) == f"qdhcp-{port}"
    assert wire.router_namespace(port) == f"qrouter-{port}"
    assert wire.metadata_namespace(port) == f"qmeta-{port}"


def test_dhcp_port_device_ids_are_neutrons() -> None:
    # Neutron's DHCP agent: 'dhcp%s-%s' % (uuid.uuid5(uuid.NAMESPACE_DNS, host), network_id).
    ours = "dhcp9b3b6618-0449-5cf4-ba1a-1bd2727132bc-net-1"
    assert wire.dhcp_device_id("node-1", "net-1") == ours
    assert wire.unscheduled_dhcp_device_id("net-1") == "dhcp-net-1"
    # Which port is ours: the control plane writes these ids, the DHCP agent reads them back.
    other = wire.dhcp_device_id("node-2", "net-1")
    assert wire.serving_dhcp_device_id("node-1", "net-1", [other, ours]) == ours
    assert wire.serving_dhcp_device_id("node-3", "net-1", [other, ours]) is False
    assert wire.serving_dhcp_device_id("node-3", "net-1", ["dhcp-net-1"]) is None
    assert wire.serving_dhcp_device_id("node-3", "net-1", []) is None
