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
        name for name in vars(wire) if name.isupper()
        or name.startswith(("is_", "sign_", "verify_")))


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


def test_the_instance_id_signature_is_neutrons_hmac() -> None:
    # Neutron's metadata agent: hmac.new(secret, instance_id, hashlib.sha256).hexdigest().
    signature = wire.sign_instance_id("s3cret", "instance-1")
    assert signature == "80610a3a6649a87c1b3e5df90c22509c6203183d8880bdeb7f5fb05d15ce2f6f"
    assert wire.verify_signature("s3cret", "instance-1", signature)
    assert not wire.verify_signature("s3cret", "instance-2", signature)
    assert not wire.verify_signature("other", "instance-1", signature)
    assert not wire.verify_signature("s3cret", "instance-1", "\udcff" * 64)
