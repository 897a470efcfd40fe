"""Benchmark (issue 6): bring up and tear down many isolated networks with metadata, their
memory, and `server create` -> first metadata answer inside the instance's namespace.

Not a test. Starts a real `openimds all-in-one` with a benchmark fabric namespace, then:

1. bring-up: creates N isolated networks (one DHCP subnet each, all 10.0.0.0/24: tenants
   overlap) in batches; a network is up when its qdhcp namespace holds dnsmasq and haproxy.
   Times: API calls, and create -> all up, per batch and in total.
2. memory: after each batch the Pss (smaps_rollup) of every haproxy and dnsmasq in the
   benchmark's qdhcp namespaces is summed; marginal per network = least-squares slope over the
   network count (bar <= 6 MB), also (Pss(N) - Pss(first batch)) / (N - first batch).
3. server create -> first answer: client namespaces are plugged into L of the networks; for
   each sample an address is added to the client namespace, the clock starts, the server is
   created with that fixed IP, and the namespace client (inside the namespace) asks
   meta_data.json every 5 ms until it names the new server (bar: p99 <= 1 s).
4. teardown: servers, client ports and namespaces, then every network; time until every qdhcp
   namespace and its processes are gone.

    .venv/bin/python bench/bench_network_scale.py [--networks 100] [--batch 25]
        [--samples 100] [--latency-networks 10]

Root only. Runs in a private /run/netns (see _harness.enter_private_netns_dir); everything it
creates is removed at the end, also on failure or Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _harness import (  # noqa: E402
    Node,
    NsClient,
    enter_private_netns_dir,
    install_stop_handlers,
    kill_and_delete,
    ns_pss_kb,
    percentile,
    processes_by_netns,
    sh,
    slope,
    verdict,
    wait_for,
)

CIDR, PREFIX = "10.0.0.0/24", 24
CLIENT_IP = "10.0.0.250"


def wait_all(check: Any, ids: list[str], timeout: float) -> float:
    """Seconds until check(id, table) holds for every id (polled every 50 ms)."""
    t0 = time.monotonic()
    wait_for(lambda: all(check(n, processes_by_netns()) for n in ids), timeout=timeout,
             interval=0.05)
    return time.monotonic() - t0


async def bring_up(node: Node, args: argparse.Namespace) -> dict[str, Any]:
    nets: list[str] = []
    batches = []
    async with node.api() as api:
        while len(nets) < args.networks:
            size = min(args.batch, args.networks - len(nets))
            t0 = time.monotonic()
            new = []
            for _ in range(size):
                net, _sub = await node.create_network(api, f"scale-{len(nets)}", CIDR)
                new.append(net)
                nets.append(net)
            api_s = time.monotonic() - t0
            await asyncio.to_thread(wait_all, node.network_ready, new, 600)
            up_s = time.monotonic() - t0
            time.sleep(1.0)  # new proxies finish starting before their memory is read
            wait_all(node.network_ready, nets, 60)
            names = [f"qdhcp-{n}" for n in nets]
            hap, nh = ns_pss_kb(names, ("haproxy",))
            dns, nd = ns_pss_kb(names, ("dnsmasq",))
            batches.append({"networks": len(nets), "api_s": api_s, "up_s": up_s,
                            "haproxy_mb": hap / 1024, "dnsmasq_mb": dns / 1024,
                            "procs": (nh, nd)})
            print(f"  {len(nets)} networks up (+{size} in {up_s:.1f}s)", flush=True)
    return {"nets": nets, "batches": batches}


async def latency(node: Node, nets: list[str], args: argparse.Namespace) -> dict[str, Any]:
    chosen = nets[: args.latency_networks]
    clients: dict[str, str] = {}
    ports: list[str] = []
    async with node.api() as api:
        for net in chosen:
            port = await api.create("ports", {"network_id": net, "name": "bench-client",
                                              "fixed_ips": [{"ip_address": CLIENT_IP}]})
            ports.append(port["id"])
            dhcp = await node.dhcp_ip(api, net)
            # The samples' addresses speak from this port: allowed pairs, or port security
            # drops them (they are added to the namespace one by one below).
            j = chosen.index(net)
            await asyncio.to_thread(node._allow_pairs, port["id"], [
                f"10.0.0.{10 + i // len(chosen)}" for i in range(args.samples)
                if i % len(chosen) == j])
            clients[net] = node.client_ns(net, port, [CLIENT_IP], PREFIX, dhcp)
        client = NsClient(next(iter(clients.values())), node)
        lat: list[float] = []
        create_s: list[float] = []
        servers: list[str] = []
        failures = []
        try:
            for i in range(args.samples):
                net = chosen[i % len(chosen)]
                ip = f"10.0.0.{10 + i // len(chosen)}"
                sh("ip", "addr", "add", f"{ip}/{PREFIX}", "dev", "eth0", netns=clients[net])
                t0 = time.monotonic()
                server = await api.create("servers", {
                    "name": f"lat-{i}", "networks": [{"uuid": net, "fixed_ip": ip}]})
                create_s.append(time.monotonic() - t0)
                servers.append(server["id"])
                got = await asyncio.to_thread(client.call, op="poll", ns=clients[net], src=ip,
                                              uuid=server["id"], timeout=10, interval=0.005)
                if not got["ok"]:
                    failures.append(f"{ip}: {got.get('last')}")
                    continue
                lat.append(got["t"] - t0)
        finally:
            client.close()
    return {"lat": lat, "create": create_s, "servers": servers, "ports": ports,
            "clients": list(clients.values()), "failures": failures}


async def tear_down(node: Node, nets: list[str], servers: list[str], ports: list[str],
                    clients: list[str]) -> dict[str, float]:
    async with node.api() as api:
        t0 = time.monotonic()
        for sid in servers:
            await api.delete("servers", sid)
        for pid in ports:
            await api.delete("ports", pid)
        for ns in clients:  # a plugged veth would keep the network's bridge alive
            kill_and_delete(ns)
        t1 = time.monotonic()
        for net in nets:
            await api.delete("networks", net)
        api_s = time.monotonic() - t1
    gone = await asyncio.to_thread(
        wait_all, lambda n, _t: node.network_gone(n), nets, 600)
    return {"servers_s": t1 - t0, "api_s": api_s, "gone_s": api_s + gone,
            "total_s": time.monotonic() - t1}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--networks", type=int, default=100)
    ap.add_argument("--batch", type=int, default=25, help="networks per memory checkpoint")
    ap.add_argument("--samples", type=int, default=100, help="server create -> answer samples")
    ap.add_argument("--latency-networks", type=int, default=10,
                    help="networks that get a client namespace for the latency samples")
    args = ap.parse_args()
    for tool in ("haproxy", "dnsmasq"):
        if shutil.which(tool) is None:
            ap.error(f"{tool} not found on PATH")
    enter_private_netns_dir()
    install_stop_handlers()
    node = Node()
    try:
        t0 = time.monotonic()
        node.start()
        print(f"all-in-one up in {time.monotonic() - t0:.1f}s (state {node.state})", flush=True)
        up = asyncio.run(bring_up(node, args))
        nets, batches = up["nets"], up["batches"]
        lat = asyncio.run(latency(node, nets, args))
        down = asyncio.run(tear_down(node, nets, lat["servers"], lat["ports"], lat["clients"]))

        print()
        print(f"bring-up of {len(nets)} isolated networks (namespace, tap, dnsmasq, haproxy), "
              f"batches of {args.batch}")
        print(f"{'networks':>8s} {'API s':>7s} {'all up s':>9s} {'haproxy Pss MB':>15s} "
              f"{'dnsmasq Pss MB':>15s} {'sum MB':>8s}")
        for b in batches:
            print(f"{b['networks']:8d} {b['api_s']:7.1f} {b['up_s']:9.1f} {b['haproxy_mb']:15.1f} "
                  f"{b['dnsmasq_mb']:15.1f} {b['haproxy_mb'] + b['dnsmasq_mb']:8.1f}")
        total_up = sum(b["up_s"] for b in batches)
        print(f"total bring-up: {total_up:.1f}s ({total_up / len(nets) * 1000:.0f} ms/network), "
              f"API calls {sum(b['api_s'] for b in batches):.1f}s")
        xs = [b["networks"] for b in batches]
        hs = [b["haproxy_mb"] for b in batches]
        ds = [b["dnsmasq_mb"] for b in batches]
        both = [h + d for h, d in zip(hs, ds, strict=True)]
        if len(xs) >= 2:
            m = slope(xs, both)
            print(f"marginal Pss per network: {m:.2f} MB (slope; haproxy {slope(xs, hs):.2f} + "
                  f"dnsmasq {slope(xs, ds):.2f}), average {both[-1] / xs[-1]:.2f} MB "
                  f"(bar <= 6 MB: {verdict(m <= 6)})")
        else:
            print(f"average Pss per network: {both[-1] / xs[-1]:.2f} MB (one batch: no slope)")
        ls = lat["lat"]
        p50, p99 = percentile(ls, 50), percentile(ls, 99)
        ok = bool(ls) and p99 <= 1.0 and not lat["failures"]
        print(f"server create -> first metadata answer in the instance namespace, {len(ls)} "
              f"samples over {args.latency_networks} networks: p50 {p50 * 1000:.0f} ms, "
              f"p99 {p99 * 1000:.0f} ms, max {max(ls, default=float('nan')) * 1000:.0f} ms "
              f"(create call alone p50 {percentile(lat['create'], 50) * 1000:.0f} ms) "
              f"(bar p99 <= 1 s: {verdict(ok)})")
        for f in lat["failures"][:5]:
            print(f"  failed: {f}")
        print(f"teardown: {len(lat['servers'])} servers + client ports {down['servers_s']:.1f}s; "
              f"{len(nets)} network deletes {down['api_s']:.1f}s; all qdhcp namespaces and "
              f"processes gone {down['gone_s']:.1f}s after the first network delete")
    finally:
        node.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
