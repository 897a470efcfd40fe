"""`[metadata_haproxy] agent_connection_mode = close` (issue 16, defect 10): in front of an agent
that answers one request per connection and then closes it, with a small accept queue (the
shape of Neutron's metadata agent), 64 concurrent guests get every answer. With the default
`reuse` mode such an agent breaks the chain under load, which the second case pins.

    test namespace: haproxy on 0.0.0.0:9697 (rendered router config) ── unix socket ──►
    this process: one-connection-at-a-time HTTP server, listen backlog 5, closes after each answer
"""

from __future__ import annotations

import os
import shutil
import socketserver
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest

from openimds.proxy.haproxy import Connections, proxy_spec_for_router
from openimds.proxy.supervisor import HaproxySupervisor

pytestmark = pytest.mark.root

RTR = "rtr-close-mode"
CLIENTS, PER_CLIENT = 64, 8

_CLIENT = r"""
import http.client, sys, threading
n, per = int(sys.argv[1]), int(sys.argv[2])
errors = []
def one():
    for _ in range(per):
        try:
            c = http.client.HTTPConnection("127.0.0.1", 9697, timeout=10)
            c.request("GET", "/latest/meta-data/")
            r = c.getresponse()
            r.read()
            if r.status != 200:
                errors.append(r.status)
            c.close()
        except OSError as exc:
            errors.append(type(exc).__name__)
ts = [threading.Thread(target=one) for _ in range(n)]
for t in ts: t.start()
for t in ts: t.join()
print(len(errors), n * per, sorted(set(map(str, errors))))
"""


class _Closing(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 - stdlib API
        body = b"instance-id\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = True

    def log_message(self, *args: Any) -> None:
        pass


class _SerialServer(socketserver.UnixStreamServer):
    request_queue_size = 5  # a small accept queue, one connection served at a time


@pytest.fixture
def closing_agent() -> Iterator[str]:
    state = tempfile.mkdtemp(prefix="oit-close-", dir="/tmp")
    os.chmod(state, 0o755)
    path = os.path.join(state, "agent.sock")
    server = _SerialServer(path, _Closing)
    os.chmod(path, 0o666)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        shutil.rmtree(state, ignore_errors=True)


def _load(ns: str, mode: str, state: str) -> tuple[int, int]:
    sup = HaproxySupervisor(state)
    spec = proxy_spec_for_router(
        RTR, state_path=state, socket_path=os.path.join(state, "agent.sock"),
        log_target=None,
        # Every client here is 127.0.0.1: no per-source share, this is about the agent side.
        connections=Connections(per_source=0, agent_mode="reuse") if mode == "reuse"
        else Connections(per_source=0, agent_mode="close", agent_maxconn=4),
    )
    sup.ensure(spec, ns)
    try:
        out = subprocess.run(
            ["ip", "netns", "exec", ns, sys.executable, "-c", _CLIENT, str(CLIENTS),
             str(PER_CLIENT)],
            capture_output=True, text=True, timeout=120, env={"PATH": os.environ["PATH"]},
            check=True,
        ).stdout.split(maxsplit=2)
    finally:
        sup.stop(RTR)
    print(f"\n{mode}: {out[0]} errors of {out[1]} requests {out[2].strip()}")
    return int(out[0]), int(out[1])


def test_close_mode_serves_every_guest_of_a_closing_agent(
    make_netns: Callable[[str], str], closing_agent: str
) -> None:
    ns = make_netns("close")
    subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
    errors, total = _load(ns, "close", closing_agent)
    assert (errors, total) == (0, CLIENTS * PER_CLIENT)


def test_reuse_mode_is_what_breaks_with_such_an_agent(
    make_netns: Callable[[str], str], closing_agent: str
) -> None:
    ns = make_netns("reuse")
    subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
    errors, _total = _load(ns, "reuse", closing_agent)
    assert errors > 0
