"""Benchmark (issue 6): boot storm, 1,000 simulated instances on 20 isolated networks each running
cloud-init's OpenStack request sequence with a new connection per request.

Not a test. Starts a real `openimds all-in-one` with a benchmark fabric namespace, creates 20
isolated networks (all 10.0.0.0/24: tenants overlap) and 50 servers on each with fixed IPs.
One client namespace per network is plugged into the fabric with the first server's port and
holds all 50 fixed IPs on eth0 (169.254.169.254 routed via the DHCP port, as option 121 gives
it). Once every network answers, the namespace client (bench/_harness.py, one asyncio process
whose sockets are each made inside the right client namespace) starts all instances at once;
each binds its own fixed IP as source and runs cloud-init 22.4.2's sequence
(spec real-clients.md 1): GET /openstack twice, the five /openstack/<ver>/ files, then the EC2
meta-data crawl (directories first, then leaves), every request on a new TCP connection.
Every answer must be 200 (404 allowed only for the optional OpenStack files), meta_data.json
must name the instance's own uuid and local-ipv4 its own address.

The kernel's neighbour table is one for all namespaces of the host, limited by the host's
gc_thresh3 (1,024 by default, settable only in the host's own namespace): 1,000 guests fill it
and the proxies' SYN-ACKs are dropped (seconds of retransmission, 30 s when it stays full). By
default the bench pins its guests' entries as permanent in the proxies' namespaces (exempt
from that limit, gone with the namespaces), standing in for the operator's sysctl
(docs/dhcp-l3.md) without touching the host; --dynamic-neighbours leaves them to ARP.

Bars: total <= 20 s, no failed request, and the slowest request under 5 s (cloud-init and
cirros give up after 10 s; issue 16 defect 12 measured 12.9 s); issue 14: total <= 5 s (goal
2 s). Per-request p50/p99/max are printed, with the CPU used by haproxy, the agent and the API
during the storm and the load.

    .venv/bin/python bench/bench_boot_storm.py [--networks 20] [--per-network 50]
        [--identity agent|haproxy_map] [--sequence openstack|openstack+ec2]
        [--ec2-profile aws|nova] [--cold]
        [--workers N] [--http-server fast|aiohttp] [--dynamic-neighbours]

`--identity` sets `[DEFAULT] metadata_proxy_identity` (default: the product's, agent).
`--sequence openstack` runs cloud-init's OpenStack datasource reads only (GET /openstack twice,
the five files: 7 requests per instance); `openstack+ec2` (the default, what cloud-init 22.4.2's
OpenStack reader really sends) adds its EC2 meta-data crawl (52 requests per instance; 28 with
`--ec2-profile nova`, Nova's smaller EC2 tree, which the issue's 12.8 s was measured on).
Before the storm's servers are created, a canary guest on a network of its own boots with
the same sequence, as in a cloud that has served boots before (the metadata API learns from
it which paths guests ask and renders them ahead for instances created later); `--cold`
leaves it out. The CPU the services use while the servers are created is printed too.

Root only. Runs in a private /run/netns (see _harness.enter_private_netns_dir); everything it
creates is removed at the end, also on failure or Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import os
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
    neighbour_table,
    processes_by_netns,
    verdict,
    wait_for,
)

CIDR, PREFIX = "10.0.0.0/24", 24
IDENTITIES = ("agent", "haproxy_map")
SEQUENCES = {
    "openstack": "cloud-init 22.4.2 OpenStack datasource reads only (no EC2 crawl)",
    "openstack+ec2": "cloud-init 22.4.2 OpenStack sequence + EC2 crawl",
}


def address(i: int) -> str:
    return f"10.0.0.{i + 10}"


async def build_canary(node: Node) -> dict[str, Any]:
    """One network with one server: the guest that boots before the storm's servers exist."""
    async with node.api() as api:
        net, _ = await node.create_network(api, "storm-canary", CIDR)
        ip = address(0)
        s = await api.create("servers", {"name": "storm-canary",
                                         "networks": [{"uuid": net, "fixed_ip": ip}]})
        (port,) = await api.list("ports", device_id=s["id"])
        return {"net": net, "instances": [(ip, s["id"])], "port": port,
                "dhcp": await node.dhcp_ip(api, net)}


async def build(node: Node, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Networks and servers; returns per network: id, dhcp ip, [(ip, uuid, port)]."""
    out: list[dict[str, Any]] = []
    sem = asyncio.Semaphore(8)
    async with node.api() as api:
        for n in range(args.networks):
            net, _ = await node.create_network(api, f"storm-{n}", CIDR)
            out.append({"net": net, "instances": []})

        async def server(entry: dict[str, Any], n: int, i: int) -> None:
            ip = address(i)
            async with sem:
                s = await api.create("servers", {"name": f"storm-{n}-{i}",
                                                 "networks": [{"uuid": entry["net"],
                                                               "fixed_ip": ip}]})
            entry["instances"].append((ip, s["id"]))

        t0 = time.monotonic()
        await asyncio.gather(*(server(e, n, i) for n, e in enumerate(out)
                               for i in range(args.per_network)))
        print(f"  {args.networks * args.per_network} servers created in "
              f"{time.monotonic() - t0:.1f}s", flush=True)
        for entry in out:
            entry["instances"].sort(key=lambda t: tuple(int(x) for x in t[0].split(".")))
            _first_ip, first_uuid = entry["instances"][0]
            (port,) = await api.list("ports", device_id=first_uuid)
            entry["port"] = port
            entry["dhcp"] = await node.dhcp_ip(api, entry["net"])
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--networks", type=int, default=20)
    ap.add_argument("--per-network", type=int, default=50)
    ap.add_argument("--identity", choices=IDENTITIES,
                    help="[DEFAULT] metadata_proxy_identity; default: the product's (agent)")
    ap.add_argument("--sequence", choices=tuple(SEQUENCES), default="openstack+ec2",
                    help="openstack: the OpenStack datasource's reads only; openstack+ec2 "
                    "(default): plus its EC2 meta-data crawl, as cloud-init 22.4.2 sends")
    ap.add_argument("--ec2-profile", choices=("aws", "nova"),
                    help="[metadata] ec2_profile (the EC2 tree the crawl walks: nova's is "
                    "smaller); default: the product's (aws)")
    ap.add_argument("--cold", action="store_true",
                    help="no canary: by default one guest on a network of its own boots (the "
                    "same sequence) before the storm's servers are created, as in a cloud "
                    "that has served boots before; the metadata API learns from it which "
                    "paths guests ask and renders them ahead for instances created later")
    ap.add_argument("--workers", type=int, help="metadata_workers (agent and API); "
                    "default: the product's")
    ap.add_argument("--http-server", choices=("fast", "aiohttp"),
                    help="metadata_http_server of the metadata API; default: the product's")
    ap.add_argument("--dynamic-neighbours", action="store_true",
                    help="do not pin the guests' neighbour entries in the proxies' namespaces: "
                    "then the storm needs the host's net.ipv4.neigh.default.gc_thresh3 above "
                    "~1,100 plus whatever else the host holds (docs/dhcp-l3.md)")
    args = ap.parse_args()
    if args.per_network > 240:
        ap.error("at most 240 instances per /24 network")
    for tool in ("haproxy", "dnsmasq"):
        if shutil.which(tool) is None:
            ap.error(f"{tool} not found on PATH")
    enter_private_netns_dir()
    install_stop_handlers()
    extra = f"metadata_workers = {args.workers}\n" if args.workers else ""
    if args.http_server:
        extra += f"metadata_http_server = {args.http_server}\n"
    if args.identity:
        extra += f"metadata_proxy_identity = {args.identity}\n"
    if args.ec2_profile:
        extra += f"\n[metadata]\nec2_profile = {args.ec2_profile}\n"
    node = Node(extra_conf=extra)
    client: NsClient | None = None
    try:
        t0 = time.monotonic()
        node.start()
        print(f"all-in-one up in {time.monotonic() - t0:.1f}s (state {node.state})", flush=True)
        if not args.cold:
            canary = asyncio.run(build_canary(node))
            wait_for(lambda: node.network_ready(canary["net"], processes_by_netns()),
                     timeout=120, interval=0.2)
            canary["ns"] = node.client_ns(canary["net"], canary["port"], [address(0)], PREFIX,
                                          canary["dhcp"])
            client = NsClient(canary["ns"], node)
            (ip, uid), = canary["instances"]
            got = client.call(op="poll", ns=canary["ns"], src=ip, uuid=uid, timeout=60)
            if not got["ok"]:
                raise RuntimeError(f"the canary is not answered: {got}")
            c = client.call(op="storm", instances=[{"ns": canary["ns"], "src": ip, "uuid": uid}],
                            sequence=args.sequence)
            print(f"  canary booted first (own network): {c['requests']} requests, failed "
                  f"{c['failed']}, {c['total_s'] * 1000:.0f} ms", flush=True)
            if c["failed"]:
                raise RuntimeError(f"the canary failed: {c['failures']}")
        # What the services spend while the servers are created (views loaded and answers
        # rendered ahead happen here, not in the storm).
        build_meter = node.cpu_meter(dhcp_agent=lambda: node.service_pids("dhcp-agent"))
        build_meter.start()
        nets = asyncio.run(build(node, args))
        wait_for(lambda: all(node.network_ready(e["net"], processes_by_netns()) for e in nets),
                 timeout=600, interval=0.2)
        build_meter.stop()
        servers = sum(len(e["instances"]) for e in nets)
        print(f"  while creating {servers} servers and their networks: "
              f"{build_meter.report(servers).replace('us/req', 'us/server')}", flush=True)
        for e in nets:
            e["ns"] = node.client_ns(e["net"], e["port"], [ip for ip, _ in e["instances"]],
                                     PREFIX, e["dhcp"])
        if not args.dynamic_neighbours:
            pinned = sum(node.pin_neighbours(e["net"], e["dhcp"],
                                             [ip for ip, _ in e["instances"]],
                                             e["port"]["mac_address"]) for e in nets)
            print(f"  {pinned} guest neighbour entries pinned in the proxies' namespaces "
                  "(--dynamic-neighbours: leave them to ARP and the host's gc_thresh3)",
                  flush=True)
        # One client namespace speaks for all instances of a network, each from its own address
        # behind the first instance's port (MAC): client_ns makes the other addresses allowed
        # address pairs of that port, so port security (issue 16) stays on and lets them pass.
        if client is None:
            client = NsClient(nets[0]["ns"], node)
        # Each proxy answers before the storm: the first instance of each network (the
        # namespace's own port) and the last (an allowed address pair of that port, so the
        # port-security rules are loaded too) ask once.
        for e in nets:
            for ip, uid in (e["instances"][0], e["instances"][-1]):
                got = client.call(op="poll", ns=e["ns"], src=ip, uuid=uid, timeout=60)
                if not got["ok"]:
                    raise RuntimeError(f"network {e['net']} does not answer {ip}: {got}")
        print(f"  {len(nets)} networks answer; storm of "
              f"{sum(len(e['instances']) for e in nets)} instances", flush=True)
        instances = [{"ns": e["ns"], "src": ip, "uuid": uid}
                     for e in nets for ip, uid in e["instances"]]
        proc = client.proc
        # The DHCP agent too: without /dev/log it receives the proxies' per-request log lines
        # (linux/logsink.py), a cost of every request that runs in none of the chain's processes.
        meter = node.cpu_meter(client=lambda: [proc.pid],
                               dhcp_agent=lambda: node.service_pids("dhcp-agent"))
        caches0 = node.api_cache_counts()
        neigh0 = neighbour_table()
        meter.start()
        try:
            r = client.call(op="storm", instances=instances, sequence=args.sequence)
        finally:
            meter.stop()
        caches = {k: v - caches0.get(k, 0) for k, v in node.api_cache_counts().items()}
        neigh1 = neighbour_table()

        print()
        identity = args.identity or "agent (the default)"
        print(f"boot storm: {len(instances)} instances on {len(nets)} networks, "
              f"{SEQUENCES[args.sequence]}, new connection per request")
        print(f"  configuration     metadata_proxy_identity = {identity}, ec2_profile = "
              f"{args.ec2_profile or 'aws (the default)'}, --sequence {args.sequence}, "
              f"{'cold (no canary)' if args.cold else 'a canary booted before the servers'}")
        print(f"  requests          {r['requests']} ({r['requests_per_instance']:.0f} per "
              f"instance), failed {r['failed']}")
        print(f"  total             {r['total_s']:.1f} s  ({r['requests'] / r['total_s']:.0f} "
              f"req/s)")
        print(f"  per request       p50 {r['p50_ms']:.0f} ms, p99 {r['p99_ms']:.0f} ms, "
              f"max {r['max_ms']:.0f} ms")
        print(f"  first request     p99 {r['first_p99_ms']:.0f} ms, max {r['first_max_ms']:.0f} ms "
              "(every instance connects at once)")
        print(f"  slowest           {'; '.join(r['slowest'][:3])}")
        print(f"  per instance      p50 {r['instance_p50_s']:.1f} s, max "
              f"{r['instance_max_s']:.1f} s (sum of its request times)")
        print(f"  {meter.report(r['requests'])}")
        # The chain alone (a cloud's guests are other machines; here the client shares the
        # cores, and other users of the machine may too): its CPU, and that over the cores.
        chain = sum(v for k, v in meter.used.items() if k != "client")
        print(f"  chain             {chain:.1f} s of CPU, "
              f"{chain / max(1, r['requests']) * 1e6:.0f} us/req (haproxy, agent, API, DHCP "
              f"agent): {chain / (os.cpu_count() or 1):.1f} s on {os.cpu_count()} idle cores")
        print("  API caches        " + ", ".join(
            f"{cache} {caches.get((cache, 'hit'), 0):.0f} hits / "
            f"{caches.get((cache, 'miss'), 0):.0f} misses"
            for cache in ("view", "tree", "answer")) + " during the storm")
        print(f"  neighbour table   {neigh1['entries']} entries after the storm (all namespaces), "
              f"{neigh1['table_fulls'] - neigh0['table_fulls']} allocations refused during it "
              f"(host gc_thresh3 {neigh1['gc_thresh3']}; docs/dhcp-l3.md)")
        for f in r["failures"][:10]:
            print(f"  failed: {f}")
        ok_total = r["total_s"] <= 20
        ok_tail = r["max_ms"] < 5000
        print(f"  machine load      {' '.join(Path('/proc/loadavg').read_text().split()[:3])} "
              f"(1/5/15 min), {os.cpu_count()} CPUs")
        print(f"bar: total <= 20 s: {verdict(ok_total)}; no failed request: "
              f"{verdict(r['failed'] == 0)}; slowest request < 5 s: {verdict(ok_tail)}; "
              f"issue 14: total <= 5 s: {verdict(r['total_s'] <= 5)}, "
              f"goal <= 2 s: {verdict(r['total_s'] <= 2)}")
    finally:
        if client is not None:
            client.close()
        node.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
