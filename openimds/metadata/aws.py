"""The keys AWS-era clients read, for `[metadata] ec2_profile = aws` (pure).

On top of Nova's newest EC2 meta-data, the dated versions cloud-init and the SDKs ask for
(`AWS_EC2_VERSIONS`) and `latest` serve:

    meta-data/placement/region, placement/availability-zone-id, mac, instance-life-cycle,
    network/interfaces/macs/<mac>/..., services/domain, services/partition,
    tags/instance/<key>            (only with instance_metadata_tags = enabled)
    dynamic/instance-identity/document, signature, pkcs7, rsa2048 (the last three only with a
                                   configured signing key)

Every listed entry is fetchable (cloud-init discards a whole crawl otherwise), so keys a port
lacks (no IPv6 address: no `ipv6s`) are left out rather than served empty.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from openimds.metadata.identity import IdentitySigner, identity_document
from openimds.metadata.view import InstanceView, PortView

__all__ = ["AWS_EC2_VERSIONS", "AwsProfile", "aws_dynamic", "aws_meta_data"]

# The versions cloud-init (newest first: 2021-03-23, 2018-09-24, 2016-09-02) and the SDKs pick.
AWS_EC2_VERSIONS: tuple[str, ...] = ("2016-09-02", "2018-09-24", "2021-03-23")


@dataclass(frozen=True)
class AwsProfile:
    """Cloud-wide values of the AWS keys."""

    region: str = "RegionOne"
    # services/partition and services/domain: this cloud, not AWS's.
    partition: str = "openstack"
    domain: str | None = None
    signer: IdentitySigner | None = None


# What this module returns: a nested dict is a directory, anything else a text leaf (tree.py
# turns it into nodes), so these keys stay plain data.
Entries = dict[str, Any]


def _addresses(port: PortView, version: int) -> list[str]:
    return [f.ip_address for f in port.fixed_ips if f.subnet.ip_version == version]


def _cidrs(port: PortView, version: int) -> list[str]:
    seen: list[str] = []
    for f in port.fixed_ips:
        if f.subnet.ip_version == version and f.subnet.cidr not in seen:
            seen.append(f.subnet.cidr)
    return seen


def _interface(view: InstanceView, port: PortView, number: int, fqdn: str) -> Entries:
    v4, v6 = _addresses(port, 4), _addresses(port, 6)
    cidr4, cidr6 = _cidrs(port, 4), _cidrs(port, 6)
    subnets = [f.subnet.id for f in port.fixed_ips]
    values: Entries = {
        "device-number": number,
        "interface-id": port.id,
        "local-hostname": fqdn,
        "mac": port.mac_address,
        "owner-id": view.project_id,
        "security-group-ids": list(view.security_group_ids),
        "security-groups": list(view.security_groups),
        "vpc-id": port.network_id,
    }
    if subnets:
        values["subnet-id"] = subnets[0]
    if v4:
        values["local-ipv4s"] = v4
        values["subnet-ipv4-cidr-block"] = cidr4[0]
        values["vpc-ipv4-cidr-block"] = cidr4[0]
        values["vpc-ipv4-cidr-blocks"] = cidr4
    if v6:
        values["ipv6s"] = v6
        values["subnet-ipv6-cidr-blocks"] = cidr6
        values["vpc-ipv6-cidr-blocks"] = cidr6
    return values


def aws_meta_data(view: InstanceView, profile: AwsProfile, fqdn: str, *, tags: bool) -> Entries:
    """The AWS meta-data entries, to merge into Nova's."""
    az = view.availability_zone
    entries: Entries = {
        "instance-life-cycle": "on-demand",
        "services": {"domain": profile.domain or "local", "partition": profile.partition},
    }
    placement: Entries = {"availability-zone": az, "region": profile.region}
    if az:
        placement["availability-zone-id"] = f"{profile.region}-{az}"
    entries["placement"] = placement
    if view.ports:
        entries["mac"] = view.ports[0].mac_address
        macs = {port.mac_address: _interface(view, port, i, fqdn)
                for i, port in enumerate(view.ports)}
        entries["network"] = {"interfaces": {"macs": macs}}
    if tags:
        entries["tags"] = {"instance": _tags(view.metadata)}
    return entries


def _tags(metadata: Mapping[str, Any]) -> Entries:
    # A key that cannot be one path segment cannot be fetched, so it is not listed (AWS refuses
    # such tag keys when metadata tags are on).
    return {k: val for k, val in metadata.items() if k and "/" not in k and k not in (".", "..")}


def aws_dynamic(view: InstanceView, profile: AwsProfile) -> Entries:
    """`dynamic/`: the identity document and, with a signer, its three signatures."""
    image = None if view.image_ec2_id is None else f"ami-{view.image_ec2_id:08x}"
    document = identity_document(
        account_id=view.project_id,
        availability_zone=view.availability_zone,
        image_id=image,
        instance_id=f"i-{view.ec2_id:08x}",
        instance_type=view.flavor,
        private_ip=view.first_ipv4(),
        region=profile.region,
        pending_time=view.created_at,
    )
    identity: Entries = {"document": document}
    if profile.signer is not None:
        signed = profile.signer.sign(document)
        identity["signature"] = signed.signature
        identity["pkcs7"] = signed.pkcs7
        identity["rsa2048"] = signed.rsa2048
    return {"instance-identity": identity}
