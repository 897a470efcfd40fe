"""Benchmark: signed meta_data.json from `openimds metadata-api` beside a haproxy static reply.

Not a test. For each (workers, instances) pair it seeds a fresh SQLite inventory, starts the
real `openimds metadata-api` (proxy mode), warms every instance's cache, then drives 64
keep-alive connections with wrk; every request is signed for one of the instances, round
robin. In the same run a haproxy `http-request return` of a body of the same size, driven by
the same wrk script (same requests), gives the ceiling for this machine. Prints requests/s, p50 and p99 for each, the server's CPU time per
request (all its processes; steadier than req/s on a shared machine), then the issue's bars:

* one worker: at least 50% of the static rate on the default HTTP layer (issue 14; goal 80%),
  20% on the aiohttp layer (round 1), both measured side by side (`--http-server`);
* more workers: close to linear (>= 80% of linear) up to the cores left for the server
  (the CPU count minus the `--threads` wrk runs; on a 2-core box with wrk that is one core, so
  the bar there is only "no worse than one worker");
* 10,000 (or, issue 14, 100,000: `--instances 10,100000`) instances no more than 10% slower
  than 10, i.e. >= 0.9x (goal 0.95x), judged on the ratio to the static rate of the same run,
  which cancels load from other jobs between runs; raw req/s printed too.

    .venv/bin/python bench/bench_metadata_api.py [--duration 10] [--rounds 3] [--workers 1,2]
        [--instances 10,10000] [--connections 64] [--threads 2] [--http-server fast,aiohttp]
        [--json out.json]

Each figure is the median of `--rounds` alternating runs (openimds, haproxy, openimds, ...);
the ratio is the median of the per-round ratios. The exit status is 1 when a bar fails.

Needs wrk and haproxy on PATH. Only processes started here are stopped (by pid).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from openimds.inventory.migrate import open_store  # noqa: E402
from openimds.inventory.models import (  # noqa: E402
    FixedIP,
    Image,
    Instance,
    Network,
    Port,
    Project,
    Subnet,
)
from openimds.wire import sign_instance_id  # noqa: E402

SECRET = "bench-secret"
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBenchBenchBenchBenchBenchBenchBenchBench bench@host"


@dataclass
class Result:
    name: str
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    # CPU seconds (user + system) of the measured server processes during the run, if known.
    cpu_s: float | None = None

    def cpu_us_per_request(self, duration: float) -> float | None:
        if self.cpu_s is None or not self.rps:
            return None
        return self.cpu_s / (self.rps * duration) * 1e6


def _tree_pids(pid: int) -> list[int]:
    """`pid` and its descendants (the metadata workers), from /proc."""
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        for task in Path(f"/proc/{current}/task").glob("*/children"):
            with contextlib.suppress(OSError):
                todo += [int(c) for c in task.read_text().split()]
    return out


def _rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def median_result(rounds: list[tuple[Result, Result]], index: int) -> Result:
    """Per-field medians over the rounds of one server (0: openimds, 1: haproxy)."""
    rs = [r[index] for r in rounds]
    cpus = [r.cpu_s for r in rs if r.cpu_s is not None]
    return Result(
        rs[0].name,
        statistics.median(r.rps for r in rs),
        statistics.median(r.p50_ms for r in rs),
        statistics.median(r.p99_ms for r in rs),
        sum(r.errors for r in rs),
        statistics.median(cpus) if cpus else None,
    )


def cpu_seconds(pids: list[int]) -> float:
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    return env


def seed(url: str, count: int) -> list[tuple[str, str]]:
    """`count` instances with one port each on a /8 (room for the issue's 100k); returns
    (uuid, project) pairs. The instances and ports go in with bulk inserts (5,000 rows a
    statement, no change records: the API starts after the seed), so 100,000 take seconds,
    not minutes."""
    store = open_store(url)
    out: list[tuple[str, str]] = []
    try:
        with store.session() as s:
            project = Project(name="bench")
            s.add(project)
            image = Image(name="bench-image")
            s.add(image)
            s.flush()
            net = Network(project_id=project.id, name="bench", mtu=1450)
            s.add(net)
            s.flush()
            sub = Subnet(
                network_id=net.id,
                project_id=project.id,
                ip_version=4,
                cidr="10.0.0.0/8",
                gateway_ip="10.0.0.1",
                dns_nameservers=["10.0.0.2"],
            )
            s.add(sub)
            s.flush()
            ids = (project.id, image.id, net.id, sub.id)
        project_id, image_id, net_id, sub_id = ids
        now = datetime.now(UTC)
        stamps = {"created_at": now, "updated_at": now}
        batch = 5000
        for start in range(0, count, batch):
            instances, ports, fixed = [], [], []
            for i in range(start, min(count, start + batch)):
                n = i + 10
                inst, port = str(uuid.uuid4()), str(uuid.uuid4())
                instances.append({
                    **stamps, "uuid": inst, "name": f"vm-{i}", "hostname": f"vm-{i}",
                    "project_id": project_id, "image_id": image_id,
                    "availability_zone": "nova", "key_name": "bench", "key_data": KEY,
                    "user_data": b"#cloud-config\n", "properties": {"index": str(i)},
                    "reservation_id": f"r-{i:08x}", "security_groups": ["default"],
                    "tags": [], "flavor": "m1.small", "launch_index": 0, "status": "ACTIVE",
                })
                ports.append({
                    **stamps, "id": port, "network_id": net_id, "project_id": project_id,
                    "name": "", "description": "", "tags": [],
                    "mac_address": f"fa:16:3e:{(n >> 16) & 255:02x}:{(n >> 8) & 255:02x}:"
                                   f"{n & 255:02x}",
                    "device_id": inst, "device_owner": "compute:nova", "admin_state_up": True,
                    "status": "ACTIVE", "preserve_on_delete": False, "binding_host_id": "",
                    "binding_profile": {}, "port_security_enabled": True,
                    "allowed_address_pairs": [],
                })
                fixed.append({"port_id": port, "subnet_id": sub_id, "network_id": net_id,
                              "ip_address": f"10.{n >> 16}.{(n >> 8) & 255}.{n & 255}"})
                out.append((inst, project_id))
            with store.session() as s:
                s.execute(Instance.__table__.insert(), instances)
                s.execute(Port.__table__.insert(), ports)
                s.execute(FixedIP.__table__.insert(), fixed)
    finally:
        store.dispose()
    return out


def wait_http(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    while True:
        try:
            with opener.open(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} did not come up")
        time.sleep(0.2)


def signed_get(base: str, uuid: str, project: str) -> bytes:
    req = urllib.request.Request(
        base + "/openstack/latest/meta_data.json",
        headers={
            "X-Instance-ID": uuid,
            "X-Tenant-ID": project,
            "X-Instance-ID-Signature": sign_instance_id(SECRET, uuid),
        },
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(req, timeout=60) as resp:
        return resp.read()


def lua_script(path: Path, pairs: list[tuple[str, str]]) -> None:
    """The wrk script: signed requests for the instances round robin. The ids are read from
    a data file beside it: a Lua table constructor of 100,000 rows exceeds Lua's constant
    limit, and wrk then silently sent plain `GET /` instead."""
    data = path.with_suffix(".ids")
    data.write_text("".join(f"{u},{p},{sign_instance_id(SECRET, u)}\n" for u, p in pairs))
    path.write_text(
        f"""
local ids = {{}}
for line in io.lines("{data}") do
  local u, p, s = line:match("([^,]+),([^,]+),([^,]+)")
  ids[#ids + 1] = {{u, p, s}}
end
local n = 0
request = function()
  n = n + 1
  local row = ids[(n % #ids) + 1]
  wrk.headers["X-Instance-ID"] = row[1]
  wrk.headers["X-Tenant-ID"] = row[2]
  wrk.headers["X-Instance-ID-Signature"] = row[3]
  return wrk.format("GET", "/openstack/latest/meta_data.json")
end
"""
    )


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    if not m:
        raise ValueError(text)
    return float(m.group(1)) * _UNITS[m.group(2)]


def run_wrk(
    name: str, url: str, args: argparse.Namespace, script: Path | None, server_pid: int
) -> Result:
    cmd = ["wrk", f"-t{args.threads}", f"-c{args.connections}", f"-d{args.duration}s", "--latency"]
    if script is not None:
        cmd += ["-s", str(script)]
    pids = _tree_pids(server_pid)
    cpu_before = cpu_seconds(pids)
    out = subprocess.run(cmd + [url], capture_output=True, text=True, env=clean_env(), check=True)
    cpu = cpu_seconds(pids) - cpu_before
    text = out.stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"^\s+50%\s+(\S+)", text, re.M).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)", text, re.M).group(1))  # type: ignore[union-attr]
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    errors = int(m.group(1)) if m else 0
    return Result(name, rps, p50, p99, errors, cpu)


def start_haproxy(tmp: Path, body: bytes, workers: int) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    (tmp / "body.json").write_bytes(body)
    cfg = tmp / "haproxy.cfg"
    cfg.write_text(
        f"""global
    nbthread {workers}
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend static
    bind 127.0.0.1:{port}
    http-request return status 200 content-type application/json file {tmp}/body.json
"""
    )
    proc = subprocess.Popen(["haproxy", "-db", "-f", str(cfg)], env=clean_env())
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 10
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    return proc, base


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def cache_count(ops: str, cache: str, result: str) -> float:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(ops + "/metrics", timeout=10) as resp:
        text = resp.read().decode()
    pattern = 'openimds_metadata_cache_total\\{cache="' + cache + '",result="' + result + '"\\}'
    m = re.search(pattern + r" ([\d.e+]+)", text)
    return float(m.group(1)) if m else 0.0


def view_misses(ops: str) -> float:
    return cache_count(ops, "view", "miss")


def answer_counts(ops: str) -> tuple[float, float]:
    """(hits, misses) of the answers the fast layer keeps as bytes, since the server started."""
    return cache_count(ops, "answer", "hit"), cache_count(ops, "answer", "miss")


WARM_UP_LIMIT_S = 1800


def warm(base: str, ops: str, pairs: list[tuple[str, str]], workers: int,
         args: argparse.Namespace, script: Path) -> bytes:
    """Request every instance until every worker has loaded each one (by the merged metrics):
    SO_REUSEPORT spreads connections by hash, so one pass does not reach every worker.

    The first 100 instances by urllib; the rest by unmeasured wrk runs of the benchmark's own
    script (100,000 instances one by one through urllib took ~15 minutes on a busy machine,
    and a request timed out)."""
    from concurrent.futures import ThreadPoolExecutor

    target = workers * len(pairs)
    first = pairs[:100]
    body = b""
    with ThreadPoolExecutor(16) as pool:
        for _ in range(8 * workers):
            body = list(pool.map(lambda p: signed_get(base, *p), first))[-1]
            if view_misses(ops) >= workers * len(first):
                break
    # The warm-up script starts each run where the last one stopped (the measured script
    # always starts at the first instance, in every wrk thread), and each wrk thread at its
    # own share of the instances: threads starting at the same instance ask for the same
    # ones, so a run reached half as many, and two requests for an instance whose view is
    # still loading count two misses (the criterion below then passed with instances never
    # asked, which the measured runs rendered).
    warm_script = script.with_suffix(".warm.lua")
    text = script.read_text()
    stride = max(1, len(pairs) // args.threads)
    offset = 0
    def warmed() -> bool:
        # Every view loaded, and (the fast layer) every instance's answer looked up once, so
        # kept: a view can be loaded by a request that the answer cache never saw answered.
        answer_misses = answer_counts(ops)[1]
        return view_misses(ops) >= target and (answer_misses == 0 or answer_misses >= target)

    # Each instance's first request loads its view from the database (~3.5 ms of CPU): 100,000
    # take ~6 minutes; fifty runs of --duration were not always enough, and the measured runs
    # then rendered what the warm-up had not reached.
    deadline = time.monotonic() + WARM_UP_LIMIT_S
    while not warmed():
        if time.monotonic() > deadline:
            print(f"warm-up stopped after {WARM_UP_LIMIT_S} s before every instance was "
                  "answered: the measured runs include first requests", flush=True)
            break
        warm_script.write_text(text.replace("local n = 0", (
            "n = 0\nlocal made = 0\n"
            "function setup(thread)\n"
            f"  thread:set(\"n\", {offset} + made * {stride})\n"
            "  made = made + 1\n"
            "end")))
        out = subprocess.run(["wrk", f"-t{args.threads}", f"-c{args.connections}",
                              f"-d{args.duration}s", "-s", str(warm_script), base],
                             capture_output=True, text=True, env=clean_env(), check=True)
        done = re.search(r"(\d+) requests in", out.stdout)
        offset += int(done.group(1)) // args.threads if done else 0
    return body


def start_api(
    tmp: Path, url: str, workers: int, http_server: str = "fast"
) -> tuple[subprocess.Popen[bytes], str, str]:
    port, ops = free_port(), free_port()
    conf = tmp / f"nova-{workers}-{http_server}.conf"
    conf.write_text(
        f"""[DEFAULT]
metadata_listen = 127.0.0.1
metadata_listen_port = {port}
metadata_workers = {workers}
metadata_http_server = {http_server}
metrics_listen = 127.0.0.1
metrics_listen_port = {ops}
state_path = {tmp}

[database]
connection = {url}

[neutron]
service_metadata_proxy = true
metadata_proxy_shared_secret = {SECRET}
"""
    )
    log = open(tmp / f"api-{workers}-{http_server}.log", "wb")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(
        [sys.executable, "-m", "openimds", "metadata-api", "--config-file", str(conf)],
        env=clean_env(),
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    wait_http(f"http://127.0.0.1:{ops}/healthcheck")
    return proc, f"http://127.0.0.1:{port}", f"http://127.0.0.1:{ops}"


# The 1-worker bar per HTTP layer: issue 14's bar (goal 80%) for the default layer, round 1's
# bar for the aiohttp layer kept beside it.
ONE_WORKER_BAR = {"fast": 0.50, "aiohttp": 0.20}


def _bars(rows: list[dict[str, Any]], wrk_threads: int) -> list[str]:
    """The issue's bars, with their numbers, PASS or FAIL, per HTTP layer."""
    out = []
    for kind in sorted({r["http_server"] for r in rows if r["server"] == "openimds"}):
        out += _bars_of(
            [r for r in rows if r["server"] == "openimds" and r["http_server"] == kind],
            kind,
            wrk_threads,
        )
    return out


def _bars_of(rows: list[dict[str, Any]], kind: str, wrk_threads: int) -> list[str]:
    api = {(r["workers"], r["instances"]): r for r in rows}
    out = []
    bar = ONE_WORKER_BAR.get(kind, 0.20)
    for (workers, count), r in sorted(api.items()):
        if workers == 1:
            ok = r["ratio"] >= bar
            out.append(
                f"{'PASS' if ok else 'FAIL'}  [{kind}] 1 worker, {count} instances: "
                f"{r['ratio']:.1%} of static (bar >= {bar:.0%})"
            )
    cores = max(1, (os.cpu_count() or 1) - wrk_threads)
    for (workers, count), r in sorted(api.items()):
        one = api.get((1, count))
        if workers == 1 or one is None:
            continue
        expected = min(workers, cores)
        speedup = r["rps"] / one["rps"]
        ok = speedup >= 0.8 * expected
        out.append(
            f"{'PASS' if ok else 'FAIL'}  [{kind}] {workers} workers, {count} instances: "
            f"{speedup:.2f}x one worker (bar >= 0.8 x {expected}: {os.cpu_count()} cores, "
            f"{wrk_threads} used by wrk)"
        )
    counts = sorted({c for _, c in api})
    for workers in sorted({w for w, _ in api}):
        small, large = api.get((workers, counts[0])), api.get((workers, counts[-1]))
        if small is None or large is None or small is large:
            continue
        slower = 1 - large["ratio"] / small["ratio"]
        raw = 1 - large["rps"] / small["rps"]
        ok = slower <= 0.10
        # Issue 14: "100k instances vs 10: API req/s >= 0.9x (goal >= 0.95x)".
        goal = "goal met" if slower <= 0.05 else "goal (>= 0.95x) not met"
        out.append(
            f"{'PASS' if ok else 'FAIL'}  [{kind}] {workers} worker(s), {counts[-1]} vs "
            f"{counts[0]} instances: {1 - slower:.3f}x, {abs(slower):.1%} "
            f"{'slower' if slower > 0 else 'faster'} relative to static (bar >= 0.90x, "
            f"{goal}; raw req/s {1 - raw:.3f}x)"
        )
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--workers", default=f"1,{os.cpu_count() or 2}")
    parser.add_argument("--instances", default="10,10000")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--rounds", type=int, default=3, help="alternating runs of each server (medians shown)"
    )
    parser.add_argument(
        "--http-server", default="fast,aiohttp",
        help="metadata_http_server values to measure side by side",
    )
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    for tool in ("wrk", "haproxy"):
        if shutil.which(tool) is None:
            parser.error(f"{tool} not found on PATH")
    # The service logs one access line per request, as in production, into api-N.log.
    results: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="openimds-bench-") as tmpdir:
        tmp = Path(tmpdir)
        for count in [int(x) for x in args.instances.split(",")]:
            url = f"sqlite:///{tmp}/inv-{count}.sqlite"
            t0 = time.monotonic()
            pairs = seed(url, count)
            print(f"seeded {count} instances in {time.monotonic() - t0:.1f}s", flush=True)
            script = tmp / f"ids-{count}.lua"
            lua_script(script, pairs)
            for workers in [int(x) for x in args.workers.split(",")]:
                kinds = args.http_server.split(",")
                apis: dict[str, tuple[subprocess.Popen[bytes], str, str]] = {}
                hap = None
                warm_s: dict[str, float] = {}
                try:
                    for kind in kinds:
                        apis[kind] = start_api(tmp, url, workers, kind)
                        t0 = time.monotonic()
                        body = warm(apis[kind][1], apis[kind][2], pairs, workers, args,
                                    script)
                        warm_s[kind] = time.monotonic() - t0
                    hap, hbase = start_haproxy(tmp, body, workers)
                    hap_name = f"haproxy   t={workers} n={count}"
                    # Alternate the servers, round by round: load from other jobs drifts over
                    # minutes, and each round's ratios compare runs seconds apart.
                    rounds: dict[str, list[tuple[Result, Result]]] = {k: [] for k in kinds}
                    # Answer-cache lookups during the measured runs only: a miss there is a
                    # request the Responder rendered, which the warm-up should have left none of.
                    during = {k: [0.0, 0.0] for k in kinds}
                    for _ in range(args.rounds):
                        measured = {}
                        for kind in kinds:
                            before = answer_counts(apis[kind][2])
                            measured[kind] = run_wrk(
                                f"openimds {kind:7s} w={workers} n={count}",
                                apis[kind][1], args, script, apis[kind][0].pid,
                            )
                            after = answer_counts(apis[kind][2])
                            during[kind][0] += after[0] - before[0]
                            during[kind][1] += after[1] - before[1]
                        # The same load: the same script, so the same signed requests (and
                        # the same wrk-side cost) reach haproxy, which ignores the headers.
                        h = run_wrk(hap_name, hbase, args, script, hap.pid)
                        for kind in kinds:
                            rounds[kind].append((measured[kind], h))
                    for kind in kinds:
                        # Requests the fast layer answered from the answers kept as bytes
                        # (metadata_answer_cache_size), against all it looked up there.
                        hits = cache_count(apis[kind][2], "answer", "hit")
                        misses = cache_count(apis[kind][2], "answer", "miss")
                        if hits or misses:
                            print(f"[{kind}] answers kept as bytes: {hits:.0f} hits, "
                                  f"{misses:.0f} misses since start; during the measured runs "
                                  f"{during[kind][0]:.0f} hits, {during[kind][1]:.0f} misses",
                                  flush=True)
                        rss = sum(_rss_kb(p) for p in _tree_pids(apis[kind][0].pid))
                        print(f"[{kind}] resident set after the rounds: {rss / 1024:.0f} MB "
                              f"(VmRSS, all its processes)", flush=True)
                finally:
                    for proc, *_ in apis.values():
                        stop(proc)
                    if hap is not None:
                        stop(hap)
                rows = [
                    (kind, "openimds", median_result(rounds[kind], 0),
                     statistics.median(a.rps / h.rps for a, h in rounds[kind]))
                    for kind in kinds
                ]
                rows.append(("-", "haproxy", median_result(rounds[kinds[0]], 1), 1.0))
                for kind, server, r, ratio in rows:
                    cpu = r.cpu_us_per_request(args.duration)
                    print(
                        f"{r.name:30s} {r.rps:10.0f} req/s  p50 {r.p50_ms:7.2f} ms  "
                        f"p99 {r.p99_ms:7.2f} ms  non-2xx {r.errors}  "
                        f"cpu {cpu or 0:6.1f} us/req"
                        + (f"  {ratio:6.1%} of static" if server == "openimds" else "")
                        + f"  [{args.rounds} rounds]"
                        + (f"  (body {len(body)} B, warm-up {warm_s[kind]:.1f}s)"
                           if server == "openimds" else ""),
                        flush=True,
                    )
                    results.append(
                        {
                            "name": r.name,
                            "server": server,
                            "http_server": kind,
                            "workers": workers,
                            "instances": count,
                            "rps": r.rps,
                            "p50_ms": r.p50_ms,
                            "p99_ms": r.p99_ms,
                            "non_2xx": r.errors,
                            "cpu_us_per_request": cpu,
                            "ratio": ratio,
                            "body_bytes": len(body),
                        }
                    )
    bars = _bars(results, args.threads)
    print("\n".join(bars))
    if args.json:
        Path(args.json).write_text(json.dumps({"results": results, "bars": bars}, indent=2))
    return 0 if all(b.startswith("PASS") for b in bars) else 1


if __name__ == "__main__":
    raise SystemExit(main())
