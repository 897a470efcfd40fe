"""A throw-away one-host fabric for tests: unique ids, a fabric namespace, guests, cleanup.

Built on the suite's node harness (tests/support/node.py), which also makes the e2e cloud and
the benchmarks' node. Everything a test creates lives in namespaces it names: the fabric
namespace `oit-fab-<hex>`, `qdhcp-<id>`/`qrouter-<id>` for the test's own uuid4 ids, and guests
`oit-g-<hex>`. Cleanup always runs (`Sandbox.remove_everything`): processes inside those
namespaces (only those) and processes naming the state directory are killed by pid, then the
namespaces are deleted, then the state directory is removed. No address or bridge is ever put
in the host namespace, and every request to 169.254.169.254 is made from a guest namespace
with proxy variables removed.
"""

from __future__ import annotations

import json
import os
import socketserver
import subprocess
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest

from openimds.linux.fabric import ensure_fabric, plug_port
from tests.support.node import (
    CLEAN_ENV,
    UDHCPC_SCRIPT,
    Sandbox,
    sh,
    udhcpc,
    wait_for,
)

__all__ = ["CLEAN_ENV", "UDHCPC_SCRIPT", "Lab", "lab", "now_iso", "sh", "wait_for"]


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class _Echo(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - stdlib API
        body = json.dumps(
            {"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}}
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:  # client_address is "" on unix sockets
        pass


class _UnixServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


class Lab(Sandbox):
    def __init__(self) -> None:
        super().__init__("oit")
        self.fabric = f"oit-fab-{self.tag}"
        self.namespaces.append(self.fabric)  # registered first, so cleanup always removes it
        # A str: the agents' settings take state paths as text.
        self.state = str(self.root)
        self.socket = os.path.join(self.state, "metadata_proxy")
        self.ids: list[str] = []
        self.script = str(self.write_udhcpc_script())
        self._server: _UnixServer | None = None

    def new_id(self) -> str:
        rid = str(uuid.uuid4())
        self.ids.append(rid)
        self.resource_ids.add(rid)
        return rid

    def echo_agent(self) -> str:
        """A unix-socket HTTP server standing in for the metadata agent: echoes headers."""
        if self._server is None:
            self._server = _UnixServer(self.socket, _Echo)
            os.chmod(self.socket, 0o666)
            threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self.socket

    def guest(
        self,
        network_id: str,
        port: dict[str, Any],
        *,
        addresses: tuple[str, ...] = (),
        gateway: str | None = None,
    ) -> str:
        ns = f"oit-g-{uuid.uuid4().hex[:8]}"
        self.namespaces.append(ns)
        plug_port(
            self.fabric,
            network_id,
            port["id"],
            port["mac_address"],
            ns,
            addresses=addresses,
            gateway=gateway,
        )
        return ns

    def dhcp(self, guest: str) -> str:
        """One-shot lease with option 121 requested; returns `ip -4 route` afterwards."""
        return udhcpc(guest, self.script, options=("staticroutes", "msstaticroutes"))

    def curl(self, guest: str, url: str, *, timeout: float = 5,
             extra: tuple[str, ...] = ()) -> tuple[int, str]:
        proc = subprocess.run(
            ["ip", "netns", "exec", guest, "curl", "-s", "--noproxy", "*",
             "-m", str(timeout), *extra, url],
            capture_output=True, text=True, timeout=timeout + 10, env=CLEAN_ENV,
        )
        return proc.returncode, proc.stdout

    def cleanup(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        self.remove_everything()


@pytest.fixture
def lab(needs_root: None) -> Iterator[Lab]:
    the_lab = Lab()
    try:
        ensure_fabric(the_lab.fabric)
        yield the_lab
    finally:
        the_lab.cleanup()

