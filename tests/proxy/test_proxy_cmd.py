"""`openimds ns-metadata-proxy`: the seed's command line, parsed and run for real."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from openimds.cli.main import build_parser
from openimds.cli.proxy_cmd import spec_from_args
from openimds.config import load_config
from openimds.proxy.haproxy import Bind, RateLimit, Timeouts, config_path
from openimds.proxy.options import rate_limit_from_conf, timeouts_from_conf
from openimds.proxy.supervisor import HaproxySupervisor, listening_sockets

RID = "8a4b1e2c-0000-4000-8000-000000000001"


def seed_argv(kind: str, port: int, state: str = "/var/lib/neutron") -> list[str]:
    # Seed 2's neutron-ns-metadata-proxy line, flag for flag.
    return [
        "ns-metadata-proxy",
        f"--pid_file={state}/external/pids/{RID}.pid",
        f"--metadata_proxy_socket={state}/metadata_proxy",
        f"--{kind}_id={RID}",
        f"--state_path={state}",
        f"--metadata_port={port}",
        "--metadata_proxy_user=998",
        "--metadata_proxy_group=996",
        "--debug",
        f"--log-file=neutron-ns-metadata-proxy-{RID}.log",
        "--log-dir=/var/log/neutron",
    ]


def test_seed_router_command_line() -> None:
    args = build_parser().parse_args(seed_argv("router", 9697))
    spec = spec_from_args(args, load_config("ns-metadata-proxy", []), debug=True)
    assert spec.kind == "router" and spec.resource_id == RID
    assert spec.binds == (Bind("0.0.0.0", 9697),)
    assert spec.pidfile == f"/var/lib/neutron/external/pids/{RID}.pid"
    assert spec.socket_path == "/var/lib/neutron/metadata_proxy"
    assert (spec.user, spec.group, spec.debug) == ("998", "996", True)
    assert args.log_file.endswith(".log") and args.log_dir == "/var/log/neutron"


def test_seed_network_command_line_with_dashed_flags() -> None:
    argv = [
        a.replace("_", "-", a.index("=") if "=" in a else len(a)) for a in seed_argv("network", 80)
    ]
    assert "--network-id=" + RID in argv
    args = build_parser().parse_args(argv)
    spec = spec_from_args(args, load_config("ns-metadata-proxy", []))
    assert spec.kind == "network"
    assert spec.binds == (Bind("169.254.169.254", 80),)


def test_exactly_one_id_is_required() -> None:
    argv = [a for a in seed_argv("router", 9697) if not a.startswith("--router_id")]
    args = build_parser().parse_args(argv)
    with pytest.raises(ValueError, match="exactly one"):
        spec_from_args(args, load_config("ns-metadata-proxy", []))
    with pytest.raises(SystemExit):
        build_parser().parse_args([*seed_argv("router", 9697), "--network_id=x"])


def test_command_runs_and_readopts_haproxy_in_a_namespace(
    make_netns: Callable[[str], str],
) -> None:
    if shutil.which("haproxy") is None:
        pytest.fail("haproxy is not installed")
    ns = make_netns("cmd")
    root = tempfile.mkdtemp(prefix="oip-", dir="/tmp")
    rid = str(uuid.uuid4())
    state = os.path.join(root, "st")
    pid_file = os.path.join(root, "pids", f"{rid}.pid")
    argv = [
        "ip", "netns", "exec", ns, sys.executable, "-m", "openimds", "ns-metadata-proxy",
        f"--router_id={rid}", f"--state_path={state}", f"--pid_file={pid_file}",
        f"--metadata_proxy_socket={root}/metadata_proxy", "--metadata_port=9697",
        f"--metadata_proxy_user={os.geteuid()}", f"--metadata_proxy_group={os.getegid()}",
        "--debug", f"--log-file={root}/proxy.log",
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    try:
        first = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env)
        assert first.returncode == 0, first.stderr
        assert "started" in first.stdout
        pid = int(Path(pid_file).read_text().split()[0])
        assert ("0.0.0.0", 9697) in listening_sockets(pid)
        assert os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat(f"/run/netns/{ns}").st_ino
        # --pid_file is haproxy's own pid file.
        assert f"pidfile     {pid_file}" in Path(config_path(state, rid)).read_text()

        again = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env)
        assert again.returncode == 0, again.stderr
        assert "adopted" in again.stdout and f"pid {pid}" in again.stdout
    finally:
        HaproxySupervisor(state).stop(rid)
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.parametrize(
    "ini, want",
    [
        ("", None),
        ("rate_limit_enabled = true\n", RateLimit()),
        (
            "rate_limit_enabled = true\nip_versions = 6\nbase_window_duration = 20\n"
            "base_query_rate_limit = 5\nburst_window_duration = 2\nburst_query_rate_limit = 3\n",
            RateLimit(ip_version=6, base_window=20, base_limit=5, burst_window=2, burst_limit=3),
        ),
        # Both families cannot share one stick table: warn and run unlimited, as Neutron does.
        ("rate_limit_enabled = true\nip_versions = 4,6\n", None),
    ],
)
def test_options_from_ini(tmp_path: Path, ini: str, want: RateLimit | None) -> None:
    path = tmp_path / "l3_agent.ini"
    path.write_text("[metadata_haproxy]\ntimeout_server = 90\n[metadata_rate_limiting]\n" + ini)
    conf = load_config("ns-metadata-proxy", [str(path)])
    assert rate_limit_from_conf(conf) == want
    assert timeouts_from_conf(conf) == Timeouts(server=90)
