"""DhcpApplier in real namespaces: a crash anywhere mid-apply converges on the next pass."""

from __future__ import annotations

import os
import signal
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from openimds.dhcp.apply import MARKER_NAME, DhcpApplier, files_digest
from openimds.dhcp.model import NetworkInfo, PortInfo, SubnetInfo
from openimds.dhcp.plan import DhcpOptions, desired_dhcp_state
from openimds.dhcp.settings import DhcpSettings
from openimds.linux.dnsmasq import find_dnsmasq
from openimds.linux.files import write_atomic
from openimds.linux.links import delete_link
from openimds.linux.netns import netns_exists
from openimds.linux.observe import addresses, find_link
from openimds.proxy import HaproxySupervisor
from openimds.proxy.haproxy import ProxyDefaults
from openimds.reconcile import actions as act
from tests.fabric.lab import Lab, lab  # noqa: F401 - fixture

pytestmark = pytest.mark.root
NOW = datetime.now(UTC)


def network(lab: Lab, net: str, dhcp_id: str, router: bool) -> NetworkInfo:  # noqa: F811
    subnet = SubnetInfo("s1", "10.6.0.0/24", 4, "10.6.0.1", True)
    ports = [
        PortInfo(dhcp_id, "fa:16:3e:00:06:02", (("s1", "10.6.0.2"),), "network:dhcp", "d", NOW),
        PortInfo("vm", "fa:16:3e:00:06:05", (("s1", "10.6.0.5"),), "compute:nova", "i", NOW),
    ]
    if router:
        ports.append(PortInfo("rp", "fa:16:3e:00:06:01", (("s1", "10.6.0.1"),),
                              "network:router_interface", "r", NOW))
    return NetworkInfo(net, "n", "p", 1500, (subnet,), tuple(ports))


def test_crash_mid_apply_converges(lab: Lab) -> None:  # noqa: F811
    net, dhcp_id = lab.new_id(), lab.new_id()
    opts = DhcpOptions(enable_isolated_metadata=True, dhcp_confs=os.path.join(lab.state, "dhcp"),
                       proxy=ProxyDefaults(state_path=lab.state, socket_path=lab.socket))
    settings = DhcpSettings(fabric=lab.fabric, state_path=lab.state, options=opts)
    applier = DhcpApplier(settings, HaproxySupervisor(lab.state))
    ns = f"qdhcp-{net}"
    conf = Path(opts.dhcp_confs, net)
    pidfile = str(conf / "pid")

    a = desired_dhcp_state(network(lab, net, dhcp_id, router=False), opts, NOW)
    assert a is not None
    applier.apply(net, a, network_exists=True)
    first = find_dnsmasq(pidfile)
    assert first is not None
    # A second pass over a namespace in sync changes nothing.
    assert [type(x) for x in applier.apply(net, a, network_exists=True)] == [act.EnsureProxy]

    # Crash after writing the new files but before SIGHUP: the marker shows it.
    b = desired_dhcp_state(network(lab, net, dhcp_id, router=True), opts, NOW)
    assert b is not None and b.opts != a.opts
    for path, text in b.files().items():
        write_atomic(path, text)
    redo = applier.apply(net, b, network_exists=True)
    assert act.ReloadDnsmasq in [type(x) for x in redo]
    assert find_dnsmasq(pidfile).pid == first.pid  # type: ignore[union-attr]
    assert (conf / MARKER_NAME).read_text() == f"{first.pid} {files_digest(b.files())}\n"

    # dnsmasq killed (ours, by pid): the next pass starts a new one.
    os.kill(first.pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while find_dnsmasq(pidfile) is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    applier.apply(net, b, network_exists=True)
    second = find_dnsmasq(pidfile)
    assert second is not None and second.pid != first.pid

    # The tap vanished (crash while creating the port): veth, addresses, dnsmasq come back.
    delete_link(ns, b.interface)
    applier.apply(net, b, network_exists=True)
    assert find_link(ns, b.interface) is not None
    assert {x.cidr for x in addresses(ns, b.interface) if x.family == 4} == {
        "10.6.0.2/24", "169.254.169.254/32"
    }
    third = find_dnsmasq(pidfile)
    assert third is not None and third.pid != second.pid

    # Past the lease window (plan computed later): proxy and metadata address go.
    c = desired_dhcp_state(network(lab, net, dhcp_id, router=True), opts,
                           NOW + timedelta(seconds=opts.dhcp_lease_duration + 1))
    assert c is not None and not c.metadata_proxy
    applier.apply(net, c, network_exists=True)
    assert {x.cidr for x in addresses(ns, c.interface) if x.family == 4} == {"10.6.0.2/24"}
    assert applier.proxy.pid(net) is None

    # Gone: nothing left.
    applier.apply(net, None, network_exists=False)
    assert not netns_exists(ns) and not conf.exists()
    assert find_link(lab.fabric, f"brq{net[:11]}") is None
