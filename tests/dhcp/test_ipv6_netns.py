"""IPv6 on an isolated network, in real namespaces: dnsmasq in the DHCP namespace sends the
router advertisements (`ipv6_ra_mode` slaac / dhcpv6-stateless / dhcpv6-stateful), a guest
forms the SLAAC address the control plane gave its port (EUI-64), or gets its fixed IP from
dnsmasq over DHCPv6 with ISC dhclient, and reaches fe80::a9fe:a9fe on the DHCP port both from
its link-local address and from its global address (the source haproxy forwards is the one the
guest sent from: the agent then identifies it by EUI-64 MAC or by fixed IP)."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from openimds.control.ipam import eui64_address
from openimds.dhcp.apply import DhcpApplier
from openimds.dhcp.model import NetworkInfo, PortInfo, SubnetInfo
from openimds.dhcp.plan import DhcpOptions, DhcpPlan, desired_dhcp_state
from openimds.dhcp.settings import DhcpSettings
from openimds.proxy import HaproxySupervisor
from openimds.proxy.haproxy import ProxyDefaults
from tests.fabric.lab import Lab, lab, sh, wait_for  # noqa: F401 - fixture
from tests.support.daemons import stop_by_pidfile

pytestmark = pytest.mark.root
NOW = datetime.now(UTC)
PREFIX = "fd00:6e:10::/64"
GUEST_MAC = "fa:16:3e:00:10:05"
DHCP_MAC = "fa:16:3e:00:10:02"

# ISC dhclient hook: only `ip` on the interface, never /etc (MACHINE-NOTES).
DHCLIENT6_SCRIPT = """#!/bin/sh
case "$reason" in
  BOUND6|RENEW6|REBIND6)
    [ -n "$new_ip6_address" ] && ip -6 addr replace "$new_ip6_address/$new_ip6_prefixlen" \
        dev "$interface" nodad ;;
esac
exit 0
"""


def _network(lab: Lab, net: str, mode: str, guest_ip: str) -> NetworkInfo:  # noqa: F811
    subnet = SubnetInfo("s6", PREFIX, 6, None, True, dns_nameservers=("fd00:6e:10::53",),
                        ipv6_address_mode=mode, ipv6_ra_mode=mode)
    dhcp_ip = eui64_address(PREFIX, DHCP_MAC) if mode != "dhcpv6-stateful" else "fd00:6e:10::2"
    ports = (
        PortInfo(lab.new_id(), DHCP_MAC, (("s6", dhcp_ip),), "network:dhcp", "d", NOW),
        PortInfo(lab.new_id(), GUEST_MAC, (("s6", guest_ip),), "compute:nova", "i", NOW),
    )
    return NetworkInfo(net, "n", "p", 1500, (subnet,), ports)


@pytest.fixture
def applied(lab: Lab, request: pytest.FixtureRequest) -> Iterator[tuple[Lab, str, str, DhcpPlan]]:  # noqa: F811
    """(lab, network id, guest namespace, plan) for an isolated network in `request.param` mode."""
    mode, guest_ip = request.param
    net = lab.new_id()
    network = _network(lab, net, mode, guest_ip)
    opts = DhcpOptions(enable_isolated_metadata=True, dhcp_confs=os.path.join(lab.state, "dhcp"),
                       proxy=ProxyDefaults(state_path=lab.state, socket_path=lab.socket))
    plan = desired_dhcp_state(network, opts, NOW)
    assert plan is not None
    lab.echo_agent()
    settings = DhcpSettings(fabric=lab.fabric, state_path=lab.state, options=opts)
    # dnsmasq and haproxy live in the qdhcp- namespace: the lab's cleanup stops them by pid.
    DhcpApplier(settings, HaproxySupervisor(lab.state)).apply(net, plan, network_exists=True)
    guest_port = {"id": network.ports[1].id, "mac_address": GUEST_MAC}
    guest = lab.guest(net, guest_port)
    # A guest OS accepts router advertisements on its interface (not a router itself).
    sh("sysctl", "-qw", "net.ipv6.conf.eth0.accept_ra=1", "net.ipv6.conf.eth0.autoconf=1",
       netns=guest)
    yield lab, net, guest, plan


def _addresses(guest: str) -> dict[str, dict[str, object]]:
    out = json.loads(sh("ip", "-j", "-6", "addr", "show", "dev", "eth0", netns=guest))
    return {a["local"]: a for link in out for a in link.get("addr_info", [])}


def _usable(guest: str, address: str) -> bool:
    found = _addresses(guest).get(address)
    return found is not None and not found.get("tentative")


def _fetch(lab: Lab, guest: str, *extra: str) -> dict[str, object]:  # noqa: F811
    rc, body = lab.curl(guest, "http://[fe80::a9fe:a9fe%eth0]/latest/meta-data/",
                        extra=("-g", *extra))
    assert rc == 0, f"curl exit {rc}"
    return dict(json.loads(body)["headers"])


SLAAC_IP = eui64_address(PREFIX, GUEST_MAC)
LINK_LOCAL = eui64_address("fe80::/64", GUEST_MAC)


@pytest.mark.parametrize("applied", [("slaac", SLAAC_IP), ("dhcpv6-stateless", SLAAC_IP)],
                         indirect=True, ids=["slaac", "dhcpv6-stateless"])
def test_slaac_guest_forms_its_fixed_ip_and_reaches_fe80_metadata(
        applied: tuple[Lab, str, str, DhcpPlan]) -> None:
    the_lab, net, guest, plan = applied
    assert "--ra-param" in " ".join(plan.dnsmasq.argv())
    wait_for(lambda: _usable(guest, LINK_LOCAL), timeout=30, interval=0.2)
    # The advertisement arrives (answering the guest's solicitation or unsolicited).
    wait_for(lambda: _usable(guest, SLAAC_IP), timeout=60, interval=0.2)
    routes = sh("ip", "-6", "route", netns=guest)
    assert "fd00:6e:10::/64 dev eth0" in routes
    assert "default" not in routes  # router lifetime 0: the DHCP port routes nothing
    mtu = json.loads(sh("ip", "-j", "link", "show", "eth0", netns=guest))[0]["mtu"]
    assert mtu == 1500

    # From the link-local address (the kernel's choice for a link-local destination) ...
    headers = _fetch(the_lab, guest)
    assert headers["x-forwarded-for"] == LINK_LOCAL
    assert headers["x-neutron-network-id"] == net
    # ... and from the global SLAAC address.
    headers = _fetch(the_lab, guest, "--interface", SLAAC_IP)
    assert headers["x-forwarded-for"] == SLAAC_IP
    assert headers["x-neutron-network-id"] == net


STATEFUL_IP = "fd00:6e:10::5"


def _dhclient() -> str:
    dhclient = shutil.which("dhclient")
    if dhclient is None:
        from tests.conftest import IN_CI

        if IN_CI:
            pytest.fail("dhclient missing (apt-get install isc-dhcp-client)")
        pytest.skip("dhclient missing (apt-get install isc-dhcp-client)")
    return dhclient


@pytest.mark.parametrize("applied", [("dhcpv6-stateless", SLAAC_IP)], indirect=True,
                         ids=["dhcpv6-stateless"])
def test_dhcpv6_stateless_guest_gets_the_subnet_dns_servers(
        applied: tuple[Lab, str, str, DhcpPlan], tmp_path: Path) -> None:
    """The O flag's other half: an information request answered with the subnet's DNS
    servers (the opts file's tag), no address."""
    dhclient = _dhclient()
    _, _, guest, _ = applied
    # dhclient binds the link-local address: it must be past DAD.
    wait_for(lambda: _usable(guest, LINK_LOCAL), timeout=30, interval=0.2)
    wait_for(lambda: _usable(guest, SLAAC_IP), timeout=60, interval=0.2)
    got = tmp_path / "got"
    hook = tmp_path / "hook.sh"
    hook.write_text(f'#!/bin/sh\necho "$reason $new_dhcp6_name_servers" >> {got}\nexit 0\n')
    hook.chmod(0o755)
    os.chmod(tmp_path, 0o755)
    pidfile = tmp_path / "dhclient6.pid"
    try:
        sh(dhclient, "-6", "-S", "-1", "-v", "-sf", str(hook), "-lf", str(tmp_path / "leases"),
           "-pf", str(pidfile), "eth0", netns=guest, timeout=60)
        wait_for(lambda: got.exists() and "fd00:6e:10::53" in got.read_text(), timeout=30,
                 interval=0.2)
    finally:
        stop_by_pidfile(pidfile)


@pytest.mark.parametrize("applied", [("dhcpv6-stateful", STATEFUL_IP)], indirect=True,
                         ids=["dhcpv6-stateful"])
def test_dhcpv6_stateful_guest_gets_its_fixed_ip_from_dnsmasq(
        applied: tuple[Lab, str, str, DhcpPlan], tmp_path: Path) -> None:
    dhclient = _dhclient()
    the_lab, net, guest, plan = applied
    assert "--enable-ra" in plan.dnsmasq.argv()
    wait_for(lambda: _usable(guest, LINK_LOCAL), timeout=30, interval=0.2)
    # The M-flag advertisement gives the on-link prefix and no SLAAC address.
    wait_for(lambda: "fd00:6e:10::/64 dev eth0" in sh("ip", "-6", "route", netns=guest),
             timeout=60, interval=0.2)
    script = tmp_path / "dhclient6.sh"
    script.write_text(DHCLIENT6_SCRIPT)
    script.chmod(0o755)
    os.chmod(tmp_path, 0o755)
    pidfile = tmp_path / "dhclient6.pid"
    try:
        sh(dhclient, "-6", "-1", "-v", "-sf", str(script), "-lf", str(tmp_path / "leases"),
           "-pf", str(pidfile), "eth0", netns=guest, timeout=60)
        wait_for(lambda: _usable(guest, STATEFUL_IP), timeout=30, interval=0.2)
    finally:
        stop_by_pidfile(pidfile)
    assert not any(a.startswith("fd00:6e:10:0:") for a in _addresses(guest))  # no SLAAC
    headers = _fetch(the_lab, guest, "--interface", STATEFUL_IP)
    assert headers["x-forwarded-for"] == STATEFUL_IP
    assert headers["x-neutron-network-id"] == net
