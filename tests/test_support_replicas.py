"""The replica harness's own rules (tests/support/replicas.py): a service counts as listening
only when its own process holds the listening socket (another process on its port must not
pass for it), and its ports never come from the range other tests' bind(0) draws from."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.support.replicas import HOSTS, ReplicaCloud, Round, _ephemeral_range, run_faults

# Listens on argv[1] (host) argv[2] (port) and says so on stdout, then waits to be stopped.
LISTENER = ("import socket, sys, time\n"
            "s = socket.create_server((sys.argv[1], int(sys.argv[2])))\n"
            "print('up', flush=True)\n"
            "time.sleep(120)\n")
# Never listens; just lives until stopped.
IDLE = "import time; time.sleep(120)"


@pytest.fixture
def cloud() -> Iterator[ReplicaCloud]:
    c = ReplicaCloud()  # nothing started: only its ports and state directory
    try:
        yield c
    finally:
        c.cleanup()


def _start(cloud: ReplicaCloud, name: str, code: str, *args: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE)
    cloud.procs[name] = proc
    (cloud.root / f"{name}.log").write_text("")
    return proc


def test_ports_are_free_on_both_replica_addresses_and_below_the_ephemeral_range(
        cloud: ReplicaCloud) -> None:
    ports = {cloud.api_port, cloud.md_port, cloud.metrics_port}
    assert len(ports) == 3
    low, _high = _ephemeral_range()
    assert all(p < low for p in ports), (ports, low)


def test_another_process_listening_on_the_port_is_not_the_service(
        cloud: ReplicaCloud) -> None:
    with socket.create_server((HOSTS[0], cloud.api_port)):  # a stranger holds the port
        proc = _start(cloud, "control-api-1", IDLE)
        with pytest.raises(AssertionError, match="control-api-1 is not listening"):
            cloud.wait_listening("control-api-1", timeout=1.0)
        assert proc.poll() is None


def test_the_service_listening_itself_is_ready(cloud: ReplicaCloud) -> None:
    proc = _start(cloud, "control-api-2", LISTENER, HOSTS[1], str(cloud.api_port))
    assert proc.stdout is not None and proc.stdout.readline() == b"up\n"
    cloud.wait_listening("control-api-2", timeout=30)


def test_a_service_that_exits_is_reported_with_its_log(cloud: ReplicaCloud) -> None:
    proc = _start(cloud, "metadata-api-1", "raise SystemExit(1)")
    proc.wait()
    (cloud.root / "metadata-api-1.log").write_text("address already in use")
    with pytest.raises(AssertionError, match="address already in use"):
        cloud.wait_listening("metadata-api-1", timeout=30)


class _RoundsCloud:
    """Just what run_faults drives, in memory: records whether a replica was killed while
    a password POST of its round was still unanswered."""

    instances = [("10.0.0.5", "u1")]

    def __init__(self) -> None:
        self.in_flight = 0
        self.killed_during_post: list[str] = []
        self.killed: list[str] = []

    async def writer(self, stop: asyncio.Event, out: Round, tag: str) -> None:
        out.acked_networks.append(f"{tag}-0")
        await stop.wait()

    async def crawl(self, instances: object, round_no: int, rounds: int, out: Round,
                    until: asyncio.Event, posted: asyncio.Event | None = None) -> None:
        self.in_flight += 1
        await asyncio.sleep(0.05)  # the metadata API writing the password
        self.in_flight -= 1
        if posted is not None:
            posted.set()
        await until.wait()

    def kill(self, name: str) -> None:
        self.killed.append(name)
        if self.in_flight:
            self.killed_during_post.append(name)

    def restart_postgres(self) -> None:
        pass

    def start_service(self, name: str) -> None:
        pass

    def wait_listening(self, name: str) -> None:
        pass


def test_a_replica_is_not_killed_while_a_password_post_is_unanswered() -> None:
    cloud = _RoundsCloud()
    asyncio.run(run_faults(cloud, kill_after=0.0, settle=0.0))  # type: ignore[arg-type]
    assert cloud.killed == ["control-api-1", "metadata-api-1"]
    assert cloud.killed_during_post == []
