"""Instances used across the metadata tests: spec fixture A (fully populated) and a minimal one."""

from __future__ import annotations

from openimds.metadata.view import FixedIPView, InstanceView, KeyPairView, PortView, SubnetView

KEY = "ssh-rsa AAAAB3Nzai....N3NtHw== someuser@somehost"
UUID_A = "b65cee2f-8c69-4aeb-be2f-f79742548fc2"
UUID_MIN = "5c1e4e2a-0f0b-4c59-9e65-5a1b8d0a0c11"
PORT_A = "cd9f6d46-4a3a-43ab-a466-994af9db96fc"
NET_A = "99e88329-f20d-4741-9593-25bf07847b16"
SECRET = "secret123"

SUBNET4 = SubnetView(
    id="sub4",
    cidr="10.0.0.0/24",
    ip_version=4,
    gateway_ip="10.0.0.1",
    host_routes=(("172.16.0.0/16", "10.0.0.254"),),
    dns_nameservers=("8.8.8.8",),
    enable_dhcp=False,
)
SUBNET6 = SubnetView(
    id="sub6",
    cidr="2001:db8::/64",
    ip_version=6,
    gateway_ip="2001:db8::1",
    dns_nameservers=("2001:db8::53",),
    enable_dhcp=True,
    ipv6_ra_mode="slaac",
    ipv6_address_mode="slaac",
)
PORT_VIEW_A = PortView(
    id=PORT_A,
    mac_address="fa:16:3e:9c:bf:3d",
    network_id=NET_A,
    mtu=1450,
    vif_type="ovs",
    fixed_ips=(FixedIPView("10.0.0.5", SUBNET4), FixedIPView("2001:db8::5", SUBNET6)),
)


def full_view(**overrides: object) -> InstanceView:
    values: dict[str, object] = dict(
        uuid=UUID_A,
        ec2_id=1,
        name="my_displayname",
        hostname="test",
        project_id="test",
        availability_zone="fake-az",
        flavor="m1.small",
        image_name="cirros",
        image_ec2_id=1,
        image_uuid="155d900f-4e14-4e4c-a73d-069cbf4541e6",
        key_name="key",
        key_data=KEY,
        keypair=KeyPairView("key", KEY, "ssh"),
        user_data=b"#!/bin/sh\necho hi\n\x00\xff",
        metadata={"role": "web", "k\u00e9y": "v\u00e4l"},
        launch_index=1,
        reservation_id="r-abcd1234",
        security_groups=("default", "web"),
        security_group_ids=("5d8c1f2e-0b1a-4c3d-9e8f-7a6b5c4d3e2f",
                            "9a1b2c3d-4e5f-4061-8273-94a5b6c7d8e9"),
        ports=(PORT_VIEW_A,),
    )
    values.update(overrides)
    return InstanceView(**values)  # type: ignore[arg-type]


def minimal_view(**overrides: object) -> InstanceView:
    values: dict[str, object] = dict(
        uuid=UUID_MIN, ec2_id=0x2A, name="bare", hostname="bare", project_id="p2"
    )
    values.update(overrides)
    return InstanceView(**values)  # type: ignore[arg-type]
