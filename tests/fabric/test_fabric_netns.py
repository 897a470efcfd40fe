"""The fabric helpers in real namespaces: a plugged port is a veth from the network's bridge."""

from __future__ import annotations

import pytest

from openimds.linux.fabric import bridge_name, ensure_port_link, fabric_port_name, plug_port
from openimds.linux.netns import get_sysctl
from openimds.linux.observe import addresses, find_link
from tests.fabric.lab import Lab, lab, sh  # noqa: F401 - fixture

pytestmark = pytest.mark.root


def test_plug_port_and_idempotence(lab: Lab) -> None:  # noqa: F811
    net, port = lab.new_id(), lab.new_id()
    # Bridged traffic must not cross the fabric's own iptables (MACHINE-NOTES).
    assert get_sysctl(lab.fabric, "net.bridge.bridge-nf-call-iptables") in (None, "0")
    guest = lab.guest(net, {"id": port, "mac_address": "fa:16:3e:aa:bb:cc"},
                      addresses=("10.5.0.5/24",), gateway="10.5.0.1")
    eth0 = find_link(guest, "eth0")
    near = find_link(lab.fabric, fabric_port_name(port))
    assert eth0 is not None and eth0.mac == "fa:16:3e:aa:bb:cc" and eth0.up
    assert near is not None and near.master == bridge_name(net)
    assert eth0.peer_ifindex == near.ifindex
    assert {a.cidr for a in addresses(guest, "eth0") if a.family == 4} == {"10.5.0.5/24"}
    assert "default via 10.5.0.1 dev eth0" in sh("ip", "route", netns=guest)
    # Again: nothing re-created.
    assert ensure_port_link(lab.fabric, net, port, guest, "eth0", "fa:16:3e:aa:bb:cc") is False
    plug_port(lab.fabric, net, port, "fa:16:3e:aa:bb:cc", guest)
    assert find_link(guest, "eth0").ifindex == eth0.ifindex  # type: ignore[union-attr]
    # Nothing in the host namespace.
    assert find_link(lab.fabric, bridge_name(net)) is not None
    assert bridge_name(net) not in sh("ip", "-o", "link", "show")
