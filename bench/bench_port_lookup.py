"""Benchmark: port lookup by fixed IP with 10,000 ports, through the control-plane API.

Not a test. Seeds a fresh SQLite inventory with N ports (default 10,000) spread over M tenant
networks (default 10) that all reuse the same 10.0.0.0/16 addresses, as overlapping tenants do.
Then:

1. the query plan: EXPLAIN (QUERY PLAN on SQLite) of the exact statement the API builds for
   `GET /v2.0/ports?network_id=X&fixed_ips=ip_address=Y` must use ix_fixed_ips_ip_network
   (the script exits 1 if it does not);
2. requests/s: starts the real `openimds control-api` on a loopback port and drives that
   request with random (network, address) pairs from C concurrent keep-alive clients for D
   seconds; prints requests/s and latency percentiles, and checks every answer names exactly
   the seeded port.

    .venv/bin/python bench/bench_port_lookup.py [--ports 10000] [--networks 10]
        [--duration 10] [--concurrency 16]

Only the server process started here is stopped (by pid). It binds 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
from sqlalchemy import text  # noqa: E402
from sqlalchemy.dialects import sqlite  # noqa: E402

from openimds.control import auth  # noqa: E402
from openimds.control.call import Call, Settings  # noqa: E402
from openimds.control.context import RequestContext  # noqa: E402
from openimds.control.ports import LIST_SPEC, list_statement  # noqa: E402
from openimds.control.resources import parse_filters  # noqa: E402
from openimds.inventory.migrate import open_store  # noqa: E402
from openimds.inventory.models import FixedIP, Network, Port, Subnet  # noqa: E402
from openimds.inventory.store import Store  # noqa: E402

INDEX = "ix_fixed_ips_ip_network"
PASSWORD = "bench-pw"


def seed(store: Store, ports: int, networks: int) -> tuple[RequestContext, dict[str, list[str]]]:
    """N ports over M networks, the same addresses on every network. Returns the admin context
    and network id -> addresses."""
    project_id, user_id = auth.bootstrap(store, PASSWORD)
    ctx = RequestContext(user_id, "admin", project_id, "admin", ("admin",))
    per_net = -(-ports // networks)
    hosts = ipaddress.ip_network("10.0.0.0/16").hosts()
    addresses = [str(next(hosts)) for _ in range(per_net + 1)][1:]  # .1 is the gateway
    layout: dict[str, list[str]] = {}
    made = 0
    for n in range(networks):
        with store.session() as s:
            net = Network(project_id=project_id, name=f"bench-{n}")
            s.add(net)
            s.flush()
            sub = Subnet(network_id=net.id, project_id=project_id, ip_version=4,
                         cidr="10.0.0.0/16", gateway_ip="10.0.0.1", enable_dhcp=False,
                         allocation_pools=[{"start": "10.0.0.2", "end": "10.0.255.254"}])
            s.add(sub)
            s.flush()
            count = min(per_net, ports - made)
            for i in range(count):
                port = Port(network_id=net.id, project_id=project_id,
                            mac_address=f"fa:16:3e:{n:02x}:{i >> 8:02x}:{i & 255:02x}",
                            device_id=f"vm-{n}-{i}", device_owner="compute:nova")
                port.fixed_ips = [FixedIP(subnet_id=sub.id, network_id=net.id,
                                          ip_address=addresses[i])]
                s.add(port)
            made += count
            layout[net.id] = addresses[:count]
    return ctx, layout


def query_plan(store: Store, ctx: RequestContext, network_id: str, ip: str) -> list[str]:
    call = Call(store=store, settings=Settings(), ctx=ctx,
                query=[("network_id", network_id), ("fixed_ips", f"ip_address={ip}")])
    stmt = list_statement(call, parse_filters(call, LIST_SPEC, special=("fixed_ips",)))
    sql = str(stmt.compile(dialect=sqlite.dialect(), compile_kwargs={"literal_binds": True}))
    with store.read() as s:
        rows = s.execute(text("EXPLAIN QUERY PLAN " + sql)).all()
    return [str(r[-1]) for r in rows]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def drive(url: str, token: str, layout: dict[str, list[str]], duration: float,
                concurrency: int) -> tuple[int, list[float], int]:
    pairs = [(net, ip) for net, ips in layout.items() for ip in ips]
    latencies: list[float] = []
    wrong = 0
    stop = time.monotonic() + duration
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector,
                                     headers={"X-Auth-Token": token}) as http:

        async def worker(seed_value: int) -> None:
            nonlocal wrong
            rnd = random.Random(seed_value)
            while time.monotonic() < stop:
                net, ip = rnd.choice(pairs)
                t0 = time.perf_counter()
                async with http.get(f"{url}/v2.0/ports", params=[
                        ("network_id", net), ("fixed_ips", f"ip_address={ip}")]) as resp:
                    body = await resp.json()
                latencies.append(time.perf_counter() - t0)
                found = body.get("ports", [])
                if (resp.status != 200 or len(found) != 1
                        or found[0]["fixed_ips"][0]["ip_address"] != ip):
                    wrong += 1

        await asyncio.gather(*(worker(i) for i in range(concurrency)))
    return len(latencies), latencies, wrong


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ports", type=int, default=10_000)
    parser.add_argument("--networks", type=int, default=10)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="openimds-bench-"))
    store = open_store(f"sqlite:///{tmp / 'openimds.sqlite'}")
    t0 = time.monotonic()
    ctx, layout = seed(store, args.ports, args.networks)
    total = sum(len(v) for v in layout.values())
    print(f"seeded {total} ports on {len(layout)} networks in {time.monotonic() - t0:.1f}s")

    net0 = next(iter(layout))
    plan = query_plan(store, ctx, net0, layout[net0][len(layout[net0]) // 2])
    print("EXPLAIN QUERY PLAN (GET /v2.0/ports?network_id=X&fixed_ips=ip_address=Y):")
    for line in plan:
        print(f"  {line}")
    uses_index = any(INDEX in line for line in plan)
    print(f"uses {INDEX}: {'yes' if uses_index else 'NO'}")
    store.dispose()

    port = free_port()
    conf = tmp / "control.conf"
    conf.write_text(f"[DEFAULT]\nstate_path = {tmp}\nbind_host = 127.0.0.1\n"
                    f"bind_port = {port}\n")
    log = open(tmp / "server.log", "w")  # noqa: SIM115 - closed in finally
    server = subprocess.Popen([sys.executable, "-m", "openimds", "control-api",
                               "--config-file", str(conf)], stdout=log,
                              stderr=subprocess.STDOUT, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(url + "/", timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    print((tmp / "server.log").read_text(), file=sys.stderr)
                    return 1
                time.sleep(0.1)
        store = open_store(f"sqlite:///{tmp / 'openimds.sqlite'}", migrate=False)
        token = auth.issue_token(store, "admin", PASSWORD, project_name="admin").token
        store.dispose()
        count, latencies, wrong = asyncio.run(
            drive(url, token, layout, args.duration, args.concurrency))
    finally:
        server.terminate()  # the one process this script started
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()

    latencies.sort()
    pct = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else latencies * 99
    print(f"lookups: {count} in {args.duration:.0f}s with {args.concurrency} clients -> "
          f"{count / args.duration:.0f} requests/s")
    print(f"latency: p50 {pct[49] * 1000:.2f} ms, p99 {pct[98] * 1000:.2f} ms, "
          f"max {latencies[-1] * 1000:.2f} ms")
    print(f"wrong answers: {wrong}")
    return 0 if uses_index and wrong == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
