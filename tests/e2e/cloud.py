"""A real one-node openimds cloud for end-to-end tests: `openimds all-in-one` as a process.

Everything lives in names this module makes unique: the state directory, the fabric namespace
`oit-fab-<hex>`, guest namespaces `oit-g-<hex>`, and `qdhcp-`/`qrouter-` namespaces of the
uuid4 resources the test creates. Teardown stops all-in-one by pid, kills only processes inside
those namespaces (`ip netns pids`), deletes the namespaces and the state directory. The
control-plane and metadata API listen on free loopback ports; metadata traffic to
169.254.169.254 only ever leaves guest namespaces.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from tests.fabric.lab import UDHCPC_SCRIPT, _kill_and_delete, sh, wait_for

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env.update(extra or {})
    return env


class Cloud:
    """One all-in-one node plus helpers to drive it like an operator and a guest would."""

    def __init__(self, *, lease_duration: int = 86400) -> None:
        self.tag = uuid.uuid4().hex[:8]
        self.state = Path(tempfile.mkdtemp(prefix=f"oit-e2e-{self.tag}-", dir="/tmp"))
        os.chmod(self.state, 0o755)  # dnsmasq re-reads its files as an unprivileged user
        self.fabric = f"oit-fab-{self.tag}"
        self.api_port = free_port()
        self.md_port = free_port()
        self.metrics_port = free_port()
        self.extra_conf = self.state / "test.conf"
        self.extra_conf.write_text(
            # Heartbeats carry each agent's synced revision; tests wait on it. [DEFAULT] comes
            # last: tests append their own [DEFAULT] options to this file.
            "[AGENT]\nreport_interval = 2\n"
            "[DEFAULT]\n"
            f"fabric_namespace = {self.fabric}\n"
            f"bind_port = {self.api_port}\n"
            f"auth_url = http://127.0.0.1:{self.api_port}/v2.0\n"
            f"metadata_listen_port = {self.md_port}\n"
            f"nova_metadata_port = {self.md_port}\n"
            f"metrics_listen_port = {self.metrics_port}\n"
            f"dhcp_lease_duration = {lease_duration}\n"
        )
        self.script = self.state / "udhcpc.sh"
        self.script.write_text(UDHCPC_SCRIPT)
        self.script.chmod(0o755)
        self.guests: list[str] = []
        self.resource_ids: set[str] = set()
        self.proc: subprocess.Popen[bytes] | None = None
        self.env: dict[str, str] = {}

    # ---- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        self.log = open(self.state / "all-in-one.log", "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "openimds", "all-in-one", "--state-dir", str(self.state),
             "--config-file", str(self.extra_conf)],
            stdout=self.log, stderr=subprocess.STDOUT, env=_clean_env(), cwd=REPO,
        )
        openrc = self.state / "openrc"
        wait_for(openrc.exists, timeout=30)
        wait_for(lambda: f":{self.api_port}/" in openrc.read_text(), timeout=30)
        # The CLI environment comes from the openrc all-in-one writes, as a newcomer's would.
        self.env = _clean_env(dict(re.findall(r"export (OS_\w+)=(\S+)", openrc.read_text())))
        wait_for(lambda: self._cli_ok("network", "list"), timeout=60, interval=0.3)
        wait_for((self.state / "metadata_proxy").exists, timeout=30)

    def children(self) -> list[int]:
        """Pids of all-in-one's live children."""
        assert self.proc is not None
        out = subprocess.run(["ps", "-o", "pid=,stat=", "--ppid", str(self.proc.pid)],
                             capture_output=True, text=True).stdout
        return [int(p) for p, st in (line.split() for line in out.splitlines()) if "Z" not in st]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()

    def _pids_using_state(self) -> list[int]:
        """Pids whose command line names our unique state dir: our own children, dnsmasq and
        haproxy started for this test (found even if their namespace is already gone)."""
        marker = str(self.state).encode()
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and int(entry.name) != os.getpid():
                try:
                    if marker in (entry / "cmdline").read_bytes():
                        found.append(int(entry.name))
                except OSError:
                    continue
        return found

    def cleanup(self) -> None:
        try:
            self.stop()
        finally:
            for pid in self._pids_using_state():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            names = [*self.guests]
            for rid in self.resource_ids:
                names += [f"qdhcp-{rid}", f"qrouter-{rid}"]
            names.append(self.fabric)
            for ns in names:
                _kill_and_delete(ns)
            shutil.rmtree(self.state, ignore_errors=True)

    def child_pid(self, service: str) -> int | None:
        """Pid of the live all-in-one child running `service` (e.g. "dhcp-agent"), if any."""
        assert self.proc is not None
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            state, ppid = fields[0], int(fields[1])
            if ppid == self.proc.pid and state != "Z" and service.encode() in argv:
                return int(entry.name)
        return None

    # ---- operator --------------------------------------------------------------------------
    def _cli_ok(self, *args: str) -> bool:
        return self.cli_raw(*args).returncode == 0

    def cli_raw(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "openimds", *args],
            capture_output=True, text=True, timeout=60, env=env or self.env, cwd=REPO,
        )

    def cli(self, *args: str, env: dict[str, str] | None = None) -> Any:
        """Run an openimds CLI command with `-f json` and return the parsed output."""
        proc = self.cli_raw(*args, "-f", "json", env=env)
        assert proc.returncode == 0, f"openimds {' '.join(args)} failed: {proc.stderr}"
        value = json.loads(proc.stdout) if proc.stdout.strip() else None
        if isinstance(value, dict) and "id" in value:
            self.resource_ids.add(str(value["id"]))
        return value

    def server_port(self, server_id: str) -> dict[str, Any]:
        ports = self.cli("port", "list", "--device-id", server_id)
        assert len(ports) == 1, ports
        return dict(ports[0])

    def conf_args(self) -> list[str]:
        return ["--config-file", str(self.state / "openimds.conf"),
                "--config-file", str(self.extra_conf)]

    # ---- guest -----------------------------------------------------------------------------
    def boot_guest(self, port_id: str, *, configure_ip: bool = False) -> str:
        """Plug the port into a fresh guest namespace with the real `openimds port-plug`."""
        ns = f"oit-g-{uuid.uuid4().hex[:8]}"
        self.guests.append(ns)
        args = ["port", "plug", port_id, "--netns", ns, *self.conf_args()]
        if configure_ip:
            args.append("--configure-ip")
        proc = self.cli_raw(*args)
        assert proc.returncode == 0, proc.stderr
        return ns

    def dhcp(self, guest: str, *, within: float = 60) -> str:
        """A lease from dnsmasq with option 121 asked for; returns the guest's IPv4 routes.

        Retried until `within` seconds: the DHCP agent may still be starting dnsmasq for a
        network created a moment ago."""
        deadline = time.monotonic() + within
        while True:
            try:
                sh("udhcpc", "-i", "eth0", "-s", str(self.script), "-f", "-q", "-n", "-t", "5",
                   "-T", "1", "-O", "staticroutes", netns=guest, timeout=60)
                return sh("ip", "-4", "route", netns=guest)
            except AssertionError:
                if time.monotonic() > deadline:
                    raise

    def fetch(self, guest: str, path: str, *, host: str = "169.254.169.254",
              timeout: float = 10) -> tuple[int, bytes]:
        """GET http://<host><path> from inside the guest namespace: (status, body)."""
        code = (
            "import sys, urllib.request, urllib.error\n"
            "try:\n"
            f"    r = urllib.request.urlopen('http://{host}' + sys.argv[1], timeout={timeout})\n"
            "    status, body = r.status, r.read()\n"
            "except urllib.error.HTTPError as e:\n"
            "    status, body = e.code, e.read()\n"
            "sys.stdout.write(str(status) + '\\n'); sys.stdout.flush()\n"
            "sys.stdout.buffer.write(body)\n"
        )
        proc = subprocess.run(
            ["ip", "netns", "exec", guest, sys.executable, "-c", code, path],
            capture_output=True, timeout=timeout + 20, env=_clean_env(),
        )
        assert proc.returncode == 0, proc.stderr.decode()
        head, _, body = proc.stdout.partition(b"\n")
        return int(head), body

    def metadata(self, guest: str, *, retries: float = 15) -> dict[str, Any]:
        """meta_data.json as the guest sees it (retried while agents converge)."""
        deadline = time.monotonic() + retries
        while True:
            with contextlib.suppress(AssertionError):
                status, body = self.fetch(guest, "/openstack/latest/meta_data.json", timeout=5)
                if status == 200:
                    return dict(json.loads(body))
            if time.monotonic() > deadline:
                status, body = self.fetch(guest, "/openstack/latest/meta_data.json", timeout=5)
                raise AssertionError(f"metadata not served: {status} {body[:200]!r}")
            time.sleep(0.3)

    def read_opts(self, network_id: str) -> str:
        return (self.state / "dhcp" / network_id / "opts").read_text()
