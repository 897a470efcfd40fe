"""The token PUT's hop limit on the wire: a real haproxy in a proxy namespace, the mangle
rules of proxy/hoplimit.py, a guest namespace and a "container" namespace one hop behind it.

With limit 1 the guest gets its token and the container (whose packets the guest forwards) does
not; with limit 2 both do. Other answers are never limited."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from aiohttp import web

from openimds.l3.plan import render_iptables_restore
from openimds.linux.iptables import IptablesState
from openimds.proxy.haproxy import Bind, ProxySpec, render_haproxy_cfg
from openimds.proxy.hoplimit import HOP_LIMIT_HEADER, ttl_rules

NET = "6e2b1c2a-6d1b-4b7e-9a8e-2b7f3c1d0a11"


def sh(*argv: str, netns: str | None = None, input: str | None = None) -> str:
    cmd = ["ip", "netns", "exec", netns, *argv] if netns else list(argv)
    proc = subprocess.run(cmd, capture_output=True, text=True, input=input, timeout=30)
    assert proc.returncode == 0, (cmd, proc.stderr)
    return proc.stdout


def upstream(limit: dict[str, int]) -> web.Server:
    async def handle(request: web.BaseRequest) -> web.Response:
        if request.method == "PUT":
            return web.Response(text="token-" + "x" * 40,
                                headers={HOP_LIMIT_HEADER: str(limit["value"])})
        return web.Response(text="plain answer")

    return web.Server(handle)


# The proxies run as an unprivileged user by default (haproxy drops privileges): the hop limit
# must hold then too, not only for a proxy that stays root.
@pytest.fixture(params=[None, "nobody"], ids=["root", "unprivileged"])
async def lab(request: pytest.FixtureRequest, make_netns: Callable[[str], str], tmp_path: Path
              ) -> AsyncIterator[tuple[str, str, dict[str, int]]]:
    proxy, guest, box = make_netns("hpx"), make_netns("hgu"), make_netns("hct")
    tag = proxy[-6:]
    pg, gp, gc, cg = f"hp{tag}", f"hg{tag}", f"hc{tag}", f"hx{tag}"
    sh("ip", "link", "add", pg, "netns", proxy, "type", "veth", "peer", gp, "netns", guest)
    sh("ip", "link", "add", gc, "netns", guest, "type", "veth", "peer", cg, "netns", box)
    for ns, dev, addr in ((proxy, pg, "10.77.0.1/24"), (guest, gp, "10.77.0.2/24"),
                          (guest, gc, "10.78.0.1/24"), (box, cg, "10.78.0.2/24")):
        sh("ip", "addr", "add", addr, "dev", dev, netns=ns)
        sh("ip", "link", "set", dev, "up", netns=ns)
    sh("sysctl", "-qw", "net.ipv4.ip_forward=1", netns=guest)
    sh("ip", "route", "add", "10.78.0.0/24", "via", "10.77.0.2", netns=proxy)
    sh("ip", "route", "add", "default", "via", "10.78.0.1", netns=box)
    rules = render_iptables_restore(ttl_rules("oit-hl-", ipv6=False), IptablesState(),
                                    "oit-hl-")
    sh("iptables-restore", "--noflush", netns=proxy, input=rules)

    limit = {"value": 1}
    # pytest's tmp dirs are private to root: an unprivileged proxy needs a path it can reach.
    sockdir = Path(tempfile.mkdtemp(prefix="oit-hl-"))
    sockdir.chmod(0o755)
    sock = str(sockdir / "agent.sock")
    runner = web.ServerRunner(upstream(limit))
    await runner.setup()
    await web.UnixSite(runner, sock).start()
    os.chmod(sock, 0o666)  # an unprivileged proxy must be able to connect
    spec = ProxySpec(kind="network", resource_id=NET, binds=(Bind("10.77.0.1", 80),),
                     socket_path=sock, pidfile=str(tmp_path / "haproxy.pid"),
                     user=request.param)
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(render_haproxy_cfg(spec))
    sh("haproxy", "-f", str(cfg), netns=proxy)  # daemonises; its pid is in the pidfile
    pid = int((tmp_path / "haproxy.pid").read_text().split()[0])
    try:
        yield guest, box, limit
    finally:
        os.kill(pid, signal.SIGTERM)
        await runner.cleanup()
        shutil.rmtree(sockdir, ignore_errors=True)


def curl(ns: str, method: str) -> int:
    proc = subprocess.run(
        ["ip", "netns", "exec", ns, "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
         "--noproxy", "*", "-m", "3", "-X", method, "http://10.77.0.1/latest/api/token"],
        capture_output=True, text=True, timeout=30)
    return int(proc.stdout or "0")


async def test_hop_limit_keeps_tokens_from_one_hop_behind(
    lab: tuple[str, str, dict[str, int]],
) -> None:
    guest, box, limit = lab
    run = asyncio.to_thread
    assert await run(curl, guest, "PUT") == 200
    # The container's request arrives, but the answer's TTL 1 dies at the guest's forwarding.
    assert await run(curl, box, "PUT") == 0
    # Answers without a hop limit are not touched.
    assert await run(curl, box, "GET") == 200
    limit["value"] = 2
    assert await run(curl, box, "PUT") == 200
