"""`openimds all-in-one` wires its children from the effective options (issue 16, defect 8).

A real all-in-one (control API, metadata API, metadata agent; the network agents need root and
are left out) runs with `bind_port` and `metadata_listen_port` moved by a later --config-file.
The agent must reach the control plane there (its /healthz turns ready) and send guests to the
metadata API on the moved port; a generated admin password that begins with '-' (as about one
start in 64 used to get) must not stop the first start; and the agents' wait for the control
plane to come up must not log a traceback.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from openimds.cli.allinone import (
    client_host,
    generate_password,
    render_node_config,
    render_openrc,
    render_wiring,
)
from tests.fabric.lab import wait_for as lab_wait_for

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(predicate: Callable[[], object], timeout: float = 90.0) -> None:
    """The suite's one condition poll (tests/fabric/lab.py), with this module's timeout."""
    lab_wait_for(predicate, timeout=timeout, interval=0.1)


def agent_health(sock_path: Path) -> dict[str, object] | None:
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(5)
            s.connect(str(sock_path))
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: agent\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
    except OSError:
        return None
    return dict(json.loads(data.split(b"\r\n\r\n", 1)[1]))


class Node:
    def __init__(self, state: Path, extra: Path) -> None:
        self.state = state
        self.log_path = state.parent / "all-in-one.log"
        env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "openimds", "all-in-one", "--state-dir", str(state),
                 "--no-network-agents", "--config-file", str(extra)],
                stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def moved_ports(tmp_path: Path) -> Iterator[tuple[Path, Path, int, int]]:
    state = tmp_path / "state"
    api_port, md_port = free_port(), free_port()
    extra = tmp_path / "override.conf"
    extra.write_text(f"[DEFAULT]\nbind_port = {api_port}\nmetadata_listen_port = {md_port}\n"
                     f"metrics_listen_port = {free_port()}\n")
    yield state, extra, api_port, md_port


def _run_node(state: Path, extra: Path, api_port: int, md_port: int) -> str:
    node = Node(state, extra)
    try:
        wait_for(lambda: (state / "openrc").exists() or node.proc.poll() is not None)
        assert node.proc.poll() is None, node.log()
        wait_for(lambda: (agent_health(state / "metadata_proxy") or {}).get("ready") is True
                 or node.proc.poll() is not None)
        assert node.proc.poll() is None, node.log()
        # The agent sends guests to the metadata API where it really listens.
        wait_for(lambda: f"upstream http://127.0.0.1:{md_port}" in node.log())
        assert f"OS_AUTH_URL=http://127.0.0.1:{api_port}/v3" in (state / "openrc").read_text()
    finally:
        node.stop()
    return node.log()


def test_later_config_file_moves_the_ports_and_the_agents_follow(
        moved_ports: tuple[Path, Path, int, int]) -> None:
    state, extra, api_port, md_port = moved_ports
    log = _run_node(state, extra, api_port, md_port)
    assert "Traceback" not in log, log
    wiring = (state / "wiring.conf").read_text()
    assert f"auth_url = http://127.0.0.1:{api_port}/v2.0" in wiring
    assert f"nova_metadata_port = {md_port}" in wiring


def test_a_password_that_looks_like_a_flag_does_not_stop_the_start(
        moved_ports: tuple[Path, Path, int, int]) -> None:
    state, extra, api_port, md_port = moved_ports
    state.mkdir()
    # A state dir from an earlier start whose generated password began with '-'.
    conf = render_node_config(state, "-Xq3_generated-before", "a" * 48)
    (state / "openimds.conf").write_text(conf)
    os.chmod(state / "openimds.conf", 0o600)
    log = _run_node(state, extra, api_port, md_port)
    assert "Traceback" not in log, log
    assert "OS_PASSWORD=-Xq3_generated-before" in (state / "openrc").read_text()


def test_generated_passwords_are_never_flags() -> None:
    for _ in range(2000):
        password = generate_password()
        assert len(password) == 24 and password.isalnum() and password.isascii()


@pytest.mark.parametrize("listen,host", [("0.0.0.0", "127.0.0.1"), ("", "127.0.0.1"),
                                         ("::", "127.0.0.1"), ("10.1.2.3", "10.1.2.3"),
                                         ("::1", "::1")])
def test_client_host(listen: str, host: str) -> None:
    assert client_host(listen) == host


def test_wiring_and_openrc_render() -> None:
    text = render_wiring("::1", 9000, "0.0.0.0", 9100)
    assert "auth_url = http://[::1]:9000/v2.0\n" in text
    assert "nova_metadata_host = 127.0.0.1\n" in text and "nova_metadata_port = 9100\n" in text
    assert "export OS_PASSWORD='a b$c'\n" in render_openrc("http://h:1/v3", "a b$c")
