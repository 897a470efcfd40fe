"""README's "Several hosts" walk-through, run as written on four simulated machines.

The shell blocks of that README section are extracted and run with bash inside four simulated
hosts (net-1, net-2, cmp-1, cmp-2: each a network namespace with `eth0` on a shared underlay at
the README's addresses and an address-less `eth1`, plus a private mount namespace). PostgreSQL
runs inside net-1, listening on 10.1.0.11:5432 as the README's connection URL expects. The only
rewrites are the ones a reader makes by hand or that keep the test off the machine's own files:
* `/etc/openimds` and `/var/lib/openimds` become per-host directories of the test;
* the "every machine" block gets that machine's `host` and `local_ip` (as the README says),
  and compute hosts stop at its "# network nodes only:" line;
* `runuser -u postgres -- psql` reaches net-1's PostgreSQL through PGHOST/PGPORT.
Long-running commands (`... &`) keep running inside their host and are stopped by pid at the end.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.multihost import REPO, SimHost, _env, sh, wait_for

MACHINES = {"net-1": "10.1.0.11", "net-2": "10.1.0.12", "cmp-1": "10.1.0.21",
            "cmp-2": "10.1.0.22"}
PG_BIN = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: p.parent.name)


def readme_blocks() -> list[str]:
    text = (REPO / "README.md").read_text()
    section = text.split("## Several hosts", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.*?)```", section, flags=re.S)


def per_machine(block: str, name: str, ip: str) -> str:
    """The "every machine" block as a reader adapts it to machine `name`."""
    block = block.replace("host = net-1", f"host = {name}")
    block = block.replace("local_ip = 10.1.0.11", f"local_ip = {ip}")
    if name.startswith("cmp-"):
        block = block.split("# network nodes only:")[0]
    return block


class ReadmeLab:
    def __init__(self) -> None:
        self.tag = uuid.uuid4().hex[:6]
        self.root = Path(tempfile.mkdtemp(prefix=f"oit-rd-{self.tag}-", dir="/tmp"))
        os.chmod(self.root, 0o755)
        self.underlay = f"oit-rul-{self.tag}"
        self.global_ns: list[str] = []
        self.hosts: dict[str, SimHost] = {}
        self.pg_dir = self.root / "pg"

    def start(self) -> None:
        sh("ip", "netns", "add", self.underlay)
        self.global_ns.append(self.underlay)
        for bridge in ("ul", "ph"):
            sh("ip", "-n", self.underlay, "link", "add", bridge, "type", "bridge",
               "forward_delay", "0", "stp_state", "0")
            sh("ip", "-n", self.underlay, "link", "set", bridge, "up")
        for i, (name, ip) in enumerate(MACHINES.items()):
            netns = f"oit-r{i}-{self.tag}"
            sh("ip", "netns", "add", netns)
            self.global_ns.append(netns)
            sh("ip", "-n", netns, "link", "set", "lo", "up")
            for bridge, dev in (("ul", "eth0"), ("ph", "eth1")):
                outer = f"{bridge}{i}-{self.tag}"
                sh("ip", "link", "add", outer, "netns", self.underlay, "type", "veth", "peer",
                   "name", dev, "netns", netns)
                sh("ip", "-n", self.underlay, "link", "set", outer, "master", bridge, "up")
                sh("ip", "-n", netns, "link", "set", dev, "up")
            sh("ip", "-n", netns, "addr", "add", f"{ip}/24", "dev", "eth0")
            state = self.root / name
            (state / "etc").mkdir(parents=True)
            (state / "var").mkdir()
            os.chmod(state, 0o755)
            os.chmod(state / "var", 0o755)
            host = SimHost(name, netns, ip, state, state / "etc" / "agents.conf", ())
            host.keeper = subprocess.Popen(
                ["unshare", "--mount", "--propagation", "private", "--", "nsenter",
                 f"--net=/run/netns/{netns}", "--", "sh", "-c",
                 "mount -t tmpfs tmpfs /run/netns && echo ready && exec sleep infinity"],
                stdout=subprocess.PIPE, text=True)
            assert host.keeper.stdout is not None
            assert host.keeper.stdout.readline().strip() == "ready", name
            self.hosts[name] = host
        self._start_postgres()

    def _start_postgres(self) -> None:
        """A PostgreSQL of this test only, inside net-1, where the README's URL points."""
        bindir = PG_BIN[-1]
        self.pg_dir.mkdir()
        shutil.chown(self.pg_dir, "postgres")
        net1 = self.hosts["net-1"]
        net1.run("runuser", "-u", "postgres", "--", str(bindir / "initdb"), "-D",
                 str(self.pg_dir / "data"), "-A", "trust", "-U", "postgres")
        # Trust for the local socket (the README's `runuser -u postgres -- psql`), passwords
        # over TCP (the README's connection URL carries one).
        (self.pg_dir / "data" / "pg_hba.conf").write_text(
            "local all all trust\nhost all all 0.0.0.0/0 md5\n")
        net1.run("runuser", "-u", "postgres", "--", str(bindir / "pg_ctl"), "-D",
                 str(self.pg_dir / "data"), "-l", str(self.pg_dir / "log"), "-w", "-o",
                 f"-k {self.pg_dir} -h 10.1.0.11 -p 5432 -c fsync=off", "start", timeout=120)

    def bash(self, name: str, script: str, *, env: dict[str, str] | None = None,
             check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run `script` with bash inside machine `name`, from the repository root."""
        host = self.hosts[name]
        state = host.state
        script = (script.replace("/etc/openimds", str(state / "etc"))
                  .replace("/var/lib/openimds", str(state / "var")))
        log = state / "bash.log"
        # Background jobs (`cmd &`) inherit this script's output: send it to a file, so this
        # call returns when the script does while those jobs go on.
        wrapped = f"exec >>{log} 2>&1\nset -e\n{script}"
        extra = {"PATH": f"{REPO / '.venv' / 'bin'}:{os.environ.get('PATH', '')}",
                 "PGHOST": str(self.pg_dir), "PGPORT": "5432", **(env or {})}
        proc = subprocess.run(host.argv("bash", "-c", wrapped), cwd=REPO, text=True,
                              capture_output=True, timeout=300, env=_env(extra))
        if check and proc.returncode != 0:
            raise AssertionError(f"{name}: README block failed ({proc.returncode}):\n"
                                 f"{script}\n--- log ---\n{log.read_text()[-4000:]}")
        return proc

    def output(self, name: str, script: str, env: dict[str, str], check: bool = True) -> str:
        """Run `script` inside `name` and return its standard output ("" if it failed and
        `check` is false: the control plane may not be up yet)."""
        host = self.hosts[name]
        script = (script.replace("/etc/openimds", str(host.state / "etc"))
                  .replace("/var/lib/openimds", str(host.state / "var")))
        proc = subprocess.run(host.argv("bash", "-c", "set -e\n" + script), cwd=REPO,
                              text=True, capture_output=True, timeout=120, env=_env(
                                  {"PATH": f"{REPO / '.venv' / 'bin'}:"
                                           f"{os.environ.get('PATH', '')}", **env}))
        if not check and proc.returncode != 0:
            return ""
        assert proc.returncode == 0, f"{name}: {script}\n{proc.stderr}"
        return proc.stdout

    def cleanup(self) -> None:
        with contextlib.suppress(Exception):
            self.hosts["net-1"].run("runuser", "-u", "postgres", "--",
                                    str(PG_BIN[-1] / "pg_ctl"), "-D",
                                    str(self.pg_dir / "data"), "-m", "immediate", "stop",
                                    check=False)
        for host in self.hosts.values():
            if host.keeper is None or host.keeper.poll() is not None:
                continue
            with contextlib.suppress(Exception):
                for ns in host.private_namespaces():
                    for pid in host.run("ip", "netns", "pids", ns, check=False).stdout.split():
                        with contextlib.suppress(ProcessLookupError, ValueError):
                            os.kill(int(pid), signal.SIGKILL)
            host.keeper.kill()
            host.keeper.wait()
        for ns in reversed(self.global_ns):
            for pid in sh("ip", "netns", "pids", ns, check=False).stdout.split():
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
            sh("ip", "netns", "delete", ns, check=False)
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def readme_lab(needs_root: None) -> Iterator[ReadmeLab]:
    if not PG_BIN:
        pytest.fail("PostgreSQL is not installed (scripts/install.sh installs it)")
    lab = ReadmeLab()
    try:
        lab.start()
        yield lab
    finally:
        lab.cleanup()


def _table_rows(table: str) -> set[tuple[str, ...]]:
    """Each row of a CLI agent table but its ID (which differs from run to run)."""
    rows = set()
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 7 and cells[0] != "ID":
            rows.add(tuple(cells[1:]))
    return rows


def test_readme_several_hosts_walkthrough_as_written(readme_lab: ReadmeLab) -> None:
    control, agents, agent_list, create, cmp1 = readme_blocks()
    section = (REPO / "README.md").read_text().split("## Several hosts", 1)[1]
    expected_table = re.findall(r"```\n(\+-.*?)```", section, flags=re.S)[0]
    os_env = {"OS_AUTH_URL": "http://10.1.0.11:9696/v3", "OS_USERNAME": "admin",
              "OS_PASSWORD": "admin-pw", "OS_PROJECT_NAME": "admin"}

    readme_lab.bash("net-1", control)
    for name, ip in MACHINES.items():
        readme_lab.bash(name, per_machine(agents, name, ip))

    expected = _table_rows(expected_table)
    assert len(expected) == 10

    def listed() -> set[tuple[str, ...]]:
        return _table_rows(readme_lab.output("net-1", agent_list, os_env, check=False))

    wait_for(lambda: listed() == expected, timeout=120, interval=1)

    readme_lab.output("net-1", create, os_env)
    # cmp-1's block: find and plug the port once; then an operator repeats the lease and the
    # request until the network has converged (the DHCP hosts entry, the VXLAN flood list).
    lines = [line for line in cmp1.splitlines() if line.strip()]
    plug = [line for line in lines if not line.startswith("ip netns exec vm1")]
    lease, fetch = [line for line in lines if line.startswith("ip netns exec vm1")]
    readme_lab.output("cmp-1", "\n".join(plug), os_env)
    wait_for(lambda: readme_lab.hosts["cmp-1"].run(
        "bash", "-c", f"cd {REPO} && {lease}", check=False).returncode == 0,
        timeout=120, interval=1)
    meta = wait_for(lambda: _meta_json(readme_lab.output("cmp-1", fetch, os_env, check=False)),
                    timeout=60, interval=1)
    assert meta["name"] == "vm1"
    server = json.loads(readme_lab.output(
        "net-1", "openimds server show vm1 -f json", os_env))
    assert meta["uuid"] == server["id"]


def _meta_json(out: str) -> dict[str, object] | None:
    """The meta_data.json that the README's last command prints, once it prints one."""
    start = out.find("{")
    if start < 0:
        return None
    try:
        return dict(json.loads(out[start:]))
    except ValueError:
        return None
