"""Benchmark (issue 16): faults during a 200-instance crawl.

Not a test. A real `openimds all-in-one` (bench/_harness.py Node), 4 isolated networks x 50
instances (49 crawling, the first one the poller's) running cloud-init 22.4.2's OpenStack sequence + EC2 crawl (the boot storm's client),
while one process is killed -9 shortly after the crawl starts: the metadata agent, the metadata
API (both restarted by the all-in-one), the haproxy and the dnsmasq of the first network
(restarted by the DHCP agent's pidfd watch). Per fault: failed requests of the crawl, its slowest
request, and the outage a guest polling that service back to back sees (HTTP through the proxy,
or DNS for dnsmasq; tests/fabric/guest_poller.py). The reference is the same crawl with no
fault, in the same run. Bars: haproxy/dnsmasq outage < 1 s; no 500 from any fault.

    .venv/bin/python bench/bench_faults.py [--networks 4] [--per-network 50]

Root only; runs in a private /run/netns and removes everything it created.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import threading
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
    netns_inode,
    processes_by_netns,
    verdict,
    wait_for,
)
from bench_boot_storm import PREFIX, build  # noqa: E402

from tests.fabric.outage import GuestPoller, outage  # noqa: E402

FAULTS = ("none", "metadata-agent", "metadata-api", "haproxy", "dnsmasq")
KILL_AFTER = 0.3  # seconds into the crawl


def _ns_process(network_id: str, comm: str) -> int | None:
    ino = netns_inode(f"qdhcp-{network_id}")
    if ino is None:
        return None
    return next((p for p, c in processes_by_netns().get(ino, []) if c == comm), None)


def _target(node: Node, fault: str, network_id: str) -> int | None:
    if fault in ("haproxy", "dnsmasq"):
        return _ns_process(network_id, fault)
    return node.child_pid(fault)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--networks", type=int, default=4)
    ap.add_argument("--per-network", type=int, default=50)
    args = ap.parse_args()
    enter_private_netns_dir()
    install_stop_handlers()
    # The guest poller asks ~100 times a second from one address, which the per-instance
    # token bucket would (rightly) answer with 429: lift its rate here, and keep the poller's
    # address (each network's first instance) out of the crawl. bench_boot_storm.py runs the
    # crawl with the default limiter.
    node = Node(extra_conf="[metadata_rate_limiting]\ninstance_rate = 100000\n")
    client: NsClient | None = None
    pollers: list[GuestPoller] = []
    rows: list[tuple[str, dict[str, Any], tuple[float, int] | None]] = []
    try:
        node.start()
        nets = asyncio.run(build(node, args))
        wait_for(lambda: all(node.network_ready(e["net"], processes_by_netns()) for e in nets),
                 timeout=600, interval=0.2)
        for e in nets:
            e["ns"] = node.client_ns(e["net"], e["port"], [ip for ip, _ in e["instances"]],
                                     PREFIX, e["dhcp"])
        client = NsClient(nets[0]["ns"], node)
        for e in nets:
            for ip, uid in (e["instances"][0], e["instances"][-1]):
                got = client.call(op="poll", ns=e["ns"], src=ip, uuid=uid, timeout=60)
                if not got["ok"]:
                    raise RuntimeError(f"network {e['net']} does not answer {ip}: {got}")
        first = nets[0]
        http = GuestPoller(first["ns"], "http", "http://169.254.169.254/openstack/")
        dns = GuestPoller(first["ns"], "dns", first["dhcp"],
                          f"host-{first['instances'][0][0].replace('.', '-')}.openstacklocal")
        pollers += [http, dns]
        instances = [{"ns": e["ns"], "src": ip, "uuid": uid}
                     for e in nets for ip, uid in e["instances"][1:]]
        for fault in FAULTS:
            poller = dns if fault == "dnsmasq" else http
            wait_for(lambda p=poller: outage(p.samples(), time.monotonic() - 60), timeout=30)
            killed: dict[str, float] = {}

            def kill(fault: str = fault, killed: dict[str, float] = killed) -> None:
                time.sleep(KILL_AFTER)
                pid = _target(node, fault, first["net"])
                if pid is not None:
                    killed["t"] = time.monotonic()
                    os.kill(pid, signal.SIGKILL)

            t = threading.Thread(target=kill) if fault != "none" else None
            if t is not None:
                t.start()
            r = client.call(op="storm", instances=instances)
            if t is not None:
                t.join()
            gap = None
            if "t" in killed:
                t_kill = killed["t"]
                gap = wait_for(lambda p=poller, t0=t_kill: outage(p.samples(), t0), timeout=60)
            rows.append((fault, r, gap))
            # Let everything settle (restarted children adopted, pools refilled) before the next.
            wait_for(lambda: all(node.network_ready(e["net"], processes_by_netns())
                                 for e in nets), timeout=60)
            wait_for(lambda: node.child_pid("metadata-agent") is not None
                     and node.child_pid("metadata-api") is not None, timeout=60)
    finally:
        for p in pollers:
            p.stop()
        if client is not None:
            client.close()
        node.cleanup()

    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    n = args.networks * args.per_network
    print(f"\nfaults during a {n}-instance crawl (cloud-init 22.4.2 sequence, new connection per "
          f"request; kill -9 {KILL_AFTER} s in; load {load}, {os.cpu_count()} CPUs)")
    print(f"  {'fault':16} {'requests':>8} {'failed':>6} {'5xx':>5} {'max ms':>7} "
          f"{'guest outage':>13} {'failed tries':>12}")
    bars = True
    for fault, r, gap in rows:
        fives = sum(c for code, c in r["statuses"].items() if code.startswith("5"))
        out = f"{gap[0] * 1000:10.0f} ms" if gap else "         -  "
        tries = f"{gap[1]:12d}" if gap else "           -"
        print(f"  {fault:16} {r['requests']:8d} {r['failed']:6d} {fives:5d} {r['max_ms']:7.0f} "
              f"{out:>13} {tries}")
        for f in r["failures"][:3]:
            print(f"      e.g. {f}")
        if fault in ("haproxy", "dnsmasq"):
            bars = bars and gap is not None and gap[0] < 1.0
        bars = bars and r["statuses"].get("500", 0) == 0
    print(f"bar: haproxy/dnsmasq outage < 1 s and no 500: {verdict(bars)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
