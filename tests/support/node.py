"""The one way tests and benchmarks build a simulated openimds node on this machine.

Three users sit on top of it: `tests/fabric/lab.py` (a fabric namespace and guests, the
agents' code run in-process), `tests/e2e/cloud.py` (a real `openimds all-in-one` driven like
an operator and a guest would) and `bench/_harness.py` (the same node, measured). What they
share lives here:

* a `Sandbox`: a unique tag, a world-traversable state directory under /tmp (dnsmasq re-reads
  its files as an unprivileged user) and the namespaces the user made or caused, removed by
  `cleanup()`: processes inside those namespaces (only those) are killed by pid, so are the
  processes whose command line names the unique state directory (a daemon whose namespace is
  already gone), then the namespaces are deleted and the directory removed;
* `AllInOneNode`: `openimds all-in-one` as a subprocess with its config file on free loopback
  ports, started and waited for (openrc written, the user's readiness check, the agent's
  socket), stopped by pid, its children found through /proc;
* process and namespace helpers (`sh`, `wait_for`, `kill_and_delete`, `netns_pids`, ...),
  `enter_private_netns_dir` (a private mount namespace with its own /run/netns) and the guest
  side (`UDHCPC_SCRIPT`, `udhcpc`, `guest_get`).

Nothing here puts an address or a bridge into the host namespace, and every request to the
metadata address is made from inside a guest namespace with proxy variables removed.
"""

from __future__ import annotations

import contextlib
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
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

__all__ = [
    "CLEAN_ENV",
    "REPO",
    "UDHCPC_SCRIPT",
    "AllInOneNode",
    "Sandbox",
    "children",
    "clean_env",
    "enter_private_netns_dir",
    "free_port",
    "guest_get",
    "kill_and_delete",
    "kill_marked",
    "netns_inode",
    "netns_pids",
    "processes_by_netns",
    "sh",
    "stop_process",
    "udhcpc",
    "wait_for",
]

REPO = Path(__file__).resolve().parents[2]

# The environment of commands run inside namespaces: PATH only, so neither a proxy setting
# nor anything else of the caller's can change what they do.
CLEAN_ENV = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")}

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


# ---- environment, commands, polling ---------------------------------------------------------


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The caller's environment without any *proxy* variable (no request can be sent to a
    proxy) and without a prometheus multiprocess directory (a child must not write into the
    runner's)."""
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env.update(extra or {})
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def sh(*argv: str, netns: str | None = None, check: bool = True, timeout: float = 30,
       env: dict[str, str] | None = None) -> str:
    """Run a command (inside `netns` when given) and return its stdout; a failure raises
    AssertionError naming the command and its stderr."""
    full = ["ip", "netns", "exec", netns, *argv] if netns else list(argv)
    proc = subprocess.run(full, capture_output=True, text=True, timeout=timeout,
                          env=CLEAN_ENV if env is None else env)
    if check and proc.returncode != 0:
        raise AssertionError(f"{full} exited {proc.returncode}: {proc.stderr}")
    return proc.stdout


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


# ---- namespaces and processes ---------------------------------------------------------------


def netns_inode(name: str) -> int | None:
    try:
        return os.stat(f"/run/netns/{name}").st_ino
    except OSError:
        return None


def processes_by_netns() -> dict[int, list[tuple[int, str]]]:
    """netns inode -> [(pid, comm)] of every live, non-zombie process (one /proc scan)."""
    out: dict[int, list[tuple[int, str]]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            ino = os.stat(f"/proc/{entry.name}/ns/net").st_ino
            stat = Path(f"/proc/{entry.name}/stat").read_text()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        if stat[stat.rindex(")") + 2] == "Z":
            continue
        out.setdefault(ino, []).append((int(entry.name), comm))
    return out


def netns_pids(name: str) -> list[int]:
    """Pids of the processes inside named namespace `name` (what `ip netns pids` prints)."""
    ino = netns_inode(name)
    if ino is None:
        return []
    # A namespace that is the host's (inode equal to ours) is never ours to touch.
    if ino == os.stat("/proc/self/ns/net").st_ino:
        raise RuntimeError(f"{name} is the host namespace")
    return [pid for pid, _ in processes_by_netns().get(ino, [])]


def kill_and_delete(ns: str) -> None:
    """Kill the processes inside `ns` by pid, then delete `ns` (never anything else)."""
    for pid in netns_pids(ns):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    if netns_inode(ns) is not None:
        subprocess.run(["ip", "netns", "delete", ns], capture_output=True)


def kill_marked(marker: str) -> None:
    """SIGKILL every process (but this one) whose command line contains `marker`: a unique
    state directory names the daemons started for it, even once their namespace is gone."""
    mark = marker.encode()
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            with contextlib.suppress(OSError):
                if mark in Path(f"/proc/{entry.name}/cmdline").read_bytes():
                    os.kill(int(entry.name), signal.SIGKILL)


def children(ppid: int, *, include_zombies: bool = False) -> list[int]:
    """Pids of the live children of `ppid` (exited-but-unreaped ones too, if asked)."""
    out = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry.name}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[1]) == ppid and (include_zombies or fields[0] != "Z"):
            out.append(int(entry.name))
    return out


def stop_process(proc: subprocess.Popen[Any], sig: int = signal.SIGTERM,
                 timeout: float = 30) -> None:
    """Send `sig` to a process we started (by its handle), SIGKILL it if it outlives
    `timeout`, and reap it."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


PRIVATE_ENV = "OPENIMDS_BENCH_PRIVATE_NETNS"


def enter_private_netns_dir() -> None:
    """Re-exec this program in a private mount namespace with its own empty /run/netns.

    Why: the DHCP and L3 agents of every all-in-one node treat each `qdhcp-*`/`qrouter-*`
    namespace listed in /run/netns as theirs, and tear down the ones missing from their own
    inventory as orphans (at start and on every 60 s resync). Another node on this machine
    would delete this program's namespaces mid-run, and its node would delete theirs. With a
    private /run/netns each side sees only its own names. Everything the program starts
    (all-in-one, wrk, a namespace client) inherits this mount namespace."""
    if os.environ.get(PRIVATE_ENV) == "1":
        return
    if os.geteuid() != 0:
        raise SystemExit("needs root (network namespaces)")
    os.makedirs("/run/netns", exist_ok=True)
    os.environ[PRIVATE_ENV] = "1"
    script = "mount -t tmpfs -o mode=0755 bench-netns /run/netns && exec \"$0\" \"$@\""
    os.execvp("unshare", ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c",
                          script, sys.executable, *sys.argv])


# ---- the guest side -------------------------------------------------------------------------


def udhcpc(guest: str, script: Path | str, *, options: Iterable[str] = ("staticroutes",),
           within: float = 0, timeout: float = 30) -> str:
    """A lease on the guest's eth0 with the given DHCP options asked for (busybox asks for
    option 121 only with `-O staticroutes`); returns the guest's IPv4 routes afterwards.
    Retried until `within` seconds have passed (0: one try)."""
    asks = [arg for opt in options for arg in ("-O", opt)]
    deadline = time.monotonic() + within
    while True:
        try:
            sh("udhcpc", "-i", "eth0", "-s", str(script), "-f", "-q", "-n", "-t", "5", "-T",
               "1", *asks, netns=guest, timeout=timeout)
            return sh("ip", "-4", "route", netns=guest)
        except AssertionError:
            if time.monotonic() > deadline:
                raise


def _fetch_code(host: str, timeout: float) -> str:
    return (
        "import sys, urllib.request, urllib.error\n"
        "try:\n"
        f"    r = urllib.request.urlopen('http://{host}' + sys.argv[1], timeout={timeout})\n"
        "    status, body = r.status, r.read()\n"
        "except urllib.error.HTTPError as e:\n"
        "    status, body = e.code, e.read()\n"
        "sys.stdout.write(str(status) + '\\n'); sys.stdout.flush()\n"
        "sys.stdout.buffer.write(body)\n"
    )


def guest_get(guest: str, path: str, *, host: str = "169.254.169.254",
              timeout: float = 10) -> tuple[int, bytes]:
    """GET http://<host><path> from inside the guest namespace: (status, body)."""
    proc = subprocess.run(
        ["ip", "netns", "exec", guest, sys.executable, "-c", _fetch_code(host, timeout), path],
        capture_output=True, timeout=timeout + 20, env=clean_env(),
    )
    assert proc.returncode == 0, proc.stderr.decode()
    head, _, body = proc.stdout.partition(b"\n")
    return int(head), body


# ---- the sandbox and the node ---------------------------------------------------------------


class Sandbox:
    """A unique tag, a state directory and the namespaces to remove (module docstring).

    `namespaces` are removed in reverse order of registration; each id in `resource_ids`
    stands for its `qdhcp-<id>` and `qrouter-<id>` (the agents create them)."""

    def __init__(self, prefix: str) -> None:
        self.tag = uuid.uuid4().hex[:8]
        self.root = Path(tempfile.mkdtemp(prefix=f"{prefix}-{self.tag}-", dir="/tmp"))
        os.chmod(self.root, 0o755)  # dnsmasq re-reads its files as an unprivileged user
        self.namespaces: list[str] = []
        self.resource_ids: set[str] = set()
        self.extra_pids: list[int] = []

    def write_udhcpc_script(self) -> Path:
        script = self.root / "udhcpc.sh"
        script.write_text(UDHCPC_SCRIPT)
        script.chmod(0o755)
        return script

    def namespace_names(self) -> list[str]:
        """What `remove_everything` deletes, in order: the agents' namespaces of our ids, then
        ours from the last made to the first (a fabric registered first goes last)."""
        names = [f"{kind}-{rid}" for rid in sorted(self.resource_ids)
                 for kind in ("qdhcp", "qrouter")]
        return names + list(reversed(self.namespaces))

    def remove_everything(self) -> None:
        """Kill what is ours by pid, delete our namespaces and the state directory."""
        for pid in self.extra_pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        kill_marked(str(self.root))
        for ns in self.namespace_names():
            with contextlib.suppress(Exception):  # one failure must not leave the others
                kill_and_delete(ns)
        shutil.rmtree(self.root, ignore_errors=True)


def node_conf(*, fabric: str, api_port: int, md_port: int, metrics_port: int,
              lease_duration: int) -> str:
    """The [DEFAULT] options that make an all-in-one node unique on this machine."""
    return (
        "[DEFAULT]\n"
        f"fabric_namespace = {fabric}\n"
        f"bind_port = {api_port}\n"
        f"auth_url = http://127.0.0.1:{api_port}/v2.0\n"
        f"metadata_listen_port = {md_port}\n"
        f"nova_metadata_port = {md_port}\n"
        f"metrics_listen_port = {metrics_port}\n"
        f"dhcp_lease_duration = {lease_duration}\n"
    )


class AllInOneNode(Sandbox):
    """One `openimds all-in-one` process with its own state directory, fabric namespace
    `<ns_prefix>-fab-<tag>` and loopback ports. `conf_head` comes before the node's
    [DEFAULT] section in its extra config file, `conf_tail` after it. A subclass says when the
    node is ready (`ready()`); `start()` waits for that and for the agent's socket."""

    def __init__(self, *, prefix: str, ns_prefix: str, conf_name: str,
                 lease_duration: int = 86400, conf_head: str = "", conf_tail: str = "") -> None:
        super().__init__(prefix)
        self.fabric = f"{ns_prefix}-fab-{self.tag}"
        self.namespaces.append(self.fabric)  # registered first, so it is deleted last
        self.api_port = free_port()
        self.md_port = free_port()
        self.metrics_port = free_port()
        self.conf = self.root / conf_name
        self.conf.write_text(conf_head + node_conf(
            fabric=self.fabric, api_port=self.api_port, md_port=self.md_port,
            metrics_port=self.metrics_port, lease_duration=lease_duration) + conf_tail)
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.root / "all-in-one.log"
        self._log: Any = None
        self.openrc: dict[str, str] = {}

    @property
    def state(self) -> Path:
        return self.root

    def ready(self) -> bool:
        return True

    def start(self, timeout: float = 90) -> None:
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "openimds", "all-in-one", "--state-dir", str(self.root),
             "--config-file", str(self.conf)],
            stdout=self._log, stderr=subprocess.STDOUT, env=clean_env(), cwd=REPO,
        )
        openrc = self.root / "openrc"
        wait_for(lambda: self._alive() and openrc.exists()
                 and f":{self.api_port}/" in openrc.read_text(), timeout=60)
        # The CLI environment comes from the openrc all-in-one writes, as a newcomer's would.
        self.openrc = dict(re.findall(r"export (OS_\w+)=(\S+)", openrc.read_text()))
        try:
            wait_for(lambda: self._alive() and self.ready(), timeout=timeout, interval=0.3)
            wait_for(lambda: self._alive() and (self.root / "metadata_proxy").exists(),
                     timeout=60)
        except AssertionError as exc:
            # Not ready in time: say why from the node's own log, which goes with its tmp dir.
            if self._log is not None:
                self._log.flush()
            tail = self.log_path.read_text(errors="replace")[-4000:]
            raise AssertionError(f"{exc}; all-in-one log tail:\n{tail}") from None

    def _alive(self) -> bool:
        """True while all-in-one runs; its exit ends a wait at once, with its log's tail."""
        if self.proc is not None and self.proc.poll() is not None:
            if self._log is not None:
                self._log.flush()
            tail = self.log_path.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"all-in-one exited:\n{tail}")
        return True

    def children(self) -> list[int]:
        """Pids of all-in-one's live children."""
        assert self.proc is not None
        return children(self.proc.pid)

    def child_pid(self, service: str) -> int | None:
        """Pid of the live all-in-one child running `service` (e.g. "dhcp-agent"), if any."""
        if self.proc is None:
            return None
        for pid in children(self.proc.pid):
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if service.encode() in argv:
                return pid
        return None

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, signal.SIGINT, timeout=30)
        if self._log is not None and not self._log.closed:
            self._log.close()

    def cleanup(self) -> None:
        try:
            self.stop()
        finally:
            self.remove_everything()
