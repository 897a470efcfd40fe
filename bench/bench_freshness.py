"""Benchmark: how long from a committed change to the metadata API answering with it.

Not a test. Starts the real `openimds metadata-api` (one worker, proxy mode) on a fresh
inventory, warms the instance's cache, then repeatedly renames the instance from this process
(a separate writer, as the control-plane API is) and polls `meta-data/hostname` until the new
name is served. Prints p50/p99/max of the delay for SQLite (cross-process: the store's short
poll) and, when OPENIMDS_TEST_DATABASE_URL names a PostgreSQL server, for PostgreSQL (NOTIFY).
The reference in the same run is one plain request's latency: the delay can not be below it.

    .venv/bin/python bench/bench_freshness.py [--rounds 50]
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import select  # noqa: E402

from openimds.inventory.migrate import open_store  # noqa: E402
from openimds.inventory.models import FixedIP, Instance, Network, Port, Project, Subnet  # noqa: E402
from openimds.inventory.store import Store  # noqa: E402
from openimds.wire import sign_instance_id  # noqa: E402

SECRET = "freshness-secret"
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def seed(store: Store) -> tuple[str, str]:
    with store.session() as s:
        project = Project(name=f"fresh-{uuid.uuid4().hex[:6]}")
        s.add(project)
        s.flush()
        net = Network(project_id=project.id, name="fresh")
        s.add(net)
        s.flush()
        sub = Subnet(network_id=net.id, project_id=project.id, ip_version=4, cidr="10.9.0.0/24")
        s.add(sub)
        s.flush()
        inst = Instance(name="fresh", hostname="fresh-0", project_id=project.id)
        s.add(inst)
        s.flush()
        s.add(Port(network_id=net.id, project_id=project.id, mac_address="fa:16:3e:09:00:05",
                   device_id=inst.uuid, device_owner="compute:nova",
                   fixed_ips=[FixedIP(subnet_id=sub.id, ip_address="10.9.0.5")]))
        return inst.uuid, project.id


def get_hostname(base: str, instance: str, project: str) -> str:
    req = urllib.request.Request(base + "/latest/meta-data/hostname", headers={
        "X-Instance-ID": instance, "X-Tenant-ID": project,
        "X-Instance-ID-Signature": sign_instance_id(SECRET, instance)})
    with OPENER.open(req, timeout=5) as resp:
        return resp.read().decode()


def measure(url: str, rounds: int, tmp: Path) -> tuple[list[float], list[float]]:
    store = open_store(url)
    instance, project = seed(store)
    port, ops = free_port(), free_port()
    conf = tmp / "api.conf"
    conf.write_text(
        f"[DEFAULT]\nmetadata_listen = 127.0.0.1\nmetadata_listen_port = {port}\n"
        f"metadata_workers = 1\nmetrics_listen = 127.0.0.1\nmetrics_listen_port = {ops}\n"
        f"state_path = {tmp}\n[database]\nconnection = {url}\n"
        f"[neutron]\nservice_metadata_proxy = true\nmetadata_proxy_shared_secret = {SECRET}\n")
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    proc = subprocess.Popen([sys.executable, "-m", "openimds", "metadata-api",
                             "--config-file", str(conf)], env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    delays: list[float] = []
    plain: list[float] = []
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                get_hostname(base, instance, project)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        for i in range(1, rounds + 1):
            t0 = time.perf_counter()
            get_hostname(base, instance, project)
            plain.append(time.perf_counter() - t0)
            name = f"fresh-{i}"
            with store.session() as s:
                s.scalars(select(Instance).where(Instance.uuid == instance)).one().hostname = name
            committed = time.perf_counter()
            while not get_hostname(base, instance, project).startswith(name + "."):
                if time.perf_counter() - committed > 10:
                    raise RuntimeError("change not visible within 10 s")
            delays.append(time.perf_counter() - committed)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        store.dispose()
    return delays, plain


def row(name: str, values: list[float]) -> str:
    ms = sorted(v * 1000 for v in values)
    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    return f"{name:<38} p50 {statistics.median(ms):8.1f} ms  p99 {p99:8.1f} ms  max {ms[-1]:8.1f} ms"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=50)
    args = parser.parse_args()
    backends = [("sqlite", None)]
    pg = os.environ.get("OPENIMDS_TEST_DATABASE_URL")
    if pg:
        backends.append(("postgresql", pg))
    for name, url in backends:
        with tempfile.TemporaryDirectory(prefix="openimds-fresh-") as tmp:
            db = url or f"sqlite:///{tmp}/inventory.sqlite"
            delays, plain = measure(db, args.rounds, Path(tmp))
        print(row(f"{name}: one plain request (reference)", plain))
        print(row(f"{name}: commit -> first fresh answer", delays))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
