"""The real entry point: `openimds metadata-api` with a config file, SQLite inventory, 2 workers."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from openimds.inventory.migrate import open_store
from openimds.inventory.models import Instance
from openimds.wire import sign_instance_id
from tests.metadata.test_store_source import INSTANCE, seed
from tests.support.node import children as child_pids
from tests.support.node import wait_for

requests = pytest.importorskip("requests")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    return env


class Server:
    def __init__(self, port: int, ops: int, project: str, url: str) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.ops = f"http://127.0.0.1:{ops}"
        self.project = project
        self.url = url
        self.port = port
        self.pid = 0

    def headers(self) -> dict[str, str]:
        return {
            "X-Instance-ID": INSTANCE,
            "X-Tenant-ID": self.project,
            "X-Instance-ID-Signature": sign_instance_id("s3cret", INSTANCE),
        }


@pytest.fixture
def server(tmp_path: Path, http_server: str) -> Iterator[Server]:
    url = f"sqlite:///{tmp_path}/inv.sqlite"
    store = open_store(url)
    ids = seed(store)
    store.dispose()
    port, ops = free_port(), free_port()
    conf = tmp_path / "nova.conf"
    conf.write_text(
        f"""[DEFAULT]
metadata_listen = 127.0.0.1
metadata_listen_port = {port}
metadata_workers = 2
metadata_http_server = {http_server}
metrics_listen = 127.0.0.1
metrics_listen_port = {ops}
state_path = {tmp_path}

[database]
connection = {url}

[neutron]
service_metadata_proxy = true
metadata_proxy_shared_secret = s3cret
"""
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "openimds", "metadata-api", "--config-file", str(conf)],
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    srv = Server(port, ops, ids["project"], url)
    srv.pid = proc.pid
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, proc.stdout.read().decode()  # type: ignore[union-attr]
            try:
                if requests.get(srv.ops + "/healthcheck", timeout=1).status_code == 200:
                    break
            except requests.RequestException:  # not listening yet, or slow on a busy machine
                pass
            assert time.monotonic() < deadline, "metadata-api did not become ready"
            time.sleep(0.2)
        yield srv
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            out, _ = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        assert b"Traceback" not in out, out.decode()


def test_cli_serves_signed_requests_and_follows_the_inventory(server: Server) -> None:
    session = requests.Session()
    session.trust_env = False
    r = session.get(server.base + "/openstack/latest/meta_data.json", headers=server.headers())
    assert r.status_code == 200 and r.json()["uuid"] == INSTANCE
    assert session.get(server.base + "/openstack").status_code == 400
    # Several requests so both workers (SO_REUSEPORT) are likely to serve some.
    for _ in range(20):
        r = session.get(server.base + "/latest/meta-data/hostname", headers=server.headers())
        assert r.text == "web-1.novalocal"

    store = open_store(server.url, migrate=False)
    try:
        with store.session() as s:
            s.scalar(select(Instance).where(Instance.uuid == INSTANCE)).hostname = "moved"
    finally:
        store.dispose()
    # Another process wrote to SQLite: the feed notices within its poll interval, in every
    # worker. Fresh connections spread requests over the workers.
    deadline = time.monotonic() + 10
    seen: list[str] = []
    while time.monotonic() < deadline:
        seen = [
            requests.get(
                server.base + "/latest/meta-data/hostname", headers=server.headers(), timeout=5
            ).text
            for _ in range(10)
        ]
        if all(text == "moved.novalocal" for text in seen):
            break
        time.sleep(0.2)
    assert all(text == "moved.novalocal" for text in seen), seen

    metrics = session.get(server.ops + "/metrics").text
    assert "openimds_metadata_requests_total" in metrics
    assert 'status="200"' in metrics and 'status="400"' in metrics


def _listeners_on(port: int) -> set[str]:
    """Socket inodes listening on 127.0.0.1:`port` (state 0A in /proc/net/tcp)."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == f"0100007F:{port:04X}" and fields[3] == "0A":
            inodes.add(fields[9])
    return inodes


def _holds(pid: int, inodes: set[str]) -> bool:
    try:
        links = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
    except OSError:
        return False
    return any(link[len("socket:["):-1] in inodes for link in links if link.startswith("socket:"))


def _wait(predicate: Any, what: str, timeout: float = 30.0) -> None:
    try:
        wait_for(predicate, timeout=timeout, interval=0.1)
    except AssertionError as exc:
        raise AssertionError(what) from exc


def _health(server: Server) -> tuple[int, dict[str, Any]]:
    try:
        r = requests.get(server.ops + "/healthcheck", timeout=2)
    except requests.RequestException:
        return 0, {}
    return r.status_code, r.json()


def test_a_dead_worker_is_replaced_and_every_worker_stops_with_the_service(
    server: Server,
) -> None:
    """The metadata API's processes run under runtime.supervise_workers, like the agent's and
    the control-plane API's: a killed guest worker gets a replacement, the service keeps
    answering, and SIGTERM to the service leaves no process behind."""
    children = set(child_pids(server.pid))
    guests = {pid for pid in children if _holds(pid, _listeners_on(server.port))}
    assert len(guests) == 2 and len(children) == 3  # two guest workers and the ops listener
    status, body = _health(server)
    assert status == 200 and body["ready"] is True and body["workers"] == 2
    victim = min(guests)
    os.kill(victim, signal.SIGKILL)

    def replaced() -> bool:
        now = {pid for pid in set(child_pids(server.pid))
               if _holds(pid, _listeners_on(server.port))}
        return len(now) == 2 and victim not in now

    _wait(replaced, "the killed worker was not replaced")
    _wait(lambda: _health(server)[0] == 200, "not ready again after the replacement")
    assert _health(server)[1]["workers"] == 2
    for _ in range(10):  # fresh connections: both workers, the replacement too, answer
        r = requests.get(server.base + "/latest/meta-data/hostname", headers=server.headers(),
                         timeout=5)
        assert r.status_code == 200 and r.text == "web-1.novalocal"
    everyone = set(child_pids(server.pid))
    os.kill(server.pid, signal.SIGTERM)
    _wait(lambda: not any(Path(f"/proc/{pid}").exists() and
                          Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
                          != "Z" for pid in everyone), "a worker outlived the service")


@pytest.mark.parametrize(("workers", "which"), [(1, "guest"), (2, "guest"), (1, "metrics")])
def test_an_address_another_process_holds_is_one_line_and_exit_1(
        tmp_path: Path, workers: int, which: str) -> None:
    """A port already taken is an operator's condition, not a crash: exit 1 with one line
    naming the address, no traceback, no worker restarted in a loop, no claim to listen."""
    with socket.create_server(("127.0.0.1", 0)) as taken:
        held = int(taken.getsockname()[1])
        port, ops = (held, free_port()) if which == "guest" else (free_port(), held)
        conf = tmp_path / "nova.conf"
        conf.write_text(
            f"[DEFAULT]\nmetadata_listen = 127.0.0.1\nmetadata_listen_port = {port}\n"
            f"metadata_workers = {workers}\nmetrics_listen = 127.0.0.1\n"
            f"metrics_listen_port = {ops}\nstate_path = {tmp_path}\n\n"
            f"[database]\nconnection = sqlite:///{tmp_path}/inv.sqlite\n\n"
            "[neutron]\nservice_metadata_proxy = true\nmetadata_proxy_shared_secret = s3cret\n")
        proc = subprocess.run(
            [sys.executable, "-m", "openimds", "metadata-api", "--config-file", str(conf)],
            env=clean_env(), capture_output=True, text=True, timeout=120)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1, output
    assert "Traceback" not in output, output
    assert f"cannot listen on 127.0.0.1:{held}: Address already in use" in output, output
    assert "listening on" not in output, output
