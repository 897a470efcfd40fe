"""The DHCP plan made real in a test namespace: tap, addresses, files and dnsmasq's argv.

Checks that the planned argv and files are accepted by the real dnsmasq (it stays up and
listens on the tap) and that the addresses land on the tap. dnsmasq is stopped by its pid.
"""

from __future__ import annotations

import dataclasses
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from openimds.dhcp.model import NetworkInfo, PortInfo, SubnetInfo
from openimds.dhcp.plan import DhcpOptions, desired_dhcp_state
from openimds.linux.addresses import ensure_address, list_addresses
from openimds.linux.links import ensure_veth_pair, set_link
from openimds.linux.process import spawn

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_planned_dnsmasq_runs_on_planned_tap(
    make_netns: Callable[[str], str], tmp_path: Path
) -> None:
    subnet = SubnetInfo("s1", "192.168.111.0/24", 4, None, True, dns_nameservers=("192.168.111.1",))
    dhcp = PortInfo(
        "25fabc7f-c2aa-4d3c",
        "fa:16:3e:00:00:02",
        (("s1", "192.168.111.1"),),
        "network:dhcp",
        "dhcp-x",
        T0,
    )
    vm = PortInfo(
        "vm-port", "fa:16:3e:00:00:05", (("s1", "192.168.111.5"),), "compute:nova", "i", T0
    )
    network = NetworkInfo("net-1", "n", "p", 1500, (subnet,), (dhcp, vm))
    tmp_path.chmod(0o755)  # dnsmasq reads its files after dropping to its own user
    opts = DhcpOptions(enable_isolated_metadata=True, dhcp_confs=str(tmp_path))
    plan = desired_dhcp_state(network, opts, T0)
    assert plan is not None

    fabric, ns = make_netns("fab"), make_netns("qdhcp")  # stand-in for plan.namespace
    ensure_veth_pair(fabric, "oitd-net1", ns, plan.interface)
    set_link(fabric, "oitd-net1", up=True)
    set_link(ns, plan.interface, mac=plan.mac_address, mtu=plan.mtu, up=True)
    for cidr in plan.addresses:
        ensure_address(ns, plan.interface, cidr)
    assert {a.cidr for a in list_addresses(ns, plan.interface) if a.family == 4} == {
        "192.168.111.1/24",
        "169.254.169.254/32",
    }

    Path(plan.conf_dir).mkdir(mode=0o755)
    for path, text in plan.files().items():
        Path(path).write_text(text)
        Path(path).chmod(0o644)
    assert (
        Path(plan.dnsmasq.opts_file)
        .read_text()
        .startswith("tag:tag0,option:classless-static-route,169.254.169.254/32,192.168.111.1\n")
    )
    argv = plan.dnsmasq.argv()
    proc = spawn(argv, netns=ns, stderr=subprocess.PIPE)
    try:
        # dnsmasq opens its DHCP and DNS sockets one after the other (and the DNS one only
        # once the address is usable): wait for both, never assert right after the first.
        deadline = time.monotonic() + 10
        listening = ""
        while time.monotonic() < deadline and proc.poll() is None:
            listening = subprocess.run(
                ["ip", "netns", "exec", ns, "ss", "-Hlnu"], capture_output=True, text=True
            ).stdout
            if ":67 " in listening and "192.168.111.1:53" in listening:
                break
            time.sleep(0.05)
        err = b"" if proc.poll() is None else proc.stderr.read()  # type: ignore[union-attr]
        assert proc.poll() is None, f"dnsmasq exited: {err!r} argv={argv}"
        assert ":67 " in listening  # DHCP socket open inside the namespace
        assert "192.168.111.1:53" in listening  # DNS served on the DHCP port (seed shape)
    finally:
        proc.kill()
        proc.wait(timeout=5)
    # No DNS at all with serve_dns=False.
    assert dataclasses.replace(plan.dnsmasq, serve_dns=False).argv()[-1] == "--port=0"
