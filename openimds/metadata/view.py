"""`InstanceView`: everything the metadata trees say about one instance, as plain frozen values.

Built by an `InstanceSource` (from the inventory or from a dict) and consumed by the pure
renderers in `tree.py` and `network_data.py`. It holds data only: no session, no lazy loading,
so a view can be cached and shared between requests and rendered without I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any

from openimds import wire

__all__ = ["FixedIPView", "InstanceView", "KeyPairView", "PortView", "SubnetView"]


@dataclass(frozen=True, slots=True)
class SubnetView:
    id: str
    cidr: str
    ip_version: int
    gateway_ip: str | None = None
    # (destination cidr, nexthop) pairs, in the subnet's order.
    host_routes: tuple[tuple[str, str], ...] = ()
    dns_nameservers: tuple[str, ...] = ()
    enable_dhcp: bool = True
    ipv6_ra_mode: str | None = None
    ipv6_address_mode: str | None = None
    # Address of a `network:dhcp` port on this subnet, if one exists (nova's `dhcp_server`).
    dhcp_server: str | None = None


@dataclass(frozen=True, slots=True)
class FixedIPView:
    ip_address: str
    subnet: SubnetView


@dataclass(frozen=True, slots=True)
class PortView:
    id: str
    mac_address: str
    network_id: str
    mtu: int | None
    fixed_ips: tuple[FixedIPView, ...] = ()
    # Nova's VIF type; None renders as `phy`, nova's answer for a type it does not know.
    vif_type: str | None = None
    floating_ips: tuple[str, ...] = ()

    @property
    def devname(self) -> str:
        return wire.tap_device(self.id)


@dataclass(frozen=True, slots=True)
class KeyPairView:
    """The key pair record named by the instance's key_name, while it still exists."""

    name: str
    public_key: str
    type: str = "ssh"


def _frozen_mapping(value: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return MappingProxyType(dict(value or {}))


@dataclass(frozen=True)
class InstanceView:
    uuid: str
    ec2_id: int
    name: str
    hostname: str
    project_id: str
    availability_zone: str | None = None
    flavor: str = "m1.small"
    image_name: str | None = None
    # None means boot from volume: nova renders `ami-id` as the text None then.
    image_ec2_id: int | None = None
    # The image's Glance id (vendordata's `image-id`, as Nova sends it).
    image_uuid: str | None = None
    kernel_ec2_id: int | None = None
    ramdisk_ec2_id: int | None = None
    key_name: str | None = None
    # The instance's own copy of the key (EC2 public-keys reads this even after the key pair
    # record is deleted); `keypair` is the record itself, for meta_data.json.
    key_data: str | None = None
    keypair: KeyPairView | None = None
    user_data: bytes | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    launch_index: int = 0
    reservation_id: str = ""
    security_groups: tuple[str, ...] = ()
    # Ids of those groups' records in the instance's project (EC2 `security-group-ids`).
    security_group_ids: tuple[str, ...] = ()
    created_at: datetime | None = None
    password: str | None = None
    root_device_name: str | None = None
    dedicated_cpus: tuple[int, ...] = ()
    ports: tuple[PortView, ...] = ()
    # The metadata options set on this instance (metadata/options.py); unset ones come from
    # the cloud-wide defaults.
    metadata_options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # A read-only copy: views are shared by every request that hits the cache.
        object.__setattr__(self, "metadata", _frozen_mapping(self.metadata))
        object.__setattr__(self, "metadata_options", _frozen_mapping(self.metadata_options))

    @property
    def image_ref(self) -> str | None:
        if self.image_uuid is not None:
            return self.image_uuid
        return None if self.image_ec2_id is None else str(self.image_ec2_id)

    def first_ipv4(self) -> str | None:
        """The first IPv4 fixed IP over all ports, in port order (EC2 `local-ipv4`)."""
        for port in self.ports:
            for fip in port.fixed_ips:
                if fip.subnet.ip_version == 4:
                    return fip.ip_address
        return None

    def first_floating_ip(self) -> str | None:
        for port in self.ports:
            if port.floating_ips:
                return port.floating_ips[0]
        return None
