"""Several DHCP agents on one network: which port is whose, and the dns-server list."""

from __future__ import annotations

from datetime import timedelta

import pytest

from openimds.dhcp.model import SubnetInfo
from openimds.dhcp.plan import desired_dhcp_state, dhcp_device_id
from openimds.wire import serving_dhcp_device_id as serving_device_id

from .test_plan import ISO, NOW, T0, dhcp_port, net

NID = "18b28e2a-30a2-4374-83e1-54bdfeda66a3"
SUB = SubnetInfo("s111", "192.168.111.0/24", 4, None, True)


def seed_ports():  # type: ignore[no-untyped-def]
    # Seed 002's three DHCP servers, in the order the control plane lists them.
    return [dhcp_port(f"d{i}", [("s111", ip)], mac=f"fa:16:3e:00:00:0{i}",
                      created=T0 + timedelta(seconds=i))
            for i, ip in enumerate(["192.168.111.1", "192.168.111.3", "192.168.111.2"])]


def test_three_dhcp_servers_are_listed_as_dns_servers_in_port_order() -> None:
    plan = desired_dhcp_state(net([SUB], seed_ports(), nid=NID), ISO, NOW)
    assert plan is not None
    assert plan.opts == (
        "tag:tag0,option:classless-static-route,169.254.169.254/32,192.168.111.1\n"
        "tag:tag0,249,169.254.169.254/32,192.168.111.1\n"
        "tag:tag0,option:router\n"
        "tag:tag0,option:dns-server,192.168.111.1,192.168.111.3,192.168.111.2\n")


def test_one_dhcp_server_writes_no_dns_server_line_as_in_round_one() -> None:
    plan = desired_dhcp_state(net([SUB], seed_ports()[:1], nid=NID), ISO, NOW)
    assert plan is not None and "dns-server" not in plan.opts


def test_subnet_nameservers_win_over_the_dhcp_servers() -> None:
    own = SubnetInfo("s111", "192.168.111.0/24", 4, None, True, dns_nameservers=("9.9.9.9",))
    plan = desired_dhcp_state(net([own], seed_ports(), nid=NID), ISO, NOW)
    assert plan is not None and "option:dns-server,9.9.9.9\n" in plan.opts


@pytest.mark.parametrize(("host", "devices", "expected"), [
    ("n1", [], None),  # no DHCP port yet
    ("n1", [f"dhcp-{NID}"], None),  # round 1's unscheduled port: whoever is there
    ("n1", [dhcp_device_id("n1", NID), dhcp_device_id("n2", NID)], dhcp_device_id("n1", NID)),
    ("n3", [dhcp_device_id("n1", NID), dhcp_device_id("n2", NID)], False),
])
def test_serving_device_id(host: str, devices: list[str], expected: object) -> None:
    assert serving_device_id(host, NID, devices) == expected
