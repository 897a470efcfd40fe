"""Two control-api and two metadata-api replicas on PostgreSQL (issue 11 item 4): kill -9 of
one of each during a crawl, then a PostgreSQL restart (a private server: stop -m immediate and
start again). During a replica kill no request fails; during the database restart a request
may get a 503 (never a 500) or, for the writer, a connection error, and everything recovers.
No acknowledged write is lost, and none is made twice. The outage per fault is printed (its
bar lives in bench/bench_replicas.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from tests.support.multihost import wait_for
from tests.support.replicas import ReplicaCloud, run_faults

pytestmark = pytest.mark.postgres


@pytest.fixture
def replicas(needs_root: None) -> Iterator[ReplicaCloud]:
    cloud = ReplicaCloud()  # its own PostgreSQL (runuser postgres: needs root)
    try:
        cloud.start()
        yield cloud
    finally:
        cloud.cleanup()


def test_kill_one_of_each_replica_and_restart_postgresql_during_a_crawl(
        replicas: ReplicaCloud) -> None:
    asyncio.run(replicas.build(12))
    wait_for(lambda: asyncio.run(replicas.ready()), timeout=60, interval=0.5)
    started = replicas.postgres_started_at()
    rounds = asyncio.run(run_faults(replicas))
    assert replicas.postgres_started_at() != started, "PostgreSQL was not restarted"
    summary = {}
    for fault, r in rounds.items():
        failed = r.failed()
        statuses = {x.status for x in failed}
        summary[fault] = (len(r.results), len(failed), round(r.outage(), 2),
                          len(r.acked_networks), r.failed_writes)
        assert len(r.results) > len(replicas.instances) * 10, (fault, len(r.results))
        if fault in ("none", "control-api", "metadata-api"):
            assert failed == [], (fault, [(x.status, x.path) for x in failed[:5]])
            assert r.failed_writes == 0 or fault == "control-api", (fault, r.failed_writes)
        else:
            assert statuses <= {503}, (fault, statuses)
        # Every round ends answered: the last request of the round succeeded.
        assert max(r.results, key=lambda x: x.t).status in (200, 404), fault
        assert r.acked_networks, f"no write was acknowledged during the {fault} round"
    assert asyncio.run(replicas.lost_writes(list(rounds.values()))) == []
    for name in ("control-api-2", "metadata-api-2", "metadata-agent"):
        assert "Traceback" not in replicas.log_text(name), name
    print(f"\nreplica faults (requests, failed, outage s, acked writes, failed writes): "
          f"{summary}")
