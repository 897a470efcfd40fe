"""Benchmark: the metadata agent's memory with N ports indexed, and change-to-answer latency.

Not a test. Seeds a fresh SQLite inventory with N instance ports (default 10,000) on one /16,
starts the real `openimds control-api` and `openimds metadata-agent` (one worker) and a tiny
loopback stand-in for the metadata API that answers with the X-Instance-ID it was sent. Then:

* RSS of the agent process (VmRSS) once /healthz reports every port indexed;  bar <= 100 MB
* churn latency: for each of R rounds, delete an instance's port and create a new one on the
  same address for another instance; the clock starts when the create call returns and stops
  at the first agent answer naming the new instance (polled over the unix socket every ms);
  bar: p99 < 1 s
* lookup throughput: sequential keep-alive requests through the agent (for scale only).

    .venv/bin/python bench/bench_agent.py [--ports 10000] [--rounds 100]

Only processes started here are stopped (by pid). Servers bind 127.0.0.1 / a tmp unix socket.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
from aiohttp import web  # noqa: E402

from openimds.control import auth  # noqa: E402
from openimds.control.client import ControlClient  # noqa: E402
from openimds.inventory.migrate import open_store  # noqa: E402
from openimds.inventory.models import FixedIP, Network, Port, Project, Subnet  # noqa: E402

SECRET = "bench-secret"
AGENT_PW = "bench-agent"
ADMIN_PW = "bench-admin"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def address(i: int) -> str:
    n = i + 10
    return f"10.0.{n // 250}.{n % 250 + 2}"


def seed(url: str, count: int) -> tuple[str, str]:
    """`count` instance ports on one /16 network; returns (network id, subnet id)."""
    store = open_store(url)
    try:
        auth.bootstrap(store, ADMIN_PW)
        auth.create_project(store, "service", exist_ok=True)
        auth.create_user(store, "neutron", AGENT_PW, "service", "service")
        with store.session() as s:
            project = Project(name="bench")
            s.add(project)
            s.flush()
            net = Network(project_id=project.id, name="bench")
            s.add(net)
            s.flush()
            sub = Subnet(network_id=net.id, project_id=project.id, ip_version=4,
                         cidr="10.0.0.0/16", gateway_ip="10.0.0.1",
                         allocation_pools=[{"start": "10.0.0.2", "end": "10.0.255.254"}])
            s.add(sub)
            s.flush()
            ids = (project.id, net.id, sub.id)
        project_id, net_id, sub_id = ids
        for start in range(0, count, 1000):
            with store.session() as s:
                for i in range(start, min(count, start + 1000)):
                    port = Port(network_id=net_id, project_id=project_id,
                                mac_address=f"fa:16:3e:{(i >> 16) & 255:02x}:"
                                            f"{(i >> 8) & 255:02x}:{i & 255:02x}",
                                device_id=f"vm-{i}", device_owner="compute:nova")
                    port.fixed_ips = [FixedIP(subnet_id=sub_id, network_id=net_id,
                                              ip_address=address(i))]
                    s.add(port)
        return net_id, sub_id
    finally:
        store.dispose()


def start_upstream(port: int) -> None:
    """The metadata API stand-in, in a daemon thread: answers with the instance it was sent."""

    async def handle(request: web.Request) -> web.Response:
        return web.Response(text=request.headers.get("X-Instance-ID", ""))

    def run() -> None:
        async def main() -> None:
            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", handle)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", port).start()
            await asyncio.Event().wait()
        asyncio.run(main())

    threading.Thread(target=run, daemon=True).start()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def measure(args: argparse.Namespace, tmp: Path, agent: subprocess.Popen[bytes],
                  control_url: str, net_id: str) -> None:
    sock = str(tmp / "metadata_proxy")
    conn = aiohttp.UnixConnector(path=sock)
    async with aiohttp.ClientSession(connector=conn) as http:
        async def ask(ip: str) -> tuple[int, str]:
            async with http.get("http://agent/latest/meta-data/instance-id", headers={
                    "X-Forwarded-For": ip, "X-Neutron-Network-ID": net_id}) as r:
                return r.status, await r.text()

        t0 = time.monotonic()
        while True:
            try:
                async with http.get("http://agent/healthz") as r:
                    health = json.loads(await r.text())
                    if r.status == 200 and health["ports"] >= args.ports:
                        break
            except aiohttp.ClientError:
                pass
            if agent.poll() is not None or time.monotonic() - t0 > 120:
                raise SystemExit("agent did not become ready")
            await asyncio.sleep(0.05)
        sync_s = time.monotonic() - t0
        await asyncio.sleep(1.0)
        rss = rss_mb(agent.pid)

        n = 2000
        t0 = time.monotonic()
        for i in range(n):
            status, body = await ask(address(i % args.ports))
            assert status == 200 and body == f"vm-{i % args.ports}", (status, body)
        rps = n / (time.monotonic() - t0)

        latencies: list[float] = []
        async with ControlClient(control_url + "/v3", "admin", ADMIN_PW, "admin") as api:
            ports = {p["device_id"]: p for p in await api.list("ports", network_id=net_id)}
            for r in range(args.rounds):
                i = r * 37 % args.ports
                old = ports.pop(f"vm-{i}", None)
                if old is None:
                    continue
                await api.delete("ports", old["id"])
                new_vm = f"vm-{i}-r{r}"
                new = await api.create("ports", {
                    "network_id": net_id, "fixed_ips": [{"ip_address": address(i)}],
                    "device_id": new_vm, "device_owner": "compute:nova"})
                start = time.monotonic()
                while True:
                    status, body = await ask(address(i))
                    if status == 200 and body == new_vm:
                        break
                    if time.monotonic() - start > 10:
                        raise SystemExit(f"round {r}: new owner not visible after 10 s")
                    await asyncio.sleep(0.001)
                latencies.append(time.monotonic() - start)
                ports[new_vm] = new
        rss_after = rss_mb(agent.pid)

    lat = sorted(latencies)
    p50 = statistics.median(lat) * 1000
    p99 = lat[min(len(lat) - 1, int(round(0.99 * (len(lat) - 1))))] * 1000
    print(f"ports indexed:        {args.ports}  (first sync {sync_s:.2f}s)")
    print(f"agent RSS:            {rss:.1f} MB after sync, {rss_after:.1f} MB after churn "
          f"(bar <= 100 MB: {'PASS' if max(rss, rss_after) <= 100 else 'FAIL'})")
    print(f"lookups through agent: {rps:.0f} req/s sequential, one keep-alive connection")
    print(f"change -> new owner:  p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {lat[-1]*1000:.1f} ms "
          f"over {len(lat)} rounds (bar p99 < 1000 ms: {'PASS' if p99 < 1000 else 'FAIL'})")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ports", type=int, default=10000)
    ap.add_argument("--rounds", type=int, default=100)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-agent-") as d:
        tmp = Path(d)
        db = f"sqlite:///{tmp / 'inventory.sqlite'}"
        t0 = time.monotonic()
        net_id, _ = seed(db, args.ports)
        print(f"seeded {args.ports} ports in {time.monotonic() - t0:.1f}s")
        cp_port, up_port = free_port(), free_port()
        start_upstream(up_port)
        (tmp / "control.conf").write_text(
            f"[DEFAULT]\nbind_host = 127.0.0.1\nbind_port = {cp_port}\nstate_path = {tmp}\n"
            f"[database]\nconnection = {db}\n")
        (tmp / "metadata_agent.ini").write_text(
            f"[DEFAULT]\nauth_url = http://127.0.0.1:{cp_port}/v2.0\nadmin_tenant_name = "
            f"service\nadmin_user = neutron\nadmin_password = {AGENT_PW}\n"
            f"nova_metadata_host = 127.0.0.1\nnova_metadata_port = {up_port}\n"
            f"metadata_proxy_shared_secret = {SECRET}\nstate_path = {tmp}\n"
            f"metadata_workers = 1\n")
        env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
        logs = open(tmp / "procs.log", "wb")  # noqa: SIM115 - lives as long as the processes
        control = subprocess.Popen([sys.executable, "-m", "openimds", "control-api",
                                    "--config-file", str(tmp / "control.conf")],
                                   cwd=ROOT, env=env, stdout=logs, stderr=subprocess.STDOUT)
        agent = None
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    socket.create_connection(("127.0.0.1", cp_port), timeout=0.2).close()
                    break
                except OSError:
                    if control.poll() is not None or time.monotonic() > deadline:
                        raise SystemExit("control-api did not start") from None
                    time.sleep(0.1)
            agent = subprocess.Popen([sys.executable, "-m", "openimds", "metadata-agent",
                                      "--config-file", str(tmp / "metadata_agent.ini")],
                                     cwd=ROOT, env=env, stdout=logs, stderr=subprocess.STDOUT)
            asyncio.run(measure(args, tmp, agent, f"http://127.0.0.1:{cp_port}", net_id))
        except BaseException:
            logs.flush()
            sys.stderr.write((tmp / "procs.log").read_text()[-4000:])
            raise
        finally:
            if agent is not None:
                stop(agent)
            stop(control)
            logs.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
