"""Benchmark (issue 12): boot storm over the compute hosts of the multi-host lab,
metadata_mode = network_node against distributed in the same run, and the memory of each
(host, network) pair in distributed mode.

Not a test. Lab (tests/support/multihost.py): net-1 (DHCP, L3, metadata and L2 agents) and C
compute hosts (L2 agent + a metadata agent with metadata_agent_scope = host), VXLAN networks.

1. build: N isolated networks (all 10.0.0.0/24) and K servers per (network, compute host),
   bound to that host, created through the control API from inside the controller namespace.
   On each (network, host) one client namespace is plugged with the first server's port and
   holds all K addresses (the others are allowed address pairs of that port), as
   bench_boot_storm does on one host.
2. network_node: 169.254.169.254/32 via the DHCP port (what option 121 gives an isolated
   subnet); every instance runs cloud-init's OpenStack sequence (bench/_harness.py `storm`,
   one client per compute host, all at once, a new TCP connection per request).
3. switch: the control API restarts with metadata_mode = distributed; once every host has its
   qmeta- namespaces, the clients' route moves to the metadata port (what a renewal gives).
   Pss of each compute host (agents + everything in its namespaces) before and after the
   namespaces appear, over N: the memory per (host, network) pair (bar <= 5 MB).
4. distributed: the same storm again.

Per mode: total time, p50/p99/max per request, failed requests, and the CPU seconds used per
host during the storm (its agents and the processes in its namespaces, the storm clients
excluded; the metadata API on the controller apart).

    .venv/bin/python bench/bench_distributed.py [--networks 5] [--compute 4] [--per-host 50]

Root only; everything is removed at the end, also on failure or Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _harness import (  # noqa: E402
    CLIENT_PREFIX,
    cpu_seconds,
    neighbour_table,
    percentile,
    pss_kb,
)

from tests.support.multihost import (  # noqa: E402
    ADMIN_PW,
    CONTROLLER_IP,
    PYTHON,
    MultiHostLab,
    SimHost,
    _env,
    wait_for,
)

NETWORK_NODE = ("dhcp-agent", "l3-agent", "metadata-agent", "l2-agent")
COMPUTE = ("l2-agent", "metadata-agent")
HARNESS = Path(__file__).resolve().parent / "_harness.py"


def address(i: int) -> str:
    return f"10.0.{10 + i // 200}.{10 + i % 200}"


# ---- build, run inside the controller namespace ---------------------------------------------

async def _build(networks: int, hosts: list[str], per_host: int) -> dict[str, Any]:
    from openimds.control.client import ControlClient

    # A busy machine and one SQLite writer: few creates at once, each given time.
    api = ControlClient(f"http://{CONTROLLER_IP}:9696/v3", "admin", ADMIN_PW, "admin",
                        timeout=180)
    sem = asyncio.Semaphore(4)
    out: dict[str, Any] = {"networks": []}
    async with api:
        for n in range(networks):
            net = await api.create("networks", {"name": f"storm-{n}"})
            await api.create("subnets", {"network_id": net["id"], "cidr": "10.0.0.0/16",
                                         "ip_version": 4, "gateway_ip": None,
                                         "enable_dhcp": True})
            out["networks"].append({"id": net["id"], "groups": {}})

        async def server(entry: dict[str, Any], n: int, host: str, i: int, ip: str) -> None:
            async with sem:
                s = await api.create("servers", {
                    "name": f"storm-{n}-{host}-{i}", "host": host,
                    "networks": [{"uuid": entry["id"], "fixed_ip": ip}]})
            entry["groups"].setdefault(host, []).append((ip, s["id"]))

        jobs = []
        for n, entry in enumerate(out["networks"]):
            k = 0
            for host in hosts:
                for i in range(per_host):
                    jobs.append(server(entry, n, host, i, address(k)))
                    k += 1
        t0 = time.monotonic()
        await asyncio.gather(*jobs)
        out["create_seconds"] = time.monotonic() - t0
        for entry in out["networks"]:
            (dhcp,) = await api.list("ports", network_id=entry["id"],
                                     device_owner="network:dhcp")
            entry["dhcp_ip"] = dhcp["fixed_ips"][0]["ip_address"]
            entry["ports"] = {}
            for host, group in entry["groups"].items():
                group.sort()
                (port,) = await api.list("ports", device_id=group[0][1])
                extra = [ip for ip, _ in group[1:]]
                await api.update("ports", port["id"], {"allowed_address_pairs": [
                    {"ip_address": ip} for ip in extra]})
                entry["ports"][host] = port["id"]
    return out


async def _meta_ips(network_ids: list[str]) -> dict[str, str]:
    from openimds.control.client import ControlClient

    api = ControlClient(f"http://{CONTROLLER_IP}:9696/v3", "admin", ADMIN_PW, "admin")
    out = {}
    async with api:
        for net in network_ids:
            ports = await api.list("ports", network_id=net, device_owner="network:distributed")
            if ports:
                out[net] = ports[0]["fixed_ips"][0]["ip_address"]
    return out


def in_controller(lab: MultiHostLab, *args: str) -> Any:
    proc = subprocess.run(["ip", "netns", "exec", lab.controller, PYTHON, __file__, *args],
                          capture_output=True, text=True, env=_env(), timeout=3600)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr)
    return json.loads(proc.stdout)


# ---- the storm --------------------------------------------------------------------------------

class HostClient:
    """bench/_harness.py's namespace client, run inside one simulated host."""

    def __init__(self, host: SimHost, home: str) -> None:
        ino = os.stat("/proc/self/ns/net").st_ino
        self.proc = subprocess.Popen(
            host.argv("ip", "netns", "exec", home, PYTHON, str(HARNESS), "client", str(ino)),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=_env())

    def call(self, **request: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        answer = dict(json.loads(self.proc.stdout.readline()))
        if "error" in answer:
            raise RuntimeError(answer["error"])
        return answer

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def host_pids(host: SimHost, exclude: set[int]) -> list[int]:
    """The host's agents (and their children) and every process in its namespaces."""
    pids = set()
    for proc in host.procs.values():
        pids.add(proc.pid)
        pids |= set(_descendants(proc.pid))
    for ns in host.private_namespaces():
        pids |= {int(x) for x in host.run("ip", "netns", "pids", ns, check=False).stdout.split()}
    return sorted(pids - exclude)


def _descendants(pid: int) -> list[int]:
    out = []
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return out
    for child in map(int, children):
        out += [child, *_descendants(child)]
    return out


def storm(clients: dict[str, HostClient], instances: dict[str, list[dict[str, str]]],
          hosts: dict[str, SimHost], exclude: set[int],
          metadata_api: int) -> dict[str, Any]:
    groups = {name: host_pids(h, exclude) for name, h in hosts.items()}
    before = {name: cpu_seconds(p) for name, p in groups.items()}
    api_before = cpu_seconds([metadata_api, *_descendants(metadata_api)])
    neigh0 = neighbour_table()
    t0 = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(len(clients)) as pool:
        futures = {name: pool.submit(c.call, op="storm", instances=instances[name])
                   for name, c in clients.items()}
        results = {name: f.result() for name, f in futures.items()}
    total = time.monotonic() - t0
    neigh1 = neighbour_table()
    cpu = {name: round(cpu_seconds(groups[name]) - before[name], 1) for name in groups}
    api_cpu = cpu_seconds([metadata_api, *_descendants(metadata_api)]) - api_before
    requests = sum(r["requests"] for r in results.values())
    return {
        "instances": sum(len(v) for v in instances.values()),
        "requests": requests,
        "failed": sum(r["failed"] for r in results.values()),
        "failures": [f for r in results.values() for f in r["failures"]][:5],
        "total_s": round(total, 1),
        "p50_ms": round(percentile([r["p50_ms"] for r in results.values()], 50), 1),
        # p99 over every request: each client's p99 bounds its share; the worst one is the
        # cloud's p99 only if the shares are alike, so both are printed.
        "p99_ms_worst_host": round(max(r["p99_ms"] for r in results.values()), 1),
        "p99_ms_per_host": {n: round(r["p99_ms"], 1) for n, r in results.items()},
        "max_ms": round(max(r["max_ms"] for r in results.values()), 1),
        "cpu_s_per_host": cpu,
        "cpu_s_metadata_api": round(api_cpu, 1),
        # One neighbour table for every namespace of the machine (bench_boot_storm.py): a
        # refused allocation drops the packet that needed it, and the guest retransmits.
        "neighbour_entries_after": neigh1["entries"],
        "neighbour_allocations_refused": neigh1["table_fulls"] - neigh0["table_fulls"],
        "machine_load_1_5_15": [round(x, 2) for x in os.getloadavg()],
        "cpus": os.cpu_count(),
    }


def pin_neighbours(host: SimHost, ns: str, local_ip: str, addresses: list[str],
                   mac: str) -> int:
    """Permanent entries for `addresses` -> `mac` in `ns` on `host`, on the device holding
    `local_ip` (the proxy's side). Permanent entries are exempt from the kernel's gc_thresh3,
    one limit for every namespace of the machine and settable only from the machine's own
    namespace: this stands in for the operator's sysctl (docs/dhcp-l3.md) without touching
    the host. The entries go with the namespace."""
    dev = next(line.split()[1] for line in host.run("ip", "-n", ns, "-o", "-4", "addr",
                                                    "show").stdout.splitlines()
               if f" {local_ip}/" in line)
    batch = "".join(f"neigh replace {a} lladdr {mac} dev {dev} nud permanent\n"
                    for a in addresses)
    subprocess.run(host.argv("ip", "-n", ns, "-batch", "-"), input=batch, text=True,
                   check=True, capture_output=True)
    return len(addresses)


def home_mac(host: SimHost, home: str) -> str:
    link = json.loads(host.run("ip", "-n", home, "-j", "link", "show", "eth0").stdout)
    return str(link[0]["address"])


def host_pss_kb(host: SimHost, exclude: set[int]) -> int:
    return sum(pss_kb(p) for p in host_pids(host, exclude))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--networks", type=int, default=5)
    ap.add_argument("--compute", type=int, default=4)
    ap.add_argument("--per-host", type=int, default=50, help="instances per (network, host)")
    ap.add_argument("--dynamic-neighbours", action="store_true",
                    help="do not pin the guests' neighbour entries in the proxies' namespaces: "
                    "then the storms need the host's gc_thresh3 above every namespace's entries")
    ap.add_argument("--keep-logs", metavar="DIR",
                    help="copy the lab's service logs (agents, APIs) here before cleanup")
    args = ap.parse_args()
    compute = [f"cmp-{i + 1}" for i in range(args.compute)]
    lab = MultiHostLab(
        [("net-1", NETWORK_NODE), *((h, COMPUTE) for h in compute)],
        extra_control=("metadata_mode = network_node\nagent_down_time = 30\n"
                       "[ml2]\ntenant_network_types = vxlan\n"
                       "[ml2_type_vxlan]\nvni_ranges = 1000:9999\n"),
        host_defaults={h: "metadata_agent_scope = host" for h in compute})
    clients: dict[str, HostClient] = {}
    try:
        lab.start()
        wait_for(lambda: sum(lab.agents_alive().values()) == 4 + 2 * args.compute,
                 timeout=120)
        t0 = time.monotonic()
        built = in_controller(lab, "build", str(args.networks), ",".join(compute),
                              str(args.per_host))
        print(f"{args.networks * args.compute * args.per_host} servers created in "
              f"{built['create_seconds']:.0f} s", flush=True)
        homes: dict[str, list[tuple[str, dict[str, Any]]]] = {h: [] for h in compute}
        instances: dict[str, list[dict[str, str]]] = {h: [] for h in compute}
        for entry in built["networks"]:
            for name in compute:
                host = lab.host(name)
                home = f"{CLIENT_PREFIX}{uuid.uuid4().hex[:8]}"
                host.openimds("port", "plug", entry["ports"][name], "--netns", home)
                batch = "".join(f"addr add {ip}/16 dev eth0\n"
                                for ip, _ in entry["groups"][name])
                batch += f"route replace 169.254.169.254/32 via {entry['dhcp_ip']} dev eth0\n"
                batch += "link set lo up\n"
                subprocess.run(host.argv("ip", "-n", home, "-batch", "-"), input=batch,
                               text=True, check=True, capture_output=True)
                homes[name].append((home, entry))
                instances[name] += [{"ns": home, "src": ip, "uuid": sid}
                                    for ip, sid in entry["groups"][name]]
        for name in compute:
            clients[name] = HostClient(lab.host(name), homes[name][0][0])
        exclude = {c.proc.pid for c in clients.values()}
        hosts = {h.name: h for h in lab.hosts}
        metadata_api = lab.server_procs[1].pid

        def answers(mode: str) -> bool:
            # Every (network, host) answers its first instance its own metadata.
            for name in compute:
                for home, entry in homes[name]:
                    ip, sid = entry["groups"][name][0]
                    got = clients[name].call(op="poll", ns=home, src=ip, uuid=sid, timeout=1)
                    if not got["ok"]:
                        return False
            return True

        if not args.dynamic_neighbours:
            net1 = lab.host("net-1")
            pinned = sum(pin_neighbours(net1, f"qdhcp-{entry['id']}", entry["dhcp_ip"],
                                        [ip for ip, _ in entry["groups"][name]],
                                        home_mac(lab.host(name), home))
                         for name in compute for home, entry in homes[name])
            print(f"{pinned} guest neighbour entries pinned in the qdhcp- namespaces",
                  flush=True)
        wait_for(lambda: answers("network_node"), timeout=600, interval=1)
        print(f"ready in {time.monotonic() - t0:.0f} s; storm (network_node)", flush=True)
        result_nn = storm(clients, instances, hosts, exclude, metadata_api)
        print(json.dumps({"network_node": result_nn}), flush=True)

        before_kb = {h: host_pss_kb(lab.host(h), exclude) for h in compute}
        lab.restart_control_api(metadata_mode="distributed")
        net_ids = [e["id"] for e in built["networks"]]
        meta_ips = wait_for(lambda: (lambda m: m if len(m) == len(net_ids) else None)(
            in_controller(lab, "meta-ips", ",".join(net_ids))), timeout=120, interval=1)
        for name in compute:
            host = lab.host(name)
            for net in net_ids:
                path = host.state / "qmeta" / "external" / "pids" / f"{net}.pid.haproxy"
                wait_for(path.exists, timeout=300, interval=0.5)
        for name in compute:
            for home, entry in homes[name]:
                lab.host(name).run("ip", "-n", home, "route", "replace", "169.254.169.254/32",
                                   "via", meta_ips[entry["id"]], "dev", "eth0")
        if not args.dynamic_neighbours:
            pinned = sum(pin_neighbours(lab.host(name), f"qmeta-{entry['id']}",
                                        meta_ips[entry["id"]],
                                        [ip for ip, _ in entry["groups"][name]],
                                        home_mac(lab.host(name), home))
                         for name in compute for home, entry in homes[name])
            print(f"{pinned} guest neighbour entries pinned in the qmeta- namespaces",
                  flush=True)
        wait_for(lambda: answers("distributed"), timeout=300, interval=1)
        after_kb = {h: host_pss_kb(lab.host(h), exclude) for h in compute}
        per_pair = {h: round((after_kb[h] - before_kb[h]) / args.networks / 1024, 2)
                    for h in compute}
        print("storm (distributed)", flush=True)
        result_d = storm(clients, instances, hosts, exclude, metadata_api)
        worst = max(per_pair.values())
        print(json.dumps({
            "networks": args.networks, "compute_hosts": args.compute,
            "instances_per_host_network": args.per_host,
            "network_node": result_nn, "distributed": result_d,
            "pss_mb_per_host_network": per_pair,
            "memory_bar_5mb": "PASS" if worst <= 5 else "FAIL",
        }, indent=2), flush=True)
    finally:
        for c in clients.values():
            c.close()
        if args.keep_logs:
            for log in lab.root.rglob("*.log"):
                dest = Path(args.keep_logs) / log.relative_to(lab.root)
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(log, dest)
        lab.cleanup()
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "build":
        _, _, n, hosts, k = sys.argv
        print(json.dumps(asyncio.run(_build(int(n), hosts.split(","), int(k)))))
        sys.exit(0)
    if len(sys.argv) > 1 and sys.argv[1] == "meta-ips":
        print(json.dumps(asyncio.run(_meta_ips(sys.argv[2].split(",")))))
        sys.exit(0)
    sys.exit(main())
