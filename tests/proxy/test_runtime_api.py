"""RuntimeApi against a real haproxy on loopback: map reads and edits, refusals, absence."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from openimds.proxy.runtime_api import (
    MapEdit,
    RuntimeApi,
    RuntimeApiError,
    RuntimeApiUnavailable,
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Haproxy:
    api: RuntimeApi
    map_file: str


@pytest.fixture
def haproxy() -> Iterator[Haproxy]:
    if shutil.which("haproxy") is None:
        pytest.fail("haproxy is not installed (apt-get install -y haproxy)")
    root = tempfile.mkdtemp(prefix="ora-", dir="/tmp")
    sock, map_file, cfg = (os.path.join(root, n) for n in ("admin.sock", "ids.map", "h.cfg"))
    with open(map_file, "w") as fh:
        fh.write("10.0.0.5 vm-a|proj|sig\n")
    with open(cfg, "w") as fh:
        fh.write(f"""global
    stats socket {sock} mode 600 level admin
defaults
    mode http
    timeout client 5s
    timeout server 5s
    timeout connect 5s
frontend f
    bind 127.0.0.1:{_free_port()}
    http-request set-var(txn.guest) src,map_ip({map_file})
""")
    proc = subprocess.Popen(["haproxy", "-db", "-f", cfg], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    api = RuntimeApi(sock)
    try:
        async def ready() -> None:
            while True:
                try:
                    await api.command("show info")
                    return
                except RuntimeApiUnavailable:
                    if proc.poll() is not None:
                        raise
                    await asyncio.sleep(0.02)

        asyncio.run(asyncio.wait_for(ready(), 10))
        yield Haproxy(api, map_file)
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(root, ignore_errors=True)


def test_show_and_edit_map(haproxy: Haproxy) -> None:
    api, f = haproxy.api, haproxy.map_file
    assert asyncio.run(api.show_map(f)) == [("10.0.0.5", "vm-a|proj|sig")]
    edits = [MapEdit("set", "10.0.0.5", "vm-b|proj|sig2"),
             MapEdit("add", "fe80::f816:3eff:fe00:a", "vm-c|proj|sig3")]
    # Many edits travel in several command lines.
    edits += [MapEdit("add", f"10.1.{i // 250}.{i % 250}", f"vm-{i}|proj|{'f' * 64}")
              for i in range(300)]
    asyncio.run(api.edit_map(f, edits))
    got = dict(asyncio.run(api.show_map(f)))
    assert got["10.0.0.5"] == "vm-b|proj|sig2"
    assert got["fe80::f816:3eff:fe00:a"] == "vm-c|proj|sig3"
    assert len(got) == 302
    asyncio.run(api.edit_map(f, [MapEdit("del", k) for k in got if k.startswith("10.1.")]))
    assert dict(asyncio.run(api.show_map(f))) == {"10.0.0.5": "vm-b|proj|sig2",
                                                  "fe80::f816:3eff:fe00:a": "vm-c|proj|sig3"}


def test_refusals_carry_haproxys_answer(haproxy: Haproxy) -> None:
    with pytest.raises(RuntimeApiError, match="(?i)unknown map"):
        asyncio.run(haproxy.api.show_map("/nonexistent.map"))
    with pytest.raises(RuntimeApiError, match="(?i)not found"):
        asyncio.run(haproxy.api.edit_map(haproxy.map_file, [MapEdit("set", "10.9.9.9", "x")]))


def test_absent_socket_is_unavailable(tmp_path: object) -> None:
    with pytest.raises(RuntimeApiUnavailable):
        asyncio.run(RuntimeApi("/nonexistent/admin.sock").show_map("/x.map"))
