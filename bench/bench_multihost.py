"""Benchmark (issue 10): several hosts in the multi-host lab (tests/support/multihost.py).

Not a test. 2 network nodes (DHCP, L3, metadata, L2 agents; dhcp_agents_per_network = 2) and
C compute hosts (L2 agent), VXLAN tenant networks:

1. bring-up: N networks (one DHCP subnet each, all 10.0.0.0/24) with one server each, spread
   by the scheduler over the compute hosts; the guest is plugged on the host its port is bound
   to, leases over VXLAN and reads its own meta_data.json. Time: first API call -> every guest
   has its lease and its metadata.
2. memory: the Pss of every process inside net-1's private namespaces (dnsmasq, haproxy) plus
   net-1's agents, before and after the N networks; marginal per network on a network node
   (bar <= 6 MB), and its ratio to the same run's empty-node Pss per agent process.
3. change -> first correct answer on the host: S times, a port on an existing network is
   plugged into a guest on cmp-1 and leased, a poller inside the guest asks meta_data.json
   every 5 ms, then `server create --port P --host cmp-1` runs; the latency is from the moment
   that command has returned (the change is committed) to the poller's first answer naming the
   new server (bar: p99 <= 1 s). The CLI's own start-up is outside that clock; the bound
   from the CLI's launch (start-up included) is printed too.

    .venv/bin/python bench/bench_multihost.py [--networks 100] [--compute 4] [--samples 20]

Root only; everything is removed at the end, also on failure or Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.multihost import MultiHostLab, SimHost, wait_for  # noqa: E402

NETWORK_NODE = ("dhcp-agent", "l3-agent", "metadata-agent", "l2-agent")

# Runs inside the guest: meta_data.json every 5 ms until it names the new server; prints the
# wall-clock time of that first correct answer.
POLLER = """
import sys, time, urllib.request
want = sys.argv[1].encode()
print("polling", flush=True)
deadline = time.time() + 60
while time.time() < deadline:
    try:
        body = urllib.request.urlopen(
            "http://169.254.169.254/openstack/latest/meta_data.json", timeout=2).read()
        if want in body:
            print(time.time(), flush=True)
            sys.exit(0)
    except OSError:
        pass
    time.sleep(0.005)
print("nan", flush=True)
"""


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q / 100 * len(ordered))) - 1] if ordered else float("nan")


def pss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def node_pss_kb(host: SimHost) -> tuple[int, int]:
    """(Pss in kB, processes) of the host's agents and everything in its namespaces."""
    pids = {p.pid for p in host.procs.values()}
    for ns in host.private_namespaces():
        pids |= {int(x) for x in host.run("ip", "netns", "pids", ns, check=False).stdout.split()}
    return sum(pss_kb(p) for p in pids), len(pids)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--networks", type=int, default=100)
    ap.add_argument("--compute", type=int, default=4)
    ap.add_argument("--samples", type=int, default=20)
    args = ap.parse_args()
    hosts = [("net-1", NETWORK_NODE), ("net-2", NETWORK_NODE)] + [
        (f"cmp-{i + 1}", ("l2-agent",)) for i in range(args.compute)]
    lab = MultiHostLab(hosts, extra_control=(
        "dhcp_agents_per_network = 2\n[ml2]\ntenant_network_types = vxlan\n"
        "[ml2_type_vxlan]\nvni_ranges = 1000:9999\n"))
    try:
        lab.start()
        wait_for(lambda: sum(lab.agents_alive().values()) == 8 + args.compute, timeout=120)
        net1 = lab.host("net-1")
        base_kb, base_procs = node_pss_kb(net1)

        start = time.monotonic()
        servers = []
        for i in range(args.networks):
            net = lab.cli("network", "create", f"bench-{i}")
            lab.cli("subnet", "create", f"bench-{i}", "--network", net["id"], "--subnet-range",
                    "10.0.0.0/24")
            servers.append((net["id"], lab.cli("server", "create", f"vm-{i}", "--network",
                                               net["id"])))
        api_done = time.monotonic() - start
        for _net_id, server in servers:
            port = lab.cli("port", "list", "--device-id", server["id"])[0]
            host = lab.host(port["binding:host_id"])
            guest = lab.boot_guest(host, port["id"])
            lab.dhcp(host, guest)
            assert lab.metadata(host, guest, within=120)["uuid"] == server["id"]
        bring_up = time.monotonic() - start
        after_kb, after_procs = node_pss_kb(net1)
        marginal_mb = (after_kb - base_kb) / args.networks / 1024
        per_agent_mb = base_kb / max(1, base_procs) / 1024

        net_id = servers[0][0]
        host = lab.host("cmp-1")
        latencies: list[float] = []
        upper: list[float] = []
        for i in range(args.samples):
            # The guest is up before the change: a port of its own, plugged and leased.
            port = lab.cli("port", "create", f"late-{i}", "--network", net_id)
            guest = lab.boot_guest(host, port["id"])
            lab.dhcp(host, guest)
            poller = subprocess.Popen(
                host.argv("ip", "netns", "exec", guest, sys.executable, "-c", POLLER,
                          f'"name": "late-{i}"'), stdout=subprocess.PIPE, text=True)
            assert poller.stdout is not None and poller.stdout.readline().strip() == "polling"
            launched = time.time()
            lab.cli("server", "create", f"late-{i}", "--port", port["id"], "--host", "cmp-1")
            committed = time.time()  # the API call has returned: the change is committed
            first_answer = float(poller.stdout.readline())
            poller.wait(10)
            # The answer often arrives before the CLI process has even exited: then the
            # system's latency is below what this clock resolves (recorded as 0), and the
            # bound from the CLI's launch (its start-up included) is reported too.
            latencies.append(max(0.0, first_answer - committed))
            upper.append(first_answer - launched)
        p99 = percentile(latencies, 99)
        print(json.dumps({
            "networks": args.networks, "compute_hosts": args.compute,
            "api_seconds": round(api_done, 1), "bring_up_seconds": round(bring_up, 1),
            "net1_pss_mb_before": round(base_kb / 1024, 1), "net1_procs_before": base_procs,
            "net1_pss_mb_after": round(after_kb / 1024, 1), "net1_procs_after": after_procs,
            "marginal_mb_per_network": round(marginal_mb, 2),
            "marginal_vs_bar_6mb": round(marginal_mb / 6, 2),
            "marginal_vs_one_agent_process": round(marginal_mb / per_agent_mb, 2),
            "change_to_answer_p50_s": round(percentile(latencies, 50), 3),
            "change_to_answer_p99_s": round(p99, 3),
            "answers_before_the_cli_returned": sum(1 for x in latencies if x == 0.0),
            "from_cli_launch_p50_s": round(percentile(upper, 50), 3),
            "from_cli_launch_p99_s": round(percentile(upper, 99), 3),
            "memory_bar": "PASS" if marginal_mb <= 6 else "FAIL",
            "change_bar": "PASS" if p99 <= 1.0 else "FAIL",
        }, indent=2))
    finally:
        lab.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
