"""haproxy never runs as root and always logs (issue 16, defect 9): the DHCP agent, running as
root with no metadata_proxy_user, starts its proxy as a dedicated user that still reaches the
agent's group-writable (0664) socket, and with no /dev/log the proxy's lines arrive in the
agent's own log through its sink."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import pytest

from openimds.dhcp.agent import DhcpAgent
from openimds.dhcp.apply import DhcpApplier
from openimds.dhcp.plan import DhcpOptions
from openimds.dhcp.settings import DhcpSettings
from openimds.linux.logsink import stream_socket_path
from openimds.proxy import HaproxySupervisor
from openimds.proxy.haproxy import ProxyDefaults
from openimds.proxy.options import default_proxy_user, log_sink_path, proxy_log_stream
from openimds.reconcile import MemoryInventory
from tests.dhcp.test_agent_netns import Running
from tests.fabric import inventory as inv_rows
from tests.fabric.lab import Lab, lab, sh, wait_for  # noqa: F401 - fixture

pytestmark = pytest.mark.root


def _uid(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[2])  # effective uid
    raise AssertionError("no Uid line")


@pytest.mark.parametrize("transport", ["stream", "datagram"])
async def test_proxy_drops_root_and_logs_through_the_agent(
    lab: Lab, caplog: pytest.LogCaptureFixture, transport: str  # noqa: F811
) -> None:
    """Both ways into the agent's sink: the ring buffer forwarded over the stream socket (what
    the agents render when the host has no /dev/log) and one datagram per line."""
    inv = MemoryInventory()
    net, sub = lab.new_id(), lab.new_id()
    inv.put("network", inv_rows.network(net, [sub]))
    inv.put("subnet", inv_rows.subnet(sub, net, "10.49.0.0/24", "10.49.0.1"))
    inv.put("port", inv_rows.port(lab.new_id(), net, sub, "10.49.0.2", "network:dhcp",
                                  f"dhcp-{net}"))
    vm = inv_rows.port(lab.new_id(), net, sub, "10.49.0.5", "compute:nova", "vm")
    rev = inv.put("port", vm)
    socket_path = lab.echo_agent()
    os.chmod(socket_path, 0o664)  # what the metadata agent's `deduce` now gives
    user = default_proxy_user("")
    assert user in ("haproxy", "nobody")  # we run as root here
    sink = log_sink_path(lab.state, "dhcp-agent")
    opts = DhcpOptions(enable_isolated_metadata=True, dhcp_confs=os.path.join(lab.state, "dhcp"),
                       proxy=ProxyDefaults(state_path=lab.state, socket_path=socket_path,
                                           user=user, log_target=sink,
                                           log_stream=(proxy_log_stream(sink)
                                                       if transport == "stream" else None)))
    settings = DhcpSettings(fabric=lab.fabric, state_path=lab.state, options=opts)
    agent = DhcpAgent(inv, DhcpApplier(settings, HaproxySupervisor(lab.state)), opts,
                      fabric_namespace=lab.fabric, owns=lambda key: key in lab.ids)
    agent.log_sink_path = sink
    guest = await asyncio.to_thread(lab.guest, net, vm, addresses=("10.49.0.5/24",))
    sh("ip", "route", "replace", "169.254.169.254/32", "via", "10.49.0.2", netns=guest)

    with caplog.at_level(logging.INFO, logger="openimds.haproxy"):
        async with Running(agent):
            await agent.wait_synced(rev, timeout=30)
            pid = HaproxySupervisor(lab.state).pid(net)
            assert pid is not None and _uid(pid) != 0
            rc, body = await asyncio.to_thread(
                lab.curl, guest, "http://169.254.169.254/latest/meta-data/hostname")
            assert rc == 0 and "10.49.0.5" in body  # the echo agent saw the request

            def logged() -> list[str]:
                return [r.getMessage() for r in caplog.records
                        if r.name == "openimds.haproxy"
                        and "GET /latest/meta-data/hostname" in r.getMessage()]

            await asyncio.to_thread(wait_for, logged, 10.0)
    line = logged()[0]
    # The proxy's tag first (the ring's host name field is dropped), then its request line.
    assert line.startswith(f"haproxy-metadata-proxy-{net}[") and " 200 " in line, line
    # The agent removed its sockets on the way out.
    assert not os.path.exists(sink) and not os.path.exists(stream_socket_path(sink))
