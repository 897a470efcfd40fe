"""A multi-host openimds lab on one machine, for end-to-end tests and benchmarks.

```
 underlay namespace oit-ul-<tag>: bridge `ul` ──┬── controller oit-ctl-<tag> 192.0.2.1
                                               ├── host oit-h<i>-<tag>   192.0.2.<10+i> (ul0)
                                               └── ...
 and bridge `ph`: every host's `ph0` (physnet1, no address: flat and VLAN segments)
```
* The controller namespace runs `openimds control-api` and `openimds metadata-api` on
  192.0.2.1 (one SQLite file; only the control plane writes).
* Each simulated host is a network namespace (its underlay device `ul0` carries `local_ip`)
  plus a private mount namespace held by a keeper process, with its own tmpfs on /run/netns:
  two hosts may both hold `qdhcp-<same network>`. Agents (and `port plug`, udhcpc, ...) run
  inside via `nsenter --target <keeper> --mount --net`, each with `--config-file` giving its
  `host` and `local_ip`. Stopping agents leaves the host's namespaces (the keeper holds them),
  so a restart can be checked for convergence.
* Cleanup (always): agents are stopped by pid, processes inside the hosts' private namespaces
  are killed by pid (`ip netns pids` inside the host), the keepers stop, then the global
  namespaces are deleted. Nothing touches the machine's own interfaces; metadata requests
  only ever leave guest namespaces.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PYTHON = sys.executable
ADMIN_PW = "lab-admin-pw"
SECRET = "lab-shared-secret"
CONTROLLER_IP = "192.0.2.1"
REPO = Path(__file__).resolve().parents[2]

UDHCPC_SCRIPT = """#!/bin/sh
# Minimal udhcpc hook: only `ip addr`/`ip route` on the interface, never /etc.
case "$1" in
  deconfig) ip addr flush dev "$interface" ;;
  bound|renew)
    ip addr flush dev "$interface"
    ip addr add "$ip/$mask" dev "$interface"
    if [ -n "$staticroutes" ]; then
      set -- $staticroutes
      while [ $# -ge 2 ]; do ip route replace "$1" via "$2" dev "$interface"; shift 2; done
    elif [ -n "$router" ]; then
      ip route replace default via "${router%% *}" dev "$interface"
    fi
    ;;
esac
exit 0
"""


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if "proxy" not in k.lower() and not k.startswith("OS_")}
    env["PYTHONPATH"] = str(REPO)
    env.update(extra or {})
    return env


def sh(*argv: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} failed: {proc.stderr.strip()}")
    return proc


def wait_for(check: Callable[[], Any], timeout: float = 30.0, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s (last: {value!r})")
        time.sleep(interval)


@dataclass
class SimHost:
    name: str
    netns: str
    local_ip: str
    state: Path
    conf: Path
    services: tuple[str, ...]
    keeper: subprocess.Popen[str] | None = None
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    logs: dict[str, Any] = field(default_factory=dict)

    def argv(self, *argv: str) -> list[str]:
        assert self.keeper is not None
        return ["nsenter", "--target", str(self.keeper.pid), "--mount", "--net", "--", *argv]

    def run(self, *argv: str, check: bool = True,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run a command inside this host (its network and mount namespaces)."""
        proc = subprocess.run(self.argv(*argv), capture_output=True, text=True,
                              timeout=timeout, env=_env())
        if check and proc.returncode != 0:
            raise AssertionError(f"{self.name}: {' '.join(argv)} failed: {proc.stderr}")
        return proc

    def openimds(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run(PYTHON, "-m", "openimds", *args, "--config-file", str(self.conf),
                        check=check)

    def start_agents(self) -> None:
        for service in self.services:
            log = open(self.state / f"{service}.log", "ab")  # noqa: SIM115 - closed in stop
            self.logs[service] = log
            self.procs[service] = subprocess.Popen(
                self.argv(PYTHON, "-m", "openimds", service, "--config-file", str(self.conf)),
                stdout=log, stderr=subprocess.STDOUT, env=_env())

    def stop_agents(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs.clear()
        for log in self.logs.values():
            log.close()
        self.logs.clear()

    def private_namespaces(self) -> list[str]:
        out = self.run("ip", "netns", "list", check=False).stdout
        return [line.split()[0] for line in out.splitlines() if line.strip()]


class MultiHostLab:
    """See the module docstring. `hosts` is [(name, services)]; `extra_control` and
    `extra_agent` are ini text appended to the controller's and every host's config;
    `host_defaults` maps a host name to lines for its own [DEFAULT] section."""

    def __init__(self, hosts: Sequence[tuple[str, Sequence[str]]], *,
                 extra_control: str = "", extra_agent: str = "",
                 host_defaults: dict[str, str] | None = None) -> None:
        self.tag = uuid.uuid4().hex[:6]
        self.root = Path(tempfile.mkdtemp(prefix=f"oit-mh-{self.tag}-", dir="/tmp"))
        os.chmod(self.root, 0o755)  # dnsmasq reads its files as an unprivileged user
        self.underlay = f"oit-ul-{self.tag}"
        self.controller = f"oit-ctl-{self.tag}"
        self.global_ns: list[str] = []
        self.server_procs: list[subprocess.Popen[bytes]] = []
        self.server_logs: list[Any] = []
        self.script = self.root / "udhcpc.sh"
        self.script.write_text(UDHCPC_SCRIPT)
        self.script.chmod(0o755)
        db = f"sqlite:///{self.root}/openimds.sqlite"
        self.control_conf = self.root / "control.conf"
        self.control_conf.write_text(
            f"[DEFAULT]\nstate_path = {self.root}\nbind_host = {CONTROLLER_IP}\n"
            f"bind_port = 9696\nmetadata_listen = {CONTROLLER_IP}\n"
            "metadata_listen_port = 8775\nmetadata_workers = 1\n"
            f"{extra_control}\n[database]\nconnection = {db}\n"
            f"[neutron]\nservice_metadata_proxy = true\n"
            f"metadata_proxy_shared_secret = {SECRET}\n")
        self.hosts: list[SimHost] = []
        for i, (name, services) in enumerate(hosts):
            state = self.root / name
            state.mkdir()
            os.chmod(state, 0o755)
            conf = state / "host.conf"
            ip = f"192.0.2.{10 + i}"
            conf.write_text(
                f"[DEFAULT]\nhost = {name}\nstate_path = {state}\n"
                f"auth_url = http://{CONTROLLER_IP}:9696/v2.0\nadmin_user = admin\n"
                f"admin_password = {ADMIN_PW}\nadmin_tenant_name = admin\n"
                f"nova_metadata_host = {CONTROLLER_IP}\nnova_metadata_port = 8775\n"
                f"metadata_proxy_shared_secret = {SECRET}\n"
                f"metadata_proxy_socket = {state}/metadata_proxy\nmetadata_workers = 1\n"
                "enable_isolated_metadata = true\nenable_metadata_proxy = true\n"
                f"{(host_defaults or {}).get(name, '')}\n"
                f"[AGENT]\nreport_interval = 1\n[vxlan]\nlocal_ip = {ip}\n"
                "[linux_bridge]\nphysical_interface_mappings = physnet1:ph0\n"
                f"{extra_agent}\n")
            self.hosts.append(SimHost(name, f"oit-h{i}-{self.tag}", ip, state, conf,
                                      tuple(services)))

    # ---- lifecycle ----------------------------------------------------------------------
    def _netns(self, name: str) -> None:
        sh("ip", "netns", "add", name)
        self.global_ns.append(name)
        sh("ip", "-n", name, "link", "set", "lo", "up")

    def _wire(self, netns: str, ip: str, index: int) -> None:
        outer = f"ul{index}-{self.tag}"
        sh("ip", "link", "add", outer, "netns", self.underlay, "type", "veth", "peer", "name",
           "ul0", "netns", netns)
        sh("ip", "-n", self.underlay, "link", "set", outer, "master", "ul", "up")
        sh("ip", "-n", netns, "addr", "add", f"{ip}/24", "dev", "ul0")
        sh("ip", "-n", netns, "link", "set", "ul0", "up")
        # A second, address-less underlay device per host: physnet1 for flat/VLAN segments.
        outer = f"ph{index}-{self.tag}"
        sh("ip", "link", "add", outer, "netns", self.underlay, "type", "veth", "peer", "name",
           "ph0", "netns", netns)
        sh("ip", "-n", self.underlay, "link", "set", outer, "master", "ph", "up")
        sh("ip", "-n", netns, "link", "set", "ph0", "up")

    def start(self) -> None:
        self._netns(self.underlay)
        sh("ip", "-n", self.underlay, "link", "add", "ul", "type", "bridge", "forward_delay",
           "0", "stp_state", "0")
        sh("ip", "-n", self.underlay, "link", "set", "ul", "up")
        sh("ip", "-n", self.underlay, "link", "add", "ph", "type", "bridge", "forward_delay",
           "0", "stp_state", "0")
        sh("ip", "-n", self.underlay, "link", "set", "ph", "up")
        self._netns(self.controller)
        self._wire(self.controller, CONTROLLER_IP, 0)
        for i, host in enumerate(self.hosts, start=1):
            self._netns(host.netns)
            self._wire(host.netns, host.local_ip, i)
            host.keeper = subprocess.Popen(
                ["unshare", "--mount", "--propagation", "private", "--", "nsenter",
                 f"--net=/run/netns/{host.netns}", "--", "sh", "-c",
                 "mount -t tmpfs tmpfs /run/netns && echo ready && exec sleep infinity"],
                stdout=subprocess.PIPE, text=True)
            assert host.keeper.stdout is not None
            assert host.keeper.stdout.readline().strip() == "ready", host.name
        self._openimds_ctl("db", "upgrade", "--config-file", str(self.control_conf))
        self._openimds_ctl("bootstrap", "--admin-password", ADMIN_PW, "--config-file",
                           str(self.control_conf))
        for service in ("control-api", "metadata-api"):
            log = open(self.root / f"{service}.log", "ab")  # noqa: SIM115 - closed in cleanup
            self.server_logs.append(log)
            self.server_procs.append(subprocess.Popen(
                ["ip", "netns", "exec", self.controller, PYTHON, "-m", "openimds", service,
                 "--config-file", str(self.control_conf)], stdout=log,
                stderr=subprocess.STDOUT, env=_env()))
        wait_for(lambda: self.cli_raw("network", "list").returncode == 0, timeout=60)
        for host in self.hosts:
            host.start_agents()

    def restart_control_api(self, **options: str) -> None:
        """Restart the control API with [DEFAULT] `options` changed (e.g. metadata_mode), and
        wait until it answers. The agents and the metadata API keep running."""
        text = self.control_conf.read_text()
        for name, value in options.items():
            lines = [line for line in text.splitlines() if not line.startswith(f"{name} =")]
            lines.insert(1, f"{name} = {value}")  # right under [DEFAULT]
            text = "\n".join(lines) + "\n"
        self.control_conf.write_text(text)
        proc = self.server_procs[0]  # control-api, started first
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        self.server_procs[0] = subprocess.Popen(
            ["ip", "netns", "exec", self.controller, PYTHON, "-m", "openimds", "control-api",
             "--config-file", str(self.control_conf)], stdout=self.server_logs[0],
            stderr=subprocess.STDOUT, env=_env())
        wait_for(lambda: self.cli_raw("network", "list").returncode == 0, timeout=60)

    def _openimds_ctl(self, *args: str) -> None:
        proc = subprocess.run(["ip", "netns", "exec", self.controller, PYTHON, "-m",
                               "openimds", *args], capture_output=True, text=True,
                              env=_env(), timeout=120)
        assert proc.returncode == 0, proc.stderr

    def cleanup(self) -> None:
        for host in self.hosts:
            with contextlib.suppress(Exception):
                host.stop_agents()
            if host.keeper is not None and host.keeper.poll() is None:
                with contextlib.suppress(Exception):
                    for ns in host.private_namespaces():
                        pids = host.run("ip", "netns", "pids", ns, check=False).stdout.split()
                        for pid in pids:
                            with contextlib.suppress(ProcessLookupError, ValueError):
                                os.kill(int(pid), signal.SIGKILL)
                host.keeper.kill()
                host.keeper.wait()
        for proc in self.server_procs:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        for log in self.server_logs:
            log.close()
        for ns in reversed(self.global_ns):
            pids = sh("ip", "netns", "pids", ns, check=False).stdout.split()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
            sh("ip", "netns", "delete", ns, check=False)
        shutil.rmtree(self.root, ignore_errors=True)

    # ---- node loss ----------------------------------------------------------------------
    def _index(self, host: SimHost) -> int:
        return self.hosts.index(host) + 1  # the controller is underlay port 0

    def power_cut(self, host: SimHost) -> None:
        """As if `host` lost power: SIGKILL to every process of it (agents, and dnsmasq,
        haproxy and keepalived in its namespaces), its namespaces deleted (qrouter-/qdhcp-
        with their addresses), its bridges and VXLAN devices and its underlay links gone. The
        keeper (the "hardware") stays so that `power_on` can boot it again."""
        assert host.keeper is not None
        # The network goes first and at once, as with a power cut: nothing the dying
        # processes do afterwards (a proxy whose agent died first answering 502) can reach
        # anyone.
        i = self._index(host)
        for outer in (f"ul{i}-{self.tag}", f"ph{i}-{self.tag}"):
            sh("ip", "-n", self.underlay, "link", "delete", outer, check=False)
        pids = {str(p.pid) for p in host.procs.values() if p.poll() is None}
        pids |= set(sh("ip", "netns", "pids", host.netns, check=False).stdout.split())
        for ns in host.private_namespaces():
            pids |= set(host.run("ip", "netns", "pids", ns, check=False).stdout.split())
        # The keeper may show in a private name too (a fabric that is the host's own netns).
        for pid in pids - {str(host.keeper.pid)}:
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)
        for proc in host.procs.values():
            proc.wait()
        host.procs.clear()
        for log in host.logs.values():
            log.close()
        host.logs.clear()
        for ns in host.private_namespaces():
            host.run("ip", "netns", "delete", ns, check=False)
        # The host's own namespace is its fabric: bridges, VXLAN devices, veths go too.
        for line in sh("ip", "-n", host.netns, "-o", "link", "show").stdout.splitlines():
            name = line.split(":")[1].strip().split("@")[0]
            if name not in ("lo", "ul0", "ph0"):
                sh("ip", "-n", host.netns, "link", "delete", name, check=False)

    def power_on(self, host: SimHost) -> None:
        """Boot a host after `power_cut`: underlay links back, agents started."""
        self._wire(host.netns, host.local_ip, self._index(host))
        host.start_agents()

    # ---- driving ------------------------------------------------------------------------
    def host(self, name: str) -> SimHost:
        return next(h for h in self.hosts if h.name == name)

    def cli_raw(self, *args: str, user: str = "admin", project: str = "admin",
                password: str = ADMIN_PW) -> subprocess.CompletedProcess[str]:
        env = _env({"OS_AUTH_URL": f"http://{CONTROLLER_IP}:9696/v3", "OS_USERNAME": user,
                    "OS_PASSWORD": password, "OS_PROJECT_NAME": project})
        return subprocess.run(["ip", "netns", "exec", self.controller, PYTHON, "-m",
                               "openimds", *args], capture_output=True, text=True, env=env,
                              timeout=60)

    def cli(self, *args: str, **kw: str) -> Any:
        proc = self.cli_raw(*args, "-f", "json", **kw)
        assert proc.returncode == 0, f"openimds {' '.join(args)}: {proc.stderr}"
        return json.loads(proc.stdout) if proc.stdout.strip() else None

    def api(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """One admin REST call to the control API (for what the CLI does not offer, such as
        a port's binding:host_id); the JSON answer, or None for an empty one."""
        code = (
            "import json, sys, urllib.request\n"
            f"base = 'http://{CONTROLLER_IP}:9696'\n"
            "auth = {'auth': {'identity': {'methods': ['password'], 'password': {'user': {\n"
            f"    'name': 'admin', 'domain': {{'id': 'default'}}, 'password': '{ADMIN_PW}'}}}}}},\n"
            "    'scope': {'project': {'name': 'admin', 'domain': {'id': 'default'}}}}}\n"
            "req = urllib.request.Request(base + '/v3/auth/tokens', json.dumps(auth).encode(),\n"
            "                             {'Content-Type': 'application/json'})\n"
            "token = urllib.request.urlopen(req, timeout=30).headers['X-Subject-Token']\n"
            "data = sys.stdin.read().encode() or None\n"
            "req = urllib.request.Request(base + sys.argv[2], data, {'X-Auth-Token': token,\n"
            "    'Content-Type': 'application/json'}, method=sys.argv[1])\n"
            "sys.stdout.write(urllib.request.urlopen(req, timeout=30).read().decode())\n"
        )
        proc = subprocess.run(["ip", "netns", "exec", self.controller, PYTHON, "-c", code,
                               method, path], input=json.dumps(body) if body else "",
                              capture_output=True, text=True, env=_env(), timeout=60)
        assert proc.returncode == 0, f"{method} {path}: {proc.stderr}"
        return json.loads(proc.stdout) if proc.stdout.strip() else None

    def admin_cmd(self, *args: str) -> None:
        self._openimds_ctl(*args, "--config-file", str(self.control_conf))

    def agents_alive(self) -> dict[tuple[str, str], bool]:
        return {(a["host"], a["agent_type"]): a["alive"]
                for a in self.cli("network", "agent", "list")}

    def boot_guest(self, host: SimHost, port_id: str) -> str:
        guest = f"oit-g-{uuid.uuid4().hex[:8]}"
        host.openimds("port", "plug", port_id, "--netns", guest)
        return guest

    def dhcp(self, host: SimHost, guest: str, within: float = 60) -> str:
        deadline = time.monotonic() + within
        while True:
            proc = host.run("ip", "netns", "exec", guest, "udhcpc", "-i", "eth0", "-s",
                            str(self.script), "-f", "-q", "-n", "-t", "5", "-T", "1", "-O",
                            "staticroutes", check=False, timeout=60)
            if proc.returncode == 0:
                return host.run("ip", "netns", "exec", guest, "ip", "-4", "route").stdout
            if time.monotonic() > deadline:
                raise AssertionError(f"no lease in {guest} on {host.name}: {proc.stderr}")

    def fetch(self, host: SimHost, guest: str, path: str,
              timeout: float = 5) -> tuple[int, bytes]:
        code = (
            "import sys, urllib.request, urllib.error\n"
            "try:\n"
            f"    r = urllib.request.urlopen('http://169.254.169.254' + sys.argv[1], "
            f"timeout={timeout})\n"
            "    status, body = r.status, r.read()\n"
            "except urllib.error.HTTPError as e:\n"
            "    status, body = e.code, e.read()\n"
            "except OSError as e:\n"
            "    status, body = 0, str(e).encode()\n"
            "sys.stdout.write(str(status) + '\\n'); sys.stdout.flush()\n"
            "sys.stdout.buffer.write(body)\n"
        )
        proc = subprocess.run(host.argv("ip", "netns", "exec", guest, PYTHON, "-c", code, path),
                              capture_output=True, timeout=timeout + 30, env=_env())
        assert proc.returncode == 0, proc.stderr.decode()
        head, _, body = proc.stdout.partition(b"\n")
        return int(head), body

    def metadata(self, host: SimHost, guest: str, within: float = 30) -> dict[str, Any]:
        last: tuple[int, bytes] = (0, b"")

        def ok() -> bool:
            nonlocal last
            last = self.fetch(host, guest, "/openstack/latest/meta_data.json")
            return last[0] == 200

        try:
            wait_for(ok, timeout=within, interval=0.3)
        except AssertionError:
            raise AssertionError(f"metadata not served in {guest}: {last[0]} "
                                 f"{last[1][:200]!r}") from None
        return dict(json.loads(last[1]))
