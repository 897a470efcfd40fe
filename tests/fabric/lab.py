"""A throw-away one-host fabric for tests: unique ids, a fabric namespace, guests, cleanup.

Everything a test creates lives in namespaces it names: the fabric namespace `oit-fab-<hex>`,
`qdhcp-<id>`/`qrouter-<id>` for the test's own uuid4 ids, and guests `oit-g-<hex>`. Cleanup
always runs: processes inside those namespaces (only those: `ip netns pids`) are killed by pid,
then the namespaces are deleted, then the state directory is removed. No address or bridge is
ever put in the host namespace, and every request to 169.254.169.254 is made from a guest
namespace with proxy variables removed.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socketserver
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest

from openimds.linux.fabric import ensure_fabric, plug_port

UDHCPC_SCRIPT = """#!/bin/sh
# Minimal udhcpc hook: only `ip addr`/`ip route` on the interface, never /etc (MACHINE-NOTES).
case "$1" in
  deconfig) ip addr flush dev "$interface" ;;
  bound|renew)
    ip addr flush dev "$interface"
    ip addr add "$ip/$mask" dev "$interface"
    ip route flush dev "$interface" proto static 2>/dev/null
    if [ -n "$staticroutes" ]; then
      set -- $staticroutes
      while [ $# -ge 2 ]; do ip route replace "$1" via "$2" dev "$interface" proto static; shift 2; done
    elif [ -n "$router" ]; then
      ip route replace default via "${router%% *}" dev "$interface" proto static
    fi
    ;;
esac
exit 0
"""

CLEAN_ENV = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")}


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def sh(*argv: str, netns: str | None = None, check: bool = True, timeout: float = 30) -> str:
    full = ["ip", "netns", "exec", netns, *argv] if netns else list(argv)
    proc = subprocess.run(full, capture_output=True, text=True, timeout=timeout, env=CLEAN_ENV)
    if check and proc.returncode != 0:
        raise AssertionError(f"{full} exited {proc.returncode}: {proc.stderr}")
    return proc.stdout


def _kill_and_delete(ns: str) -> None:
    pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout
    for pid in pids.split():
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid), signal.SIGKILL)
    subprocess.run(["ip", "netns", "delete", ns], capture_output=True)


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


class Lab:
    def __init__(self) -> None:
        self.tag = uuid.uuid4().hex[:8]
        self.fabric = f"oit-fab-{self.tag}"
        # Under /tmp and world-traversable: dnsmasq re-reads its files as user dnsmasq.
        self.state = tempfile.mkdtemp(prefix=f"oit-{self.tag}-", dir="/tmp")
        os.chmod(self.state, 0o755)
        self.socket = os.path.join(self.state, "metadata_proxy")
        self.namespaces: list[str] = []
        self.ids: list[str] = []
        self.script = os.path.join(self.state, "udhcpc.sh")
        with open(self.script, "w") as fh:
            fh.write(UDHCPC_SCRIPT)
        os.chmod(self.script, 0o755)
        self._server: _UnixServer | None = None
        self.namespaces.append(self.fabric)  # registered first, so cleanup always removes it

    def new_id(self) -> str:
        rid = str(uuid.uuid4())
        self.ids.append(rid)
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
        sh(
            "udhcpc", "-i", "eth0", "-s", self.script, "-f", "-q", "-n", "-t", "5", "-T", "1",
            "-O", "staticroutes", "-O", "msstaticroutes", netns=guest, timeout=30,
        )
        return sh("ip", "-4", "route", netns=guest)

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
        names = list(self.namespaces)
        for rid in self.ids:
            names += [f"qdhcp-{rid}", f"qrouter-{rid}"]
        for ns in reversed(names):
            _kill_and_delete(ns)
        shutil.rmtree(self.state, ignore_errors=True)


@pytest.fixture
def lab(needs_root: None) -> Iterator[Lab]:
    the_lab = Lab()
    try:
        ensure_fabric(the_lab.fabric)
        yield the_lab
    finally:
        the_lab.cleanup()


def wait_for(check: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05) -> Any:
    """Poll until `check()` is truthy; return its value or fail with the last one."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s (last: {value!r})")
        time.sleep(interval)
