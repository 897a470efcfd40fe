"""The metadata versions as data: which key or file each dated version adds.

Nova keeps these as dated constants spread over `base.py`; here they are one table per tree so a
renderer asks `has(version, FEATURE)` instead of comparing dates by hand. Dates compare as text
because every OpenStack version is ISO `YYYY-MM-DD` and the EC2 list is ordered explicitly.
"""

from __future__ import annotations

from datetime import date

__all__ = [
    "EC2_KEYS",
    "EC2_LATEST",
    "EC2_VERSIONS",
    "OPENSTACK_LATEST",
    "OPENSTACK_VERSIONS",
    "OS_DEDICATED_CPUS",
    "OS_DEVICES",
    "OS_NETWORK_DATA",
    "OS_PASSWORD",
    "OS_PROJECT_ID",
    "OS_RANDOM_SEED",
    "OS_VENDOR_DATA",
    "OS_VENDOR_DATA2",
    "ec2_has",
    "openstack_has",
    "openstack_listing",
    "resolve_ec2_version",
    "resolve_openstack_version",
]

# Listing order is the table order (nova's VERSIONS list), not a sort.
EC2_VERSIONS: tuple[str, ...] = (
    "1.0",
    "2007-01-19",
    "2007-03-01",
    "2007-08-29",
    "2007-10-10",
    "2007-12-15",
    "2008-02-01",
    "2008-09-01",
    "2009-04-04",
)
EC2_LATEST = EC2_VERSIONS[-1]

# meta-data key -> first EC2 version that serves it (spec section 5.3). Keys whose presence
# also depends on the instance (public-keys/, kernel-id, ramdisk-id) are listed here with their
# version and dropped by the renderer when the instance lacks the value.
EC2_KEYS: dict[str, str] = {
    "ami-id": "1.0",
    "ami-launch-index": "1.0",
    "ami-manifest-path": "1.0",
    "hostname": "1.0",
    "instance-id": "1.0",
    "local-ipv4": "1.0",
    "reservation-id": "1.0",
    "security-groups": "1.0",
    "public-keys": "1.0",
    "local-hostname": "2007-01-19",
    "public-hostname": "2007-01-19",
    "public-ipv4": "2007-01-19",
    "instance-type": "2007-08-29",
    "block-device-mapping": "2007-12-15",
    "kernel-id": "2007-12-15",
    "ramdisk-id": "2007-12-15",
    "placement": "2008-02-01",
    "instance-action": "2008-09-01",
}

# (date, what it adds) in nova's order; `latest` is the last entry even when it is hidden.
OPENSTACK_VERSIONS: tuple[str, ...] = (
    "2012-08-10",  # Folsom: meta_data.json, user_data
    "2013-04-04",  # Grizzly: password, random_seed
    "2013-10-17",  # Havana: vendor_data.json
    "2015-10-15",  # Liberty: network_data.json, project_id
    "2016-06-30",  # Newton: devices
    "2016-10-06",  # Newton: vendor_data2.json
    "2017-02-22",  # Ocata: vlan on NIC devices
    "2018-08-27",  # Rocky: vf_trusted on NIC devices
    "2020-10-14",  # Victoria: dedicated_cpus
    "2025-04-04",  # Epoxy: share devices
)
OPENSTACK_LATEST = OPENSTACK_VERSIONS[-1]

OS_PASSWORD = "2013-04-04"
OS_RANDOM_SEED = "2013-04-04"
OS_VENDOR_DATA = "2013-10-17"
OS_NETWORK_DATA = "2015-10-15"
OS_PROJECT_ID = "2015-10-15"
OS_DEVICES = "2016-06-30"
OS_VENDOR_DATA2 = "2016-10-06"
OS_DEDICATED_CPUS = "2020-10-14"

_EC2_INDEX = {v: i for i, v in enumerate(EC2_VERSIONS)}


def resolve_ec2_version(token: str) -> str | None:
    """The concrete EC2 version a path token names (`latest` included), or None if unknown."""
    if token == "latest":
        return EC2_LATEST
    return token if token in _EC2_INDEX else None


def resolve_openstack_version(token: str) -> str | None:
    """The concrete OpenStack version a path token names, or None if unknown."""
    if token == "latest":
        return OPENSTACK_LATEST
    return token if token in OPENSTACK_VERSIONS else None


def ec2_has(version: str, key: str) -> bool:
    """Whether the EC2 `version` serves meta-data `key` at all (ignoring the instance)."""
    return _EC2_INDEX[version] >= _EC2_INDEX[EC2_KEYS[key]]


def openstack_has(version: str, feature: str) -> bool:
    """Whether OpenStack `version` is at or after the version that added `feature`."""
    return version >= feature


def openstack_listing(today: date) -> tuple[str, ...]:
    """`/openstack`: versions not dated after `today` (nova hides future dates), then `latest`."""
    iso = today.isoformat()
    return tuple(v for v in OPENSTACK_VERSIONS if v <= iso) + ("latest",)
