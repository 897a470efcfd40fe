from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.support.multihost import MultiHostLab

NETWORK_NODE = ("dhcp-agent", "l3-agent", "metadata-agent", "l2-agent")
COMPUTE = ("l2-agent",)
DOWN_TIME = 8  # generous: a heartbeat late under CI load must not look like a death


@pytest.fixture(scope="module")
def lab() -> Iterator[MultiHostLab]:
    """2 network nodes and 2 compute hosts on VXLAN tenant networks (needs root)."""
    import os

    from tests.conftest import IN_CI

    if os.geteuid() != 0:
        if IN_CI:
            pytest.fail("CI=true but not root: the multi-host lab must run in CI")
        pytest.skip("needs root (network and mount namespaces)")
    lab = MultiHostLab(
        [("net-1", NETWORK_NODE), ("net-2", NETWORK_NODE), ("cmp-1", COMPUTE),
         ("cmp-2", COMPUTE)],
        # Legacy routers: these tests expect one router instance (HA: test_ha_failover.py).
        extra_control=(f"agent_down_time = {DOWN_TIME}\ndhcp_agents_per_network = 2\n"
                       "l3_ha = false\n"
                       "[ml2]\ntenant_network_types = vxlan\n"
                       "[ml2_type_vxlan]\nvni_ranges = 1000:1999\n"
                       "[ml2_type_vlan]\nnetwork_vlan_ranges = physnet1:100:199\n"))
    try:
        lab.start()
        yield lab
    finally:
        lab.cleanup()


def node_loss_lab(down_time: int) -> Iterator[MultiHostLab]:
    """The node-loss lab of issue 11 item 5 (3 network nodes, 2 compute hosts, VXLAN, two DHCP
    and two L3 agents per network/router, advert_int 1), for a module-scoped fixture."""
    from tests.conftest import IN_CI

    if os.geteuid() != 0:
        if IN_CI:
            pytest.fail("CI=true but not root: the multi-host lab must run in CI")
        pytest.skip("needs root (network and mount namespaces)")
    lab = MultiHostLab(
        [("net-1", NETWORK_NODE), ("net-2", NETWORK_NODE), ("net-3", NETWORK_NODE),
         ("cmp-1", COMPUTE), ("cmp-2", COMPUTE)],
        extra_control=(f"agent_down_time = {down_time}\ndhcp_agents_per_network = 2\n"
                       "max_l3_agents_per_router = 2\n"
                       "[ml2]\ntenant_network_types = vxlan\n"
                       "[ml2_type_vxlan]\nvni_ranges = 1000:1999\n"),
        extra_agent="[DEFAULT]\nha_vrrp_advert_int = 1\n")
    try:
        lab.start()
        yield lab
    finally:
        lab.cleanup()
