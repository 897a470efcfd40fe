"""Benchmark (issues 5, 14): the full metadata chain from inside a guest namespace, beside a
static haproxy, in both `metadata_proxy_identity` modes, and the memory of one more proxied
namespace.

Not a test. Starts a real `openimds all-in-one` with a benchmark fabric namespace, creates an
isolated network with one server, and plugs a client namespace into the fabric with that
server's port and address (169.254.169.254 routed via the DHCP port, as option 121 would).
wrk, run inside that namespace, then measures, with 64 connections:

* the chain, GET /openstack/latest/meta_data.json, keep-alive and with a new connection per
  request (`Connection: close`: cloud-init opens a new connection for every request), once per
  mode, each on its own all-in-one node (`--modes`, default both, side by side):
  `agent`        haproxy (qdhcp ns) -> unix socket -> metadata agent -> metadata API;
  `haproxy_map`  haproxy (listening in the qdhcp ns, identity from the map the agent keeps)
                 -> metadata API;
* in the same run, a static haproxy (`http-request return` of the same body, nbthread 1 like the
  product's proxy) in another namespace on the same bridge: the ceiling of this machine.

Bars (issue 14): keep-alive >= 25 % (goal 40 %), new connection per request >= 60 % (goal 80 %)
of the static rate of the same kind in the same node's run. CPU us per request is printed for
each process group (haproxy, agent, API, the DHCP agent that receives the proxy's log lines).

Memory: networks are added one at a time; after each one is up (dnsmasq and haproxy in its
qdhcp namespace) the Pss (smaps_rollup) of every haproxy in the benchmark's qdhcp namespaces is
summed; the marginal cost is the least-squares slope over the network count.
Bar: <= 5 MB per proxied namespace.

    .venv/bin/python bench/bench_chain.py [--duration 10] [--connections 64] [--threads 2]
        [--networks 6] [--modes agent,haproxy_map] [--workers N] [--http-server fast|aiohttp]

Root only. Every namespace and process is the benchmark's own and is removed at the end, also on
failure or Ctrl-C; requests to 169.254.169.254 leave only the client namespace.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _harness import (  # noqa: E402
    MD_ADDR,
    Node,
    NsClient,
    WrkResult,
    clean_env,
    enter_private_netns_dir,
    install_stop_handlers,
    processes_by_netns,
    pss_kb,
    run_wrk,
    slope,
    verdict,
    wait_for,
)

PATH = "/openstack/latest/meta_data.json"
CIDR, PREFIX = "10.99.0.0/24", 24
GUEST_IP, STATIC_IP = "10.99.0.10", "10.99.0.250"


async def _setup(node: Node) -> dict[str, Any]:
    async with node.api() as api:
        net, _ = await node.create_network(api, "chain", CIDR)
        server = await api.create("servers", {"name": "chain-vm",
                                              "networks": [{"uuid": net, "fixed_ip": GUEST_IP}]})
        (port,) = await api.list("ports", device_id=server["id"])
        static = await api.create("ports", {"network_id": net, "name": "static",
                                            "fixed_ips": [{"ip_address": STATIC_IP}]})
        wait_for(lambda: node.network_ready(net, processes_by_netns()), timeout=60, interval=0.2)
        dhcp_ip = await node.dhcp_ip(api, net)
    return {"net": net, "server": server["id"], "port": port, "static": static, "dhcp": dhcp_ip}


def start_static(node: Node, ns: str, body: bytes) -> None:
    """haproxy answering every request with `body`, bound to STATIC_IP:80 inside `ns`."""
    (node.state / "static.json").write_bytes(body)
    cfg = node.state / "static.cfg"
    cfg.write_text(
        f"""global
    nbthread 1
    maxconn 1024
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend static
    bind {STATIC_IP}:80
    http-request return status 200 content-type application/json file {node.state}/static.json
"""
    )
    proc = subprocess.Popen(["ip", "netns", "exec", ns, "haproxy", "-db", "-f", str(cfg)],
                            env=clean_env(), stdout=subprocess.DEVNULL)
    node.extra_pids.append(proc.pid)  # `ip netns exec` execs haproxy: the same pid

    def listening() -> bool:
        return subprocess.run(["ip", "netns", "exec", ns, "bash", "-c",
                               f"exec 3<>/dev/tcp/{STATIC_IP}/80"],
                              capture_output=True).returncode == 0

    wait_for(listening, timeout=10, interval=0.1)


async def _add_networks(node: Node, count: int) -> list[tuple[int, float, int]]:
    """Add networks one by one; after each is up: (networks, haproxy Pss MB, haproxy count)."""
    points = []
    async with node.api() as api:
        for i in range(count + 1):
            if i:
                net, _ = await node.create_network(api, f"pss-{i}", f"10.{100 + i}.0.0/24")
                wait_for(lambda n=net: node.network_ready(n, processes_by_netns()), timeout=60,
                         interval=0.1)
            time.sleep(1.0)  # let the new haproxy finish starting before reading its memory
            # Every network must still have its proxy: a missing one would bias the slope.
            wait_for(lambda: all(node.network_ready(n, processes_by_netns())
                                 for n in node.network_ids), timeout=30, interval=0.2)
            pids = node.proxy_pids()  # by config path: in map mode haproxy is outside the ns
            kb = sum(pss_kb(pid) for pid in pids)
            points.append((len(node.network_ids), kb / 1024, len(pids)))
    return points


MODES = ("agent", "haproxy_map")


def run_mode(mode: str, args: argparse.Namespace) -> dict[str, Any]:
    """One all-in-one node with `[DEFAULT] metadata_proxy_identity = mode`: the static
    reference and the chain, keep-alive and new connection per request, in this node's run."""
    extra = f"metadata_proxy_identity = {mode}\n"
    if args.workers:
        extra += f"metadata_workers = {args.workers}\n"
    if args.http_server:
        extra += f"metadata_http_server = {args.http_server}\n"
    # One guest sends thousands of requests per second by design: the agent's per-guest
    # limiter (issue 16, on by default: burst 200, 5/s) would answer nearly all of them 429.
    # The last section of the file.
    extra += "\n[metadata_rate_limiting]\ninstance_rate_limit_enabled = false\n"
    # Likewise wrk's 64 connections all come from the one guest address: the proxy's
    # per-source connection cap (issue 16, 32 by default) would reset half of them at accept.
    extra += "\n[metadata_haproxy]\nmax_connections_per_source = 0\n"
    node = Node(extra_conf=extra)
    try:
        t0 = time.monotonic()
        node.start()
        print(f"[{mode}] all-in-one up in {time.monotonic() - t0:.1f}s (state {node.state})",
              flush=True)
        s = asyncio.run(_setup(node))
        guest = node.client_ns(s["net"], s["port"], [GUEST_IP], PREFIX, s["dhcp"])
        static_ns = node.client_ns(s["net"], s["static"], [STATIC_IP], PREFIX, s["dhcp"])
        client = NsClient(guest, node)
        try:
            first = client.call(op="poll", ns=guest, src=GUEST_IP, uuid=s["server"], timeout=30)
            if not first["ok"]:
                raise RuntimeError(f"metadata not served: {first}")
            answer = client.call(op="get", ns=guest, src=GUEST_IP, path=PATH)
        finally:
            client.close()
        body = answer["body"].encode()
        start_static(node, static_ns, body)

        common = {"threads": args.threads, "connections": args.connections,
                  "duration": args.duration}
        close = ["Connection: close"]
        results: list[WrkResult] = []
        cpu: dict[str, str] = {}
        static_pids = node.extra_pids[-1:]
        for name, url, hdrs in (
            ("static haproxy keep-alive", f"http://{STATIC_IP}{PATH}", []),
            ("chain keep-alive", f"http://{MD_ADDR}{PATH}", []),
            ("static haproxy new conn", f"http://{STATIC_IP}{PATH}", close),
            ("chain new conn", f"http://{MD_ADDR}{PATH}", close),
        ):
            # The DHCP agent too: without /dev/log it receives the proxy's per-request log
            # lines (linux/logsink.py), a cost of the chain that runs in neither process.
            meter = node.cpu_meter(static=lambda: static_pids,
                                   dhcp_agent=lambda: node.service_pids("dhcp-agent"))
            meter.start()
            r = run_wrk(name, guest, url, headers=hdrs, **common)
            meter.stop()
            cpu[name] = meter.report(r.requests)
            results.append(r)
            print(f"  [{mode}] ran {name}: {r.rps:.0f} req/s", flush=True)
        points = asyncio.run(_add_networks(node, args.networks)) if args.networks else []
        return {"mode": mode, "results": results, "cpu": cpu, "points": points,
                "body": len(body), "guest": guest}
    finally:
        node.cleanup()


def report(run: dict[str, Any], args: argparse.Namespace) -> tuple[float, float, int]:
    mode, results, cpu = run["mode"], run["results"], run["cpu"]
    by = {r.name: r for r in results}
    print()
    print(f"== metadata_proxy_identity = {mode}: GET {PATH} ({run['body']} B), "
          f"{args.connections} connections, {args.threads} wrk threads, {args.duration}s each, "
          f"from inside guest namespace {run['guest']}")
    print(f"{'':28s} {'req/s':>10s} {'p50 ms':>9s} {'p99 ms':>9s} {'requests':>9s} "
          f"{'non-2xx':>8s} {'sock err':>8s} {'vs static':>9s}")
    for r in results:
        ref = by["static haproxy " + ("keep-alive" if "keep" in r.name else "new conn")]
        print(f"{r.name:28s} {r.rps:10.0f} {r.p50_ms:9.2f} {r.p99_ms:9.2f} {r.requests:9d} "
              f"{r.non2xx:8d} {r.socket_errors:8d} {r.rps / ref.rps:9.1%}")
    print("CPU by process group during each run (the machine has 2 cores):")
    for name, text in cpu.items():
        print(f"  {name}: {text}")
    ratio = by["chain keep-alive"].rps / by["static haproxy keep-alive"].rps
    fresh = by["chain new conn"].rps / by["static haproxy new conn"].rps
    errors = sum(by[n].non2xx + by[n].socket_errors for n in ("chain keep-alive",
                                                              "chain new conn"))
    print(f"chain keep-alive / static keep-alive = {ratio:.1%} (issue 14: bar >= 25%: "
          f"{verdict(ratio >= 0.25 and errors == 0)}, goal >= 40%: "
          f"{verdict(ratio >= 0.40 and errors == 0)}"
          f"{'' if errors == 0 else f'; {errors} errors'})")
    print(f"chain new conn / static new conn = {fresh:.1%} (issue 14: bar >= 60%: "
          f"{verdict(fresh >= 0.60 and errors == 0)}, goal >= 80%: "
          f"{verdict(fresh >= 0.80 and errors == 0)})")
    points = run["points"]
    if len(points) >= 2:
        print(f"{'networks':>8s} {'haproxy':>8s} {'Pss MB (sum)':>13s}")
        for n, mb, procs in points:
            print(f"{n:8d} {procs:8d} {mb:13.2f}")
        marginal = slope([p[0] for p in points], [p[1] for p in points])
        last = points[-1][1] - points[-2][1]
        print(f"marginal haproxy Pss per proxied namespace: {marginal:.2f} MB (slope), "
              f"{last:.2f} MB (last step) (bar <= 5 MB: {verdict(marginal <= 5)})")
    return ratio, fresh, errors


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2, help="wrk threads")
    ap.add_argument("--networks", type=int, default=6,
                    help="networks added for the Pss slope (0 = skip)")
    ap.add_argument("--modes", default=",".join(MODES),
                    help=f"metadata_proxy_identity values to run, in order ({', '.join(MODES)})")
    ap.add_argument("--workers", type=int, help="metadata_workers (agent and API); "
                    "default: the product's")
    ap.add_argument("--http-server", choices=("fast", "aiohttp"),
                    help="metadata_http_server of the metadata API; default: the product's")
    args = ap.parse_args()
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not modes or any(m not in MODES for m in modes):
        ap.error(f"--modes takes {', '.join(MODES)}")
    for tool in ("wrk", "haproxy", "dnsmasq"):
        if shutil.which(tool) is None:
            ap.error(f"{tool} not found on PATH")
    enter_private_netns_dir()
    install_stop_handlers()
    runs = [run_mode(mode, args) for mode in modes]
    summary = [(run["mode"], *report(run, args)) for run in runs]
    print()
    print("side by side (each ratio against the static haproxy of the same node's run):")
    print(f"{'metadata_proxy_identity':24s} {'keep-alive':>11s} {'new conn':>9s}")
    for mode, ratio, fresh, errors in summary:
        print(f"{mode:24s} {ratio:11.1%} {fresh:9.1%}"
              f"{'' if errors == 0 else f'   ({errors} errors)'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
