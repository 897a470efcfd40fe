"""The thin Linux layer in REAL namespaces (root): every check reads the kernel's state back.

Only `oit-*` namespaces made by the `make_netns` fixture are touched; links live inside them.
No packet is ever sent, least of all to 169.254.169.254 from the host namespace.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from openimds.l3.model import RouterInfo
from openimds.l3.plan import L3Options, desired_router_state, render_iptables_restore
from openimds.linux import iptables
from openimds.linux.addresses import ensure_address, list_addresses, sync_addresses
from openimds.linux.links import delete_link, ensure_bridge, ensure_veth_pair, set_link
from openimds.linux.netns import (
    BRIDGE_NF_CALL_IPTABLES,
    delete_netns,
    ensure_netns,
    get_sysctl,
    list_netns,
    netns_exists,
    set_bridge_nf_call,
    set_sysctl,
)
from openimds.linux.observe import find_link, observe_netns

MakeNs = Callable[[str], str]
HOST_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")  # read only, never written


def _ip_json(*argv: str) -> str:
    return subprocess.run(["ip", "-j", *argv], capture_output=True, text=True, check=True).stdout


def test_ensure_and_delete_netns_are_idempotent(make_netns: MakeNs) -> None:
    # Name it like the fixture and let the fixture own the cleanup if an assert fails midway.
    name = make_netns("nsverb")
    ensure_netns(name)  # already exists: success
    assert netns_exists(name) and name in list_netns("oit-nsverb-")
    lo = find_link(name, "lo")
    assert lo is not None and lo.up
    delete_netns(name)
    assert not netns_exists(name)
    delete_netns(name)  # absent: success
    ensure_netns(name)  # recreate (the fixture deletes it again at the end)
    assert netns_exists(name)


def test_ensure_netns_rejects_bad_names() -> None:
    with pytest.raises(ValueError):
        ensure_netns("")
    with pytest.raises(ValueError):
        delete_netns("../x")


def test_sysctls_inside_namespace_only(make_netns: MakeNs) -> None:
    ns = make_netns("sysctl")
    host_before = HOST_FORWARD.read_text().strip()
    set_sysctl(ns, "net.ipv4.ip_forward", 1)
    assert get_sysctl(ns, "net.ipv4.ip_forward") == "1"
    set_sysctl(ns, "net.ipv4.ip_forward", 0)
    assert get_sysctl(ns, "net.ipv4.ip_forward") == "0"
    assert HOST_FORWARD.read_text().strip() == host_before
    assert get_sysctl(ns, "net.no.such.key") is None
    if set_bridge_nf_call(ns, False):  # only when br_netfilter is loaded
        assert get_sysctl(ns, BRIDGE_NF_CALL_IPTABLES) == "0"


def test_bridge_veth_mac_mtu_master(make_netns: MakeNs) -> None:
    fabric, target = make_netns("fab"), make_netns("tgt")
    ensure_bridge(fabric, "oitbr0")
    ensure_bridge(fabric, "oitbr0")
    ensure_veth_pair(fabric, "oitv0", target, "tapoit0")
    ensure_veth_pair(fabric, "oitv0", target, "tapoit0")  # same pair: no-op
    set_link(fabric, "oitv0", master="oitbr0")
    set_link(target, "tapoit0", mac="FA:16:3E:00:00:02", mtu=1450)
    set_link(target, "tapoit0", mac="fa:16:3e:00:00:02", mtu=1450)

    state_f, state_t = observe_netns(fabric), observe_netns(target)
    br, v, tap = state_f.link("oitbr0"), state_f.link("oitv0"), state_t.link("tapoit0")
    assert br is not None and br.kind == "bridge" and br.up
    assert v is not None and v.kind == "veth" and v.master == "oitbr0" and v.up
    assert tap is not None and tap.kind == "veth" and tap.up
    assert tap.mac == "fa:16:3e:00:00:02" and tap.mtu == 1450
    assert v.peer_ifindex == tap.ifindex and tap.peer_ifindex == v.ifindex
    # Nothing of ours leaked into the host namespace.
    assert "oitv0" not in _ip_json("link", "show") and "tapoit0" not in _ip_json("link", "show")
    bridge_json = _ip_json("-n", fabric, "-d", "link", "show", "oitbr0")
    assert '"stp_state":0' in bridge_json and '"forward_delay":0' in bridge_json

    delete_link(fabric, "oitv0")
    assert find_link(fabric, "oitv0") is None and find_link(target, "tapoit0") is None
    delete_link(fabric, "oitv0")  # absent: success


def test_veth_name_reused_while_old_namespace_is_dying(make_netns: MakeNs) -> None:
    fabric = make_netns("fab")
    for _ in range(3):
        # A fresh target namespace each round, deleted without first deleting its veth: the
        # fabric end may linger. ensure_veth_pair must still produce a working pair at once.
        target = f"oit-dying-{uuid.uuid4().hex[:8]}"
        ensure_netns(target)
        try:
            ensure_veth_pair(fabric, "oitv1", target, "tapoit1")
            new_target = make_netns("tgt")
            delete_netns(target)
            ensure_veth_pair(fabric, "oitv1", new_target, "tapoit1")
            a, b = find_link(fabric, "oitv1"), find_link(new_target, "tapoit1")
            assert a is not None and b is not None and a.peer_ifindex == b.ifindex
        finally:
            delete_netns(target)


def test_veth_rejects_the_host_namespace() -> None:
    with pytest.raises(ValueError):
        ensure_veth_pair("", "oitvx", "oit-x", "tapx")
    with pytest.raises(ValueError):
        ensure_address("", "lo", "10.0.0.1/32")


def test_addresses_ensure_remove_and_ipv6_nodad(make_netns: MakeNs) -> None:
    fabric, ns = make_netns("fab"), make_netns("dhcp")
    ensure_veth_pair(fabric, "oitv2", ns, "tapoit2")
    set_link(ns, "tapoit2", up=True)
    for _ in range(2):
        ensure_address(ns, "tapoit2", "192.168.111.1/24")
        ensure_address(ns, "tapoit2", "169.254.169.254/32")
        ensure_address(ns, "tapoit2", "fe80::a9fe:a9fe/128")
    found = {a.cidr: a for a in list_addresses(ns, "tapoit2")}
    assert {"192.168.111.1/24", "169.254.169.254/32", "fe80::a9fe:a9fe/128"} <= set(found)
    assert not found["fe80::a9fe:a9fe/128"].tentative  # nodad: bindable at once
    ensure_address(ns, "tapoit2", "169.254.169.254/32", present=False)
    ensure_address(ns, "tapoit2", "169.254.169.254/32", present=False)
    assert "169.254.169.254/32" not in {a.cidr for a in list_addresses(ns, "tapoit2")}

    sync_addresses(ns, "tapoit2", ["172.31.0.4/24", "169.254.169.254/32"])
    left = {a.cidr for a in list_addresses(ns, "tapoit2") if not a.cidr.startswith("fe80::f")}
    assert left == {"172.31.0.4/24", "169.254.169.254/32"}
    # The host namespace never got any of these.
    assert "169.254.169.254" not in _ip_json("addr", "show")


ROUTER = RouterInfo("r-test", "r", "p", ())


@pytest.mark.parametrize("ipv6", [False, True])
def test_iptables_plan_applies_reads_back_and_second_apply_is_noop(
    make_netns: MakeNs, ipv6: bool
) -> None:
    ns = make_netns("qr")
    # A foreign rule that must survive everything we do.
    foreign = "*nat\n:someone-else - [0:0]\n-A POSTROUTING -j someone-else\nCOMMIT\n"
    iptables.restore(ns, foreign, ipv6=ipv6)

    plan = desired_router_state(ROUTER, L3Options())
    rules = plan.rules6 if ipv6 else plan.rules
    text = render_iptables_restore(rules, iptables.save(ns, ipv6=ipv6))
    assert text
    iptables.restore(ns, text, ipv6=ipv6)

    saved = iptables.save(ns, ipv6=ipv6)
    ours = [r for r in saved.rules() if "openimds-l3-" in r[1] or "openimds-l3-" in r[2]]
    assert sorted(ours) == sorted(rules)  # our canonical text is iptables-save's text
    assert render_iptables_restore(rules, saved) == ""  # in sync: nothing to apply
    iptables.restore(ns, render_iptables_restore(rules, saved), ipv6=ipv6)
    assert iptables.save(ns, ipv6=ipv6) == saved

    # Turn the proxy off: nat REDIRECT and INPUT guard go, mark and FORWARD drop stay.
    off = desired_router_state(ROUTER, L3Options(enable_metadata_proxy=False))
    off_rules = off.rules6 if ipv6 else off.rules
    iptables.restore(
        ns, render_iptables_restore(off_rules, iptables.save(ns, ipv6=ipv6)), ipv6=ipv6
    )
    after = iptables.save(ns, ipv6=ipv6)
    assert sorted(r for r in after.rules() if "openimds-l3-" in r[1] + r[2]) == sorted(off_rules)
    assert set(after.owned_chains("openimds-l3-")) == {"mangle", "filter"}

    # Teardown removes every chain of ours and nothing else.
    iptables.restore(ns, render_iptables_restore([], after), ipv6=ipv6)
    final = iptables.save(ns, ipv6=ipv6)
    assert final.owned_chains("openimds-l3-") == {}
    assert ("nat", "POSTROUTING", "-j someone-else") in final.rules()


def test_iptables_restore_is_atomic(make_netns: MakeNs) -> None:
    ns = make_netns("qr")
    bad = (
        "*nat\n:openimds-l3-PREROUTING - [0:0]\n-A openimds-l3-PREROUTING -j NOSUCHTARGET\nCOMMIT\n"
    )
    with pytest.raises(Exception):  # noqa: B017 - CommandFailed; what matters is nothing changed
        iptables.restore(ns, bad)
    assert iptables.save(ns).owned_chains("openimds-l3-") == {}
