"""Benchmark (issue 11, item 4): replica faults under a 200-instance cloud-init crawl.

Not a test. Two control-api and two metadata-api replicas on a private PostgreSQL, one
metadata agent with both in `nova_metadata_host` and `auth_url` (tests/support/replicas.py,
the same cloud as tests/e2e/test_replicas.py). N instances crawl cloud-init 22.4.2's
OpenStack sequence + EC2 start through the agent's socket, again and again, while a writer
creates networks through both control-api replicas and each instance posts its password once.
One round per fault: none (the reference), kill -9 of control-api-1, kill -9 of
metadata-api-1, a PostgreSQL restart (stop -m immediate, start). Per round: requests, failed
requests (by status; 0 = connection error), the failure window (first to last failed
request), the guest outage (the longest any one instance waited from sending a request that
failed to its next good answer), the write outage (the same for the writer: from sending a
failed write to the next acknowledged one), the longest gap between two acknowledged writes
from the fault on (a stalled write counts too), acknowledged and failed writes; at the end,
acknowledged writes that are missing (or made twice). The round's request latency (p50 /
p99 / max, send to answer) is printed beside them: on a busy machine a guest's wait is mostly
its queueing, which the reference round shows. Bars: 0 lost acknowledged writes;
guest and write outage <= 5 s per fault.

    .venv/bin/python bench/bench_replicas.py [--instances 200] [--settle 5]

Root only (PostgreSQL runs as the postgres user); binds loopback only, sends nothing to
169.254.169.254, and stops everything it started by pid.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _harness import install_stop_handlers, percentile, verdict, wait_for  # noqa: E402

from tests.support.replicas import ReplicaCloud, Round, run_faults  # noqa: E402

OUTAGE_BAR = 5.0


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def latency(r: Round) -> str:
    took = [x.t - x.started for x in r.results]
    return "/".join(f"{percentile(took, q):.2f}" for q in (50, 99, 100))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=200)
    parser.add_argument("--settle", type=float, default=5.0,
                        help="seconds the crawl goes on after each fault")
    args = parser.parse_args()
    install_stop_handlers()
    print(f"machine load at start {load()} (1/5/15 min)", flush=True)
    cloud = ReplicaCloud()
    try:
        cloud.start()
        t0 = time.monotonic()
        asyncio.run(cloud.build(args.instances))
        print(f"  {args.instances} servers created in {time.monotonic() - t0:.1f}s", flush=True)
        wait_for(lambda: asyncio.run(cloud.ready()), timeout=120, interval=0.5)
        started = cloud.postgres_started_at()
        rounds = asyncio.run(run_faults(cloud, settle=args.settle))
        restarted = cloud.postgres_started_at() != started
        lost = asyncio.run(cloud.lost_writes(list(rounds.values())))
    finally:
        cloud.cleanup()
    print(f"\nreplica faults: {args.instances} instances, cloud-init 22.4.2 OpenStack sequence "
          f"+ EC2 crawl through one metadata agent; 2 control-api + 2 metadata-api on "
          f"PostgreSQL")
    print(f"  {'fault':<14}{'requests':>9}{'failed':>8}  {'by status':<14}{'window s':>9}"
          f"{'guest outage s':>16}{'write outage s':>16}{'write gap s':>13}{'acked writes':>14}"
          f"{'failed writes':>15}  latency p50/p99/max s")
    worst = 0.0
    for fault, r in rounds.items():
        failed = r.failed()
        by_status = dict(collections.Counter(x.status for x in failed))
        worst = max(worst, r.guest_outage(), r.write_outage)
        print(f"  {fault:<14}{len(r.results):>9}{len(failed):>8}  {str(by_status or '-'):<14}"
              f"{r.failure_window():>9.2f}{r.guest_outage():>16.2f}{r.write_outage:>16.2f}"
              f"{r.write_gap():>13.2f}"
              f"{len(r.acked_networks):>14}{r.failed_writes:>15}  {latency(r)}")
    print(f"  PostgreSQL restarted: {restarted}")
    print(f"  lost acknowledged writes: {len(lost)} {lost[:5] if lost else ''}")
    print(f"  machine load at end {load()} (1/5/15 min)")
    ok_lost, ok_outage = not lost and restarted, worst <= OUTAGE_BAR
    print(f"bar: 0 lost acknowledged writes: {verdict(ok_lost)}; guest and write outage <= "
          f"{OUTAGE_BAR:g} s per fault (worst {worst:.2f} s): {verdict(ok_outage)}")
    return 0 if ok_lost and ok_outage else 1


if __name__ == "__main__":
    sys.exit(main())
