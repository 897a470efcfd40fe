"""The metadata next hop's keepalived in a real DHCP namespace (issue 11 item 2): it takes the
address when no peer speaks, an agent restart adopts it, a keepalived killed with -9 leaves no
address behind and is started again, and it goes when the plan no longer has it."""

from __future__ import annotations

import os
import signal
from datetime import UTC, datetime
from pathlib import Path

import pytest

from openimds.dhcp.apply import DhcpApplier
from openimds.dhcp.model import NetworkInfo, PortInfo, SubnetInfo
from openimds.dhcp.plan import DhcpOptions, DhcpPlan, desired_dhcp_state
from openimds.dhcp.settings import DhcpSettings
from openimds.linux import procfs
from openimds.linux.netns import netns_exists
from openimds.linux.observe import addresses
from openimds.proxy import HaproxySupervisor
from openimds.proxy.haproxy import ProxyDefaults
from tests.fabric.lab import Lab, lab  # noqa: F401 - fixture
from tests.support.multihost import wait_for

pytestmark = pytest.mark.root
NOW = datetime.now(UTC)
VIP = "10.6.0.9/32"


def network(net: str, dhcp_id: str, peer: bool) -> NetworkInfo:
    subnet = SubnetInfo("s1", "10.6.0.0/24", 4, None, True)
    ports = [
        PortInfo(dhcp_id, "fa:16:3e:00:06:02", (("s1", "10.6.0.2"),), "network:dhcp",
                 "dhcp-a", NOW),
        PortInfo("vip", "fa:16:3e:00:06:09", (("s1", "10.6.0.9"),), "network:metadata",
                 f"metadata-{net}", NOW),
        PortInfo("vm", "fa:16:3e:00:06:05", (("s1", "10.6.0.5"),), "compute:nova", "i", NOW),
    ]
    if peer:  # another agent's DHCP port, on a node that is not there (it never answers)
        ports.append(PortInfo("dhcp-other", "fa:16:3e:00:06:03", (("s1", "10.6.0.3"),),
                              "network:dhcp", "dhcp-b", NOW))
    return NetworkInfo(net, "n", "p", 1500, (subnet,), tuple(ports))


def v4(ns: str, dev: str) -> set[str]:
    return {a.cidr for a in addresses(ns, dev) if a.family == 4}


def test_keepalived_holds_the_next_hop_and_is_adopted_and_replaced(lab: Lab) -> None:  # noqa: F811
    net, dhcp_id = lab.new_id(), lab.new_id()
    opts = DhcpOptions(enable_isolated_metadata=True, dhcp_confs=os.path.join(lab.state, "dhcp"),
                       dhcp_port_device_id="dhcp-a", vrrp_advert_int=1,
                       proxy=ProxyDefaults(state_path=lab.state, socket_path=lab.socket))
    settings = DhcpSettings(fabric=lab.fabric, state_path=lab.state, options=opts)
    applier = DhcpApplier(settings, HaproxySupervisor(lab.state))
    ns = f"qdhcp-{net}"
    plan: DhcpPlan | None = desired_dhcp_state(network(net, dhcp_id, peer=True), opts, NOW)
    assert plan is not None and plan.vrrp is not None
    try:
        applier.apply(net, plan, network_exists=True)
        first = applier.keepalived.pid(net)
        assert first is not None and procfs.pid_in_netns(first, ns)
        assert first in applier.children(net)
        conf = Path(lab.state, "dhcp_ha", net, "keepalived.conf")
        assert "unicast_peer {\n        10.6.0.3\n    }" in conf.read_text()
        # No advert from the peer: it becomes master and adds the address (about 3 adverts).
        wait_for(lambda: VIP in v4(ns, plan.interface), timeout=30)
        assert applier.vrrp_state(net, plan) == "active"

        # A pass in sync and an agent restart (a new applier) keep it, and its address.
        applier.apply(net, plan, network_exists=True)
        DhcpApplier(settings, HaproxySupervisor(lab.state)).apply(net, plan,
                                                                 network_exists=True)
        assert applier.keepalived.pid(net) == first
        assert VIP in v4(ns, plan.interface)

        # Killed with -9 (ours, by pid): the next pass removes what it left and starts a new
        # one, which takes the address again.
        os.kill(first, signal.SIGKILL)
        wait_for(lambda: applier.keepalived.pid(net) is None, timeout=10)
        applier.apply(net, plan, network_exists=True)
        second = applier.keepalived.pid(net)
        assert second is not None and second != first
        wait_for(lambda: VIP in v4(ns, plan.interface), timeout=30)

        # The peer's DHCP port is gone: keepalived stops, the address stays as a plain one.
        alone = desired_dhcp_state(network(net, dhcp_id, peer=False), opts, NOW)
        assert alone is not None and alone.vrrp is None
        applier.apply(net, alone, network_exists=True)
        assert applier.keepalived.pid(net) is None and not procfs.live_argv(second)
        assert v4(ns, alone.interface) == {"10.6.0.2/24", VIP, "169.254.169.254/32"}
        assert applier.keepalived_ids() == []
    finally:
        applier.apply(net, None, network_exists=False)
    assert not netns_exists(ns) and applier.keepalived_ids() == []
