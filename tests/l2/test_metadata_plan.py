"""The qmeta- namespace plan and diff of metadata_mode = distributed (pure, table-tested)."""

from __future__ import annotations

from typing import Any

import pytest

from openimds.l2.metadata import MetaActual, MetaSettings, desired_meta_state, diff_meta
from openimds.proxy.haproxy import ProxyDefaults
from openimds.reconcile import actions as act

NET = "5e0d4f1a-0000-4000-8000-00000000000a"
SUB = {"id": "s1", "network_id": NET, "cidr": "10.0.0.0/24"}
NETWORK = {"id": NET, "mtu": 1450, "provider:network_type": "vxlan"}
META = {"id": "m0000000-aaaa", "network_id": NET, "device_owner": "network:distributed",
        "device_id": f"qmeta-{NET}", "mac_address": "FA:16:3E:00:00:99", "binding:host_id": "",
        "fixed_ips": [{"subnet_id": "s1", "ip_address": "10.0.0.2"}]}


def vm(host: str, owner: str = "compute:nova") -> dict[str, Any]:
    return {"id": f"vm-{host}", "network_id": NET, "device_owner": owner, "device_id": "i",
            "binding:host_id": host, "fixed_ips": [{"subnet_id": "s1", "ip_address": "10.0.0.5"}]}


DHCP = {"id": "d1", "network_id": NET, "device_owner": "network:dhcp", "device_id": "dhcp",
        "binding:host_id": "cmp-1"}


@pytest.mark.parametrize(("ports", "uplink", "expected"), [
    ([META, vm("cmp-1")], "vxlan-1001", True),
    ([META, vm("cmp-1", "baremetal:nova")], "vxlan-1001", True),
    ([META, vm("cmp-2")], "vxlan-1001", False),  # no instance of ours here
    ([META, DHCP], "vxlan-1001", False),  # a DHCP port is not an instance
    ([vm("cmp-1")], "vxlan-1001", False),  # network_node mode: no metadata port
    ([META, vm("cmp-1")], None, False),  # no bridge on this host
])
def test_namespace_exists_exactly_while_an_instance_port_is_bound_here(
        ports: list[dict[str, Any]], uplink: str | None, expected: bool) -> None:
    plan = desired_meta_state(NETWORK, [SUB], ports, "cmp-1", uplink)
    assert (plan is not None) is expected


def test_plan_holds_the_port_address_the_metadata_ip_and_the_localport() -> None:
    plan = desired_meta_state(NETWORK, [SUB], [META, vm("cmp-1")], "cmp-1", "vxlan-1001")
    assert plan is not None
    assert plan.namespace == f"qmeta-{NET}"
    assert plan.addresses == ("10.0.0.2/24", "169.254.169.254/32")
    assert (plan.mac_address, plan.mtu, plan.interface) == ("fa:16:3e:00:00:99", 1450,
                                                            "qm-m0000000-aa")
    assert plan.localport.uplink == "vxlan-1001" and plan.localport.ips == ("10.0.0.2",)
    assert desired_meta_state(None, [SUB], [META, vm("cmp-1")], "cmp-1", "vxlan-1001") is None


SETTINGS = MetaSettings(fabric="openimds-host", state_path="/s/qmeta",
                        proxy=ProxyDefaults(state_path="/s/qmeta",
                                            socket_path="/s/metadata_proxy"))


def test_diff_from_nothing_builds_namespace_port_addresses_and_proxy() -> None:
    plan = desired_meta_state(NETWORK, [SUB], [META, vm("cmp-1")], "cmp-1", "vxlan-1001")
    assert plan is not None
    out = diff_meta(NET, plan, MetaActual(), SETTINGS)
    assert [type(a) for a in out] == [act.EnsureNamespace, act.EnsurePortLink,
                                      act.SyncAddresses, act.RestoreIptables, act.EnsureProxy]
    # The token PUT's hop limit, as on the other paths (only TCP: the proxy's answers).
    restore = out[3]
    assert isinstance(restore, act.RestoreIptables) and not restore.ipv6
    assert "-I OUTPUT 1 -p tcp -j openimds-meta-OUTPUT" in restore.text
    assert "-j TTL --ttl-set 1" in restore.text


def test_diff_to_nothing_stops_the_proxy_before_the_namespace_goes() -> None:
    from openimds.linux.observe import Link

    link = Link("qm-m0000000-aa", 5, "veth", "fa:16:3e:00:00:99", 1450, True, None, 6, 0)
    actual = MetaActual(namespace_exists=True, links=(link,), proxy_configured=True)
    assert diff_meta(NET, None, actual, SETTINGS) == [
        act.StopProxy(NET), act.DeleteLink(f"qmeta-{NET}", "qm-m0000000-aa"),
        act.DeleteNamespace(f"qmeta-{NET}")]
    assert diff_meta(NET, None, MetaActual(), SETTINGS) == []


def test_retiring_port_keeps_its_namespace_until_the_deadline() -> None:
    from datetime import UTC, datetime, timedelta

    deadline = datetime(2026, 1, 1, 12, 10, tzinfo=UTC)
    retiring = {**META, "binding:profile": {
        "openimds_metadata_retiring_until": "2026-01-01T12:10:00Z"}}
    ports = [retiring, vm("cmp-1")]
    before = desired_meta_state(NETWORK, [SUB], ports, "cmp-1", "vxlan-1001",
                                deadline - timedelta(seconds=1))
    assert before is not None and before.retiring_until == deadline
    assert desired_meta_state(NETWORK, [SUB], ports, "cmp-1", "vxlan-1001", deadline) is None
    live = desired_meta_state(NETWORK, [SUB], [META, vm("cmp-1")], "cmp-1", "vxlan-1001",
                              deadline)
    assert live is not None and live.retiring_until is None
    never = {**META, "binding:profile": {"openimds_metadata_retiring_until": "never"}}
    far = datetime(2100, 1, 1, tzinfo=UTC)
    plan = desired_meta_state(NETWORK, [SUB], [never, vm("cmp-1")], "cmp-1", "vxlan-1001", far)
    assert plan is not None and plan.retiring_until is None
