"""Router advertisements from the router namespace (Neutron's radvd role), in real namespaces:
a router on a slaac IPv6 subnet runs dnsmasq as an advertisement daemon; a guest forms its
SLAAC address (its fixed IP) and a default route via the router, and reaches fe80::a9fe:a9fe
on the router path from its link-local and its global address, and fd00:ec2::254 through the
default route. A second pass adopts the daemon, a killed one is started again, and the
router's removal stops it."""

from __future__ import annotations

import json
import os
import signal
from datetime import UTC, datetime

import pytest

from openimds.control.ipam import eui64_address
from openimds.l3.apply import RouterApplier, RouterSettings
from openimds.l3.model import RouterInfo, RouterInterface
from openimds.l3.plan import L3Options, desired_router_state
from openimds.linux.dnsmasq import find_dnsmasq
from openimds.proxy import HaproxySupervisor
from openimds.proxy.haproxy import ProxyDefaults
from openimds.reconcile import actions as act
from tests.fabric.lab import Lab, lab, sh, wait_for  # noqa: F401 - fixture

pytestmark = pytest.mark.root
NOW = datetime.now(UTC)
PREFIX = "fd00:6e:12::/64"
GUEST_MAC = "fa:16:3e:00:12:05"
SLAAC_IP = eui64_address(PREFIX, GUEST_MAC)
LINK_LOCAL = eui64_address("fe80::/64", GUEST_MAC)


def test_router_advertises_its_slaac_link(lab: Lab) -> None:  # noqa: F811
    rid, net = lab.new_id(), lab.new_id()
    qr_port = lab.new_id()
    router = RouterInfo(rid, "r", "p", (RouterInterface(
        qr_port, net, "fa:16:3e:00:12:01", ("fd00:6e:12::1/64",), 1450,
        ipv6_ra=((PREFIX, "slaac"),)),))
    opts = L3Options(extra_ipv6_addresses=("fd00:ec2::254",))
    plan = desired_router_state(router, opts)
    assert plan.ra is not None
    lab.echo_agent()
    settings = RouterSettings(fabric=lab.fabric, state_path=lab.state,
                              proxy=ProxyDefaults(state_path=lab.state, socket_path=lab.socket))
    applier = RouterApplier(settings, HaproxySupervisor(lab.state))
    applier.apply(rid, plan)
    pidfile = os.path.join(settings.ra_dir(rid), "pid")
    daemon = find_dnsmasq(pidfile)
    assert daemon is not None
    # In sync: the daemon is adopted, not restarted.
    again = applier.apply(rid, plan)
    assert not any(isinstance(a, act.StartDnsmasq | act.StopDnsmasq) for a in again)
    assert find_dnsmasq(pidfile) == daemon
    assert daemon.pid in applier.children(rid)  # watched by the agent like its haproxy
    # Killed (ours, by pid): the next pass starts another.
    os.kill(daemon.pid, signal.SIGKILL)
    wait_for(lambda: find_dnsmasq(pidfile) is None, timeout=10)
    applier.apply(rid, plan)
    restarted = find_dnsmasq(pidfile)
    assert restarted is not None and restarted.pid != daemon.pid

    guest = lab.guest(net, {"id": lab.new_id(), "mac_address": GUEST_MAC})
    sh("sysctl", "-qw", "net.ipv6.conf.eth0.accept_ra=1", netns=guest)
    wait_for(lambda: SLAAC_IP in sh("ip", "-6", "addr", "show", "dev", "eth0", netns=guest)
             and "tentative" not in sh("ip", "-6", "addr", "show", "dev", "eth0", netns=guest),
             timeout=60, interval=0.2)
    routes = sh("ip", "-6", "route", netns=guest)
    # dnsmasq sends from one of the qr- port's link-local addresses (it picks
    # fe80::a9fe:a9fe, which the router holds on every qr- port: a working next hop).
    default = [r for r in routes.splitlines() if r.startswith("default")]
    assert len(default) == 1 and "dev eth0 proto ra" in default[0], routes
    assert default[0].split()[2] in ("fe80::a9fe:a9fe",
                                     eui64_address("fe80::/64", "fa:16:3e:00:12:01"))
    # The advertised link MTU (the network's).
    assert sh("sysctl", "-n", "net.ipv6.conf.eth0.mtu", netns=guest).strip() == "1450"

    def fetch(url: str, *extra: str) -> dict[str, str]:
        rc, body = lab.curl(guest, url, extra=("-g", *extra))
        assert rc == 0, f"curl exit {rc}"
        return dict(json.loads(body)["headers"])

    got = fetch("http://[fe80::a9fe:a9fe%eth0]/latest/meta-data/")
    assert got["x-neutron-router-id"] == rid and got["x-forwarded-for"] == LINK_LOCAL
    got = fetch("http://[fe80::a9fe:a9fe%eth0]/latest/meta-data/", "--interface", SLAAC_IP)
    assert got["x-forwarded-for"] == SLAAC_IP
    # AWS's IPv6 address through the advertised default route, from the global address.
    got = fetch("http://[fd00:ec2::254]/latest/meta-data/")
    assert got["x-neutron-router-id"] == rid and got["x-forwarded-for"] == SLAAC_IP

    # The router goes: the daemon is stopped and its files removed.
    applier.apply(rid, None)
    assert find_dnsmasq(pidfile) is None
    assert not os.path.exists(settings.ra_dir(rid))
