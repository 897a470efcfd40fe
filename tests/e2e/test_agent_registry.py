"""The all-in-one node's agents register under [DEFAULT] host (the hostname by default)."""

from __future__ import annotations

import socket

from tests.e2e.cloud import Cloud
from tests.fabric.lab import wait_for


def test_all_in_one_agents_register_and_report(cloud: Cloud) -> None:
    wanted = {"DHCP agent", "L3 agent", "Metadata agent"}

    def registered() -> bool:
        agents = cloud.cli("network", "agent", "list")
        return {a["agent_type"] for a in agents if a["alive"]} >= wanted

    wait_for(registered, timeout=60, interval=0.3)
    agents = cloud.cli("network", "agent", "list")
    assert {a["host"] for a in agents} == {socket.gethostname()}
    assert {a["binary"] for a in agents} == {"neutron-dhcp-agent", "neutron-l3-agent",
                                             "neutron-metadata-agent"}
    legacy = cloud.cli_raw("agent-list").stdout
    assert legacy.count(":-)") == 3
