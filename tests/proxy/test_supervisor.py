"""Real haproxy in real namespaces, driven by HaproxySupervisor.

Topology per test (all inside namespaces the test creates; nothing in the host namespace):

    guest ns  oig0 10.0.0.5/24, 169.254.169.254/32 via 10.0.0.2
       │ veth (created from inside the proxy ns, peer moved straight into the guest ns)
    proxy ns  oip0 10.0.0.2/24 + 169.254.169.254/32, haproxy
       │ unix socket (filesystem path in a private tmp dir)
    fake agent: a stdlib HTTP server in this process that echoes the request headers as JSON
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socketserver
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from openimds.proxy.haproxy import (
    ProxySpec,
    RateLimit,
    Timeouts,
    config_path,
    proxy_spec_for_network,
    proxy_spec_for_router,
)
from openimds.proxy.supervisor import (
    HaproxySupervisor,
    Outcome,
    ProxyStartFailed,
    _runs_config,
    listening_sockets,
    parse_proc_net_tcp,
)

GUEST_IP = "10.0.0.5"
PROXY_IP = "10.0.0.2"
MD_IP = "169.254.169.254"

pytestmark = pytest.mark.root

# ---------------------------------------------------------------------------------------
# pure: /proc/net/tcp parsing (captured text)

PROC_TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: FEA9FEA9:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1
   1: 00000000:25E1 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1
   2: 0200000A:0050 0500000A:A1B2 01 00000000:00000000 00:00000000 00000000     0        0 3 1
"""
PROC_TCP6 = """\
  sl  local_address                         remote_address                        st
   0: 000080FE0000000000000000FEA9FEA9:0050 00000000000000000000000000000000:0000 0A
   1: 00000000000000000000000000000000:25E1 00000000000000000000000000000000:0000 0A
"""


def test_parse_proc_net_tcp() -> None:
    assert parse_proc_net_tcp(PROC_TCP, ipv6=False) == {(MD_IP, 80), ("0.0.0.0", 9697)}
    # fe80::a9fe:a9fe is printed as 4 little-endian words.
    assert parse_proc_net_tcp(PROC_TCP6, ipv6=True) == {("fe80::a9fe:a9fe", 80), ("::", 9697)}


# ---------------------------------------------------------------------------------------
# pure: is this argv (as procfs.parse_cmdline gives it) a haproxy running our config?


@pytest.mark.parametrize("argv, conf, ours", [
    (("haproxy", "-f", "/c.conf"), "/c.conf", True),
    (("/usr/sbin/haproxy", "-f", "/c.conf", "-x", "/s", "-sf", "7"), "/c.conf", True),
    (("haproxy", "-f", "/other.conf"), "/c.conf", False),
    (("haproxy", "/c.conf"), "/c.conf", False),
    (("python", "-f", "/c.conf"), "/c.conf", False),
    ((), "/c.conf", False),
])
def test_haproxy_argv_check(argv: tuple[str, ...], conf: str, ours: bool) -> None:
    assert _runs_config(argv, conf) is ours


# ---------------------------------------------------------------------------------------
# fixtures


class _EchoHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 (stdlib naming)
        body = json.dumps({"path": self.path, "headers": list(self.headers.items())}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        # The default one indexes client_address, which is '' on a unix socket.
        pass

    def address_string(self) -> str:
        return "unix"


class _EchoServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


@dataclass
class Env:
    proxy_ns: str
    guest_ns: str
    state: str
    agent_socket: str
    sup: HaproxySupervisor

    def net_spec(self, rid: str | None = None, **kw: object) -> ProxySpec:
        return proxy_spec_for_network(
            rid or str(uuid.uuid4()),
            state_path=self.state,
            socket_path=self.agent_socket,
            log_target=None,
            **kw,  # type: ignore[arg-type]
        )

    def rtr_spec(self, rid: str | None = None, **kw: object) -> ProxySpec:
        return proxy_spec_for_router(
            rid or str(uuid.uuid4()),
            state_path=self.state,
            socket_path=self.agent_socket,
            log_target=None,
            **kw,  # type: ignore[arg-type]
        )


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@pytest.fixture
def env(make_netns: Callable[[str], str]) -> Iterator[Env]:
    if shutil.which("haproxy") is None:
        pytest.fail("haproxy is not installed (apt-get install -y haproxy)")
    proxy_ns, guest_ns = make_netns("pxy"), make_netns("gst")
    _ip("-n", proxy_ns, "link", "add", "oip0", "type", "veth", "peer", "name", "oig0",
        "netns", guest_ns)  # fmt: skip
    _ip("-n", proxy_ns, "addr", "add", f"{PROXY_IP}/24", "dev", "oip0")
    _ip("-n", proxy_ns, "addr", "add", f"{MD_IP}/32", "dev", "oip0")
    _ip("-n", proxy_ns, "link", "set", "oip0", "up")
    _ip("-n", guest_ns, "addr", "add", f"{GUEST_IP}/24", "dev", "oig0")
    _ip("-n", guest_ns, "link", "set", "oig0", "up")
    _ip("-n", guest_ns, "route", "add", f"{MD_IP}/32", "via", PROXY_IP)

    # Short private dir: admin and agent socket paths must fit in sockaddr_un.
    root = tempfile.mkdtemp(prefix="oip-", dir="/tmp")
    os.chmod(root, 0o755)  # haproxy may run as nobody and must reach the agent socket
    agent_socket = os.path.join(root, "metadata_proxy")
    server = _EchoServer(agent_socket, _EchoHandler)
    os.chmod(agent_socket, 0o666)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    sup = HaproxySupervisor(os.path.join(root, "state"))
    try:
        yield Env(proxy_ns, guest_ns, sup.state_path, agent_socket, sup)
    finally:
        for rid in sup.owned_ids():
            sup.stop(rid)
        server.shutdown()
        server.server_close()
        shutil.rmtree(root, ignore_errors=True)


# ---------------------------------------------------------------------------------------
# a client inside the guest namespace

_CLIENT = r"""
import http.client, json, sys
host, port, path, headers = json.loads(sys.argv[1])
out = []
for _ in range(int(sys.argv[2])):
    try:
        c = http.client.HTTPConnection(host, port, timeout=5)
        c.putrequest("GET", path, skip_accept_encoding=True)
        for k, v in headers:
            c.putheader(k, v)
        c.endheaders()
        r = c.getresponse()
        body = r.read().decode()
        out.append({"status": r.status, "body": json.loads(body) if r.status == 200 else body})
        c.close()
    except OSError as exc:
        out.append({"status": None, "error": repr(exc)})
print(json.dumps(out))
"""

_LOOP_CLIENT = r"""
import http.client, json, os, sys
host, port, stopfile = sys.argv[1], int(sys.argv[2]), sys.argv[3]
ok, errors = 0, []
while not os.path.exists(stopfile):
    try:
        c = http.client.HTTPConnection(host, port, timeout=5)
        c.request("GET", "/latest/meta-data/")
        r = c.getresponse(); r.read(); c.close()
        if r.status == 200:
            ok += 1
        else:
            errors.append(r.status)
    except OSError as exc:
        errors.append(repr(exc))
print(json.dumps({"ok": ok, "errors": errors}))
"""


def _listen_inodes(pid: int | None, port: int) -> set[str]:
    rows = Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]
    return {f[9] for f in map(str.split, rows) if f[3] == "0A" and f[1].endswith(f":{port:04X}")}


def _clean_env() -> dict[str, str]:
    # No proxy variable may redirect a request meant for the namespace.
    return {
        k: v for k, v in os.environ.items() if k.lower() not in ("http_proxy", "https_proxy",
                                                                  "all_proxy", "no_proxy")
    }  # fmt: skip


def guest_get(
    ns: str, host: str, port: int, path: str = "/", headers: list[tuple[str, str]] | None = None,
    count: int = 1,
) -> list[dict]:  # fmt: skip
    arg = json.dumps([host, port, path, headers or []])
    proc = subprocess.run(
        ["ip", "netns", "exec", ns, sys.executable, "-c", _CLIENT, arg, str(count)],
        capture_output=True, text=True, timeout=60, env=_clean_env(), check=True,
    )  # fmt: skip
    return json.loads(proc.stdout)


def header_values(resp: dict, name: str) -> list[str]:
    # haproxy >= 2.1 lower-cases header names: compare case-insensitively.
    return [v for k, v in resp["body"]["headers"] if k.lower() == name.lower()]


SPOOFED = [
    ("X-Forwarded-For", "6.6.6.6"),
    ("x-forwarded-for", "7.7.7.7"),
    ("X-Instance-ID", "evil-instance"),
    ("X-Instance-ID-Signature", "deadbeef"),
    ("X-Tenant-ID", "evil-project"),
    ("X-Neutron-Network-ID", "evil-network"),
    ("X-NEUTRON-ROUTER-ID", "evil-router"),
    ("X-OVN-Network-ID", "evil-ovn"),
    ("X-Metadata-Provider", "evil-provider"),
    ("X-Metadata-Provider-Signature", "evil-sig"),
]


def assert_no_spoof(resp: dict) -> None:
    values = {v for _, v in resp["body"]["headers"]}
    for _, spoof in SPOOFED:
        assert spoof not in values, resp
    names = {k.lower() for k, _ in resp["body"]["headers"]}
    for gone in ("x-instance-id", "x-instance-id-signature", "x-tenant-id", "x-ovn-network-id",
                 "x-metadata-provider", "x-metadata-provider-signature"):  # fmt: skip
        assert gone not in names, resp


# ---------------------------------------------------------------------------------------
# tests


def test_network_proxy_sets_network_id_and_strips_guest_identity(env: Env) -> None:
    spec = env.net_spec(user="nobody", group="nogroup")
    assert env.sup.ensure(spec, env.proxy_ns) is Outcome.STARTED
    assert env.sup.is_listening(spec)

    [resp] = guest_get(env.guest_ns, MD_IP, 80, "/latest/meta-data/instance-id", SPOOFED)
    assert resp["status"] == 200, resp
    assert resp["body"]["path"] == "/latest/meta-data/instance-id"
    assert header_values(resp, "X-Neutron-Network-ID") == [spec.resource_id]
    assert header_values(resp, "X-Neutron-Router-ID") == []
    # Exactly one X-Forwarded-For, and it is the guest's real address.
    assert header_values(resp, "X-Forwarded-For") == [GUEST_IP]
    assert_no_spoof(resp)

    # haproxy really dropped privileges to the configured user.
    pid = env.sup.pid(spec.resource_id)
    assert pid is not None
    uid_line = next(ln for ln in Path(f"/proc/{pid}/status").read_text().splitlines()
                    if ln.startswith("Uid:"))  # fmt: skip
    assert uid_line.split()[1] == str(__import__("pwd").getpwnam("nobody").pw_uid)


def test_router_proxy_sets_router_id(env: Env) -> None:
    spec = env.rtr_spec()
    assert env.sup.ensure(spec, env.proxy_ns) is Outcome.STARTED
    assert ("0.0.0.0", 9697) in listening_sockets(env.sup.pid(spec.resource_id) or 0)
    [resp] = guest_get(env.guest_ns, PROXY_IP, 9697, "/openstack/latest/meta_data.json", SPOOFED)
    assert resp["status"] == 200, resp
    assert header_values(resp, "X-Neutron-Router-ID") == [spec.resource_id]
    assert header_values(resp, "X-Neutron-Network-ID") == []
    assert header_values(resp, "X-Forwarded-For") == [GUEST_IP]
    assert_no_spoof(resp)


def test_killed_proxy_is_restarted(env: Env) -> None:
    spec = env.net_spec()
    env.sup.ensure(spec, env.proxy_ns)
    pid = env.sup.pid(spec.resource_id)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)  # our own haproxy, by pid
    deadline = time.monotonic() + 5
    while env.sup.pid(spec.resource_id) is not None:
        assert time.monotonic() < deadline
        time.sleep(0.02)

    assert env.sup.ensure(spec, env.proxy_ns) is Outcome.RESTARTED
    new_pid = env.sup.pid(spec.resource_id)
    assert new_pid is not None and new_pid != pid
    [resp] = guest_get(env.guest_ns, MD_IP, 80)
    assert resp["status"] == 200


def test_reload_on_config_change_never_drops_the_listener(env: Env) -> None:
    spec = env.net_spec(user="nobody", group="nogroup")
    env.sup.ensure(spec, env.proxy_ns)
    assert env.sup.ensure(spec, env.proxy_ns) is Outcome.UNCHANGED
    first_pid = env.sup.pid(spec.resource_id)
    first_inodes = _listen_inodes(first_pid, 80)
    assert len(first_inodes) == 1

    stopfile = os.path.join(env.state, "stop-client")
    client = subprocess.Popen(
        ["ip", "netns", "exec", env.guest_ns, sys.executable, "-c", _LOOP_CLIENT, MD_IP, "80",
         stopfile],
        stdout=subprocess.PIPE, text=True, env=_clean_env(),
    )  # fmt: skip
    try:
        time.sleep(0.3)
        pids = [first_pid]
        for i in range(5):
            spec = replace(spec, timeouts=Timeouts(server=40 + i))
            assert env.sup.ensure(spec, env.proxy_ns) is Outcome.RELOADED
            pids.append(env.sup.pid(spec.resource_id))
            time.sleep(0.15)
        Path(stopfile).touch()
        out, _ = client.communicate(timeout=30)
    finally:
        if client.poll() is None:
            client.kill()  # our own client, by handle
            client.wait()
    result = json.loads(out)
    assert result["errors"] == [], result
    assert result["ok"] > 20, result
    assert len(set(pids)) == 6  # every reload is a new process ...
    # ... that took over the very same listening socket (`-x`): it was never closed.
    assert _listen_inodes(pids[-1], 80) == first_inodes
    assert Path(config_path(env.state, spec.resource_id)).read_text().count("timeout server") == 1
    assert (
        "timeout server          44s" in Path(config_path(env.state, spec.resource_id)).read_text()
    )
    # ... and the old ones drain and exit.
    deadline = time.monotonic() + 10
    while any(p is not None and Path(f"/proc/{p}/cmdline").exists()
              and Path(f"/proc/{p}/cmdline").read_bytes() for p in pids[:-1]):  # fmt: skip
        assert time.monotonic() < deadline, "old haproxy processes did not exit"
        time.sleep(0.05)


def test_new_supervisor_adopts_running_proxy(env: Env) -> None:
    spec = env.rtr_spec()
    assert env.sup.ensure(spec, env.proxy_ns) is Outcome.STARTED
    pid = env.sup.pid(spec.resource_id)

    restarted_agent = HaproxySupervisor(env.state)
    assert restarted_agent.ensure(spec, env.proxy_ns) is Outcome.ADOPTED
    assert restarted_agent.pid(spec.resource_id) == pid
    assert restarted_agent.ensure(spec, env.proxy_ns) is Outcome.UNCHANGED
    assert restarted_agent.owned_ids() == [spec.resource_id]
    assert restarted_agent.owned_ids("router") == [spec.resource_id]
    assert restarted_agent.owned_ids("network") == []


def test_stop_removes_process_and_files(env: Env) -> None:
    spec = env.net_spec()
    env.sup.ensure(spec, env.proxy_ns)
    pid = env.sup.pid(spec.resource_id)
    assert pid is not None
    assert env.sup.stop(spec.resource_id) is True

    cmdline = Path(f"/proc/{pid}/cmdline")
    assert not cmdline.exists() or cmdline.read_bytes() == b""  # gone, or an unreaped zombie
    assert not Path(config_path(env.state, spec.resource_id)).exists()
    assert not Path(spec.pidfile).exists()
    assert spec.stats_socket and not Path(spec.stats_socket).exists()
    assert env.sup.owned_ids() == []
    [resp] = guest_get(env.guest_ns, MD_IP, 80)
    assert resp["status"] is None and "Refused" in resp["error"]
    assert env.sup.stop(spec.resource_id) is False


def test_recycled_pid_is_never_adopted_or_killed(env: Env) -> None:
    spec = env.net_spec()
    # A process that is not our haproxy holds the pid written in the pid file.
    bystander = subprocess.Popen(["sleep", "60"])
    try:
        os.makedirs(os.path.dirname(spec.pidfile), exist_ok=True)
        Path(spec.pidfile).write_text(f"{bystander.pid}\n")
        assert env.sup.ensure(spec, env.proxy_ns) is Outcome.RESTARTED
        assert env.sup.pid(spec.resource_id) != bystander.pid
        Path(spec.pidfile).write_text(f"{bystander.pid}\n")
        env.sup.stop(spec.resource_id)
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()


def test_rejected_config_keeps_the_running_proxy(env: Env) -> None:
    spec = env.net_spec()
    env.sup.ensure(spec, env.proxy_ns)
    pid = env.sup.pid(spec.resource_id)
    before = Path(config_path(env.state, spec.resource_id)).read_text()
    with pytest.raises(ProxyStartFailed, match="rejected"):
        env.sup.ensure(replace(spec, user="no-such-user-oit"), env.proxy_ns)
    assert env.sup.pid(spec.resource_id) == pid
    assert Path(config_path(env.state, spec.resource_id)).read_text() == before
    [resp] = guest_get(env.guest_ns, MD_IP, 80)
    assert resp["status"] == 200


def test_proxy_in_a_recreated_namespace_is_restarted(env: Env, make_netns) -> None:  # type: ignore[no-untyped-def]
    """A haproxy left in a namespace that no longer carries the name serves nobody."""
    spec = env.rtr_spec()
    env.sup.ensure(spec, env.proxy_ns)
    other = make_netns("oth")
    assert env.sup.ensure(spec, other) is Outcome.RESTARTED
    pid = env.sup.pid(spec.resource_id)
    assert pid is not None
    assert os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat(f"/run/netns/{other}").st_ino
    # The one in the first namespace was stopped, not left serving next to the new one.
    [resp] = guest_get(env.guest_ns, PROXY_IP, 9697)
    assert resp["status"] is None and "Refused" in resp["error"]


def test_rate_limit_answers_429_over_the_limit(env: Env) -> None:
    spec = env.net_spec(rate_limit=RateLimit(base_window=30, base_limit=3, burst_window=30,
                                             burst_limit=100))  # fmt: skip
    env.sup.ensure(spec, env.proxy_ns)
    statuses = [r["status"] for r in guest_get(env.guest_ns, MD_IP, 80, count=5)]
    assert statuses == [200, 200, 200, 429, 429]
