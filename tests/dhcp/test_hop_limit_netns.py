"""The token PUT's hop limit on the DHCP path, in real namespaces: the DHCP applier installs the
mangle rules of proxy/hoplimit.py in the qdhcp- namespace next to its haproxy. Over IPv4 a
"container" behind the guest's NAT (as Docker sets it up) gets no token with limit 1 and gets
one with limit 2; over IPv6 (fe80::a9fe:a9fe) the guest sees the token answer arrive with hop
limit 1 and other answers with the default 64. dnsmasq's router advertisements (DSCP CS6)
still arrive with hop limit 255: the guest forms its SLAAC address."""

from __future__ import annotations

import os
import socketserver
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest

from openimds.control.ipam import eui64_address
from openimds.dhcp.apply import DhcpApplier
from openimds.dhcp.model import NetworkInfo, PortInfo, SubnetInfo
from openimds.dhcp.plan import DhcpOptions, desired_dhcp_state
from openimds.dhcp.settings import DhcpSettings
from openimds.proxy import HaproxySupervisor
from openimds.proxy.haproxy import ProxyDefaults
from openimds.proxy.hoplimit import HOP_LIMIT_HEADER
from tests.fabric.lab import Lab, lab, sh, wait_for  # noqa: F401 - fixture

pytestmark = pytest.mark.root
NOW = datetime.now(UTC)
PREFIX = "fd00:6e:11::/64"
GUEST_MAC = "fa:16:3e:00:11:05"
DHCP_MAC = "fa:16:3e:00:11:02"


class _Agent(BaseHTTPRequestHandler):
    """Stands in for the metadata agent: a token PUT answers with the instance's limit."""

    limit = {"value": 1}

    def _answer(self, extra: dict[str, str]) -> None:
        body = b"token-" + b"x" * 40 if extra else b"plain answer"
        self.send_response(200)
        for key, value in extra.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_PUT(self) -> None:  # noqa: N802 - stdlib API
        self._answer({HOP_LIMIT_HEADER: str(self.limit["value"])})

    def do_GET(self) -> None:  # noqa: N802 - stdlib API
        self._answer({})

    def log_message(self, *args: Any) -> None:
        pass


class _UnixServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


@pytest.fixture
def agent(lab: Lab) -> Iterator[dict[str, int]]:  # noqa: F811
    server = _UnixServer(lab.socket, _Agent)
    os.chmod(lab.socket, 0o666)  # the proxy runs unprivileged
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Agent.limit["value"] = 1
    try:
        yield _Agent.limit
    finally:
        server.shutdown()
        server.server_close()


def _curl(ns: str, method: str, url: str) -> int:
    out = sh("curl", "-g", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--noproxy", "*",
             "-m", "3", "-X", method, url, netns=ns, check=False)
    return int(out or "0")


def _counters(guest: str) -> dict[str, int]:
    """Packets the guest received from port 80 by hop limit (its own ip6tables counters)."""
    out = sh("ip6tables", "-L", "INPUT", "-v", "-x", "-n", netns=guest)
    counts = {}
    for line in out.splitlines():
        if "HL match HL ==" in line:
            counts[line.split("HL ==")[1].split()[0]] = int(line.split()[0])
    return counts


def _token_never_reaches_the_container(lab: Lab, guest: str,  # noqa: F811
                                       agent: dict[str, int]) -> None:
    """A container behind the guest's NAT (as Docker sets it up), one hop further, gets no
    token with limit 1 and gets one with limit 2; other answers reach it."""
    sh("sysctl", "-qw", "net.ipv4.ip_forward=1", netns=guest)
    box = f"oit-c-{uuid.uuid4().hex[:8]}"
    lab.namespaces.append(box)
    sh("ip", "netns", "add", box)
    gc, cg = f"hg{box[-6:]}", f"hc{box[-6:]}"
    sh("ip", "link", "add", gc, "netns", guest, "type", "veth", "peer", cg, "netns", box)
    for ns, dev, address in ((guest, gc, "10.78.0.1/24"), (box, cg, "10.78.0.2/24")):
        sh("ip", "addr", "add", address, "dev", dev, netns=ns)
        sh("ip", "link", "set", dev, "up", netns=ns)
    sh("ip", "route", "add", "default", "via", "10.78.0.1", netns=box)
    sh("iptables", "-t", "nat", "-A", "POSTROUTING", "-s", "10.78.0.0/24", "-o", "eth0",
       "-j", "MASQUERADE", netns=guest)
    agent["value"] = 1
    url4 = "http://169.254.169.254/latest/api/token"
    wait_for(lambda: _curl(guest, "GET", url4) == 200, timeout=30, interval=0.2)
    assert _curl(guest, "PUT", url4) == 200
    # The answer's TTL 1 dies at the guest's forwarding: the container never gets a token.
    assert _curl(box, "PUT", url4) == 0
    assert _curl(box, "GET", url4) == 200  # other answers are not limited
    agent["value"] = 2
    assert _curl(box, "PUT", url4) == 200


def test_token_answers_leave_the_dhcp_namespace_with_the_hop_limit(
        lab: Lab, agent: dict[str, int]) -> None:  # noqa: F811
    net = lab.new_id()
    v4 = SubnetInfo("s4", "10.31.0.0/24", 4, None, True)
    v6 = SubnetInfo("s6", PREFIX, 6, None, True, ipv6_address_mode="slaac",
                    ipv6_ra_mode="slaac")
    guest_v6 = eui64_address(PREFIX, GUEST_MAC)
    ports = (
        PortInfo(lab.new_id(), DHCP_MAC, (("s4", "10.31.0.2"),
                                          ("s6", eui64_address(PREFIX, DHCP_MAC))),
                 "network:dhcp", "d", NOW),
        PortInfo(lab.new_id(), GUEST_MAC, (("s4", "10.31.0.5"), ("s6", guest_v6)),
                 "compute:nova", "i", NOW),
    )
    network = NetworkInfo(net, "n", "p", 1500, (v4, v6), ports)
    opts = DhcpOptions(enable_isolated_metadata=True, dhcp_confs=os.path.join(lab.state, "dhcp"),
                       proxy=ProxyDefaults(state_path=lab.state, socket_path=lab.socket,
                                           user="nobody"))
    plan = desired_dhcp_state(network, opts, NOW)
    assert plan is not None and plan.rules and plan.rules6
    settings = DhcpSettings(fabric=lab.fabric, state_path=lab.state, options=opts)
    applier = DhcpApplier(settings, HaproxySupervisor(lab.state))
    applier.apply(net, plan, network_exists=True)
    # In sync: the second pass restores no rules (the rendered text matched iptables-save).
    assert [type(a).__name__ for a in applier.apply(net, plan, network_exists=True)] == [
        "EnsureProxy"]

    guest = lab.guest(net, {"id": ports[1].id, "mac_address": GUEST_MAC},
                      addresses=("10.31.0.5/24",))
    sh("ip", "route", "replace", "169.254.169.254/32", "via", "10.31.0.2", netns=guest)
    sh("sysctl", "-qw", "net.ipv6.conf.eth0.accept_ra=1", netns=guest)
    _token_never_reaches_the_container(lab, guest, agent)

    # IPv6: the router advertisement still arrives (hop limit 255), then fe80::a9fe:a9fe.
    wait_for(lambda: guest_v6 in sh("ip", "-6", "addr", "show", "dev", "eth0", netns=guest),
             timeout=60, interval=0.2)
    for hl in ("1", "64"):
        sh("ip6tables", "-A", "INPUT", "-p", "tcp", "--sport", "80", "-m", "hl", "--hl-eq", hl,
           "-j", "ACCEPT", netns=guest)
    agent["value"] = 1
    url6 = "http://[fe80::a9fe:a9fe%eth0]/latest/api/token"
    assert _curl(guest, "GET", url6) == 200
    before = _counters(guest)
    assert before["64"] > 0 and before["1"] == 0
    assert _curl(guest, "PUT", url6) == 200
    after = _counters(guest)
    assert after["1"] > 0  # the token answer's packets came with hop limit 1
    assert _curl(guest, "GET", url6) == 200
    assert _counters(guest)["1"] == after["1"]  # a later GET is back to 64


def test_token_answers_leave_a_qmeta_namespace_with_the_hop_limit(
        lab: Lab, agent: dict[str, int]) -> None:  # noqa: F811
    """metadata_mode = distributed: the l2-agent's qmeta- namespace holds the same rules."""
    from openimds.l2.metadata import MetaApplier, MetaSettings, desired_meta_state

    net, sub = lab.new_id(), lab.new_id()
    network = {"id": net, "mtu": 1500}
    meta = {"id": lab.new_id(), "network_id": net, "device_owner": "network:distributed",
            "device_id": f"qmeta-{net}", "mac_address": "fa:16:3e:00:13:02",
            "fixed_ips": [{"subnet_id": sub, "ip_address": "10.32.0.2"}]}
    vm = {"id": lab.new_id(), "network_id": net, "device_owner": "compute:nova",
          "device_id": "i", "binding:host_id": "cmp-1", "mac_address": "fa:16:3e:00:13:05",
          "fixed_ips": [{"subnet_id": sub, "ip_address": "10.32.0.5"}]}
    subnet = {"id": sub, "network_id": net, "cidr": "10.32.0.0/24"}
    plan = desired_meta_state(network, [subnet], [meta, vm], "cmp-1", f"vx-{lab.tag[:6]}")
    assert plan is not None
    applier = MetaApplier(MetaSettings(fabric=lab.fabric, state_path=lab.state,
                                       proxy=ProxyDefaults(state_path=lab.state,
                                                           socket_path=lab.socket,
                                                           user="nobody")),
                          HaproxySupervisor(lab.state))
    lab.namespaces.append(f"qmeta-{net}")
    try:
        applier.apply(net, plan)
        # In sync: the second pass restores nothing.
        assert not any(type(a).__name__ == "RestoreIptables" for a in applier.apply(net, plan))
        guest = lab.guest(net, vm, addresses=("10.32.0.5/24",))
        sh("ip", "route", "replace", "169.254.169.254/32", "via", "10.32.0.2", netns=guest)
        _token_never_reaches_the_container(lab, guest, agent)
    finally:
        applier.apply(net, None)  # also removes its localport table from the fabric
