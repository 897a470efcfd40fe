"""The real `openimds` CLI (subprocesses) against a real `openimds control-api` on loopback:
seed 2's workflow in its legacy spelling and in noun-verb form."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

PYTHON = sys.executable
ADMIN_PW = "cli-admin-pw"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Cli:
    conf: Path
    url: str
    env: dict[str, str]

    def run(self, *args: str, env: dict[str, str] | None = None,
            check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([PYTHON, "-m", "openimds", *args], capture_output=True,
                              text=True, env=env or self.env, timeout=60)
        if check:
            assert proc.returncode == 0, (args, proc.stdout, proc.stderr)
        return proc

    def json(self, *args: str) -> Any:
        return json.loads(self.run(*args, "-f", "json").stdout)

    def admin(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.run(*args, "--config-file", str(self.conf))


@pytest.fixture(scope="module")
def cli(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cli]:
    state = tmp_path_factory.mktemp("control-cli")
    port = free_port()
    conf = state / "control.conf"
    conf.write_text(f"[DEFAULT]\nstate_path = {state}\nbind_host = 127.0.0.1\n"
                    f"bind_port = {port}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
    base = Cli(conf, f"http://127.0.0.1:{port}", env)
    base.admin("bootstrap", "--admin-password", ADMIN_PW)
    log = open(state / "server.log", "w")  # noqa: SIM115 - closed in finally
    server = subprocess.Popen([PYTHON, "-m", "openimds", "control-api", "--config-file",
                               str(conf)], stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                urllib.request.urlopen(base.url + "/", timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError((state / "server.log").read_text()) from None
                time.sleep(0.1)
        env = {**env, "OS_AUTH_URL": base.url + "/v3", "OS_USERNAME": "admin",
               "OS_PASSWORD": ADMIN_PW, "OS_PROJECT_NAME": "admin"}
        yield Cli(conf, base.url, env)
    finally:
        server.terminate()  # only the server this fixture started, by its handle
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()


def dhcp_ips(cli: Cli, network_id: str) -> list[str]:
    ports = cli.json("port", "list", "--network", network_id, "--device-owner", "network:dhcp")
    return [f["ip_address"] for p in ports for f in p["fixed_ips"]]


def test_bootstrap_is_idempotent(cli: Cli) -> None:
    first = cli.admin("bootstrap", "--admin-password", ADMIN_PW).stdout
    second = cli.admin("bootstrap", "--admin-password", ADMIN_PW).stdout
    assert first == second and "admin" in first


def test_seed2_workflow_in_the_seeds_own_spelling(cli: Cli) -> None:
    """Seed 2, with `openimds` in place of `neutron`, verbatim."""
    cli.run("net-create", "test-metadata-in-dhcp")
    cli.run("subnet-create", "--no-gateway", "--name", "test-metadata-in-dhcp",
            "test-metadata-in-dhcp", "192.168.111.0/24")
    cli.run("net-create", "test-metadata-in-dhcp-with-gw")
    cli.run("subnet-create", "--name", "test-metadata-in-dhcp-with-gw",
            "test-metadata-in-dhcp-with-gw", "172.31.0.0/24")
    cli.run("router-create", "testrouter")
    cli.run("router-interface-add", "testrouter", "test-metadata-in-dhcp-with-gw")

    isolated = cli.json("network", "show", "test-metadata-in-dhcp")
    routed = cli.json("network", "show", "test-metadata-in-dhcp-with-gw")
    no_gw = cli.json("subnet", "show", "test-metadata-in-dhcp")
    gw = cli.json("subnet", "show", "test-metadata-in-dhcp-with-gw")
    assert no_gw["gateway_ip"] is None and no_gw["cidr"] == "192.168.111.0/24"
    assert gw["gateway_ip"] == "172.31.0.1"
    # One DHCP port per network: the first free address (.1 with no gateway, .2 after it).
    assert dhcp_ips(cli, isolated["id"]) == ["192.168.111.1"]
    assert dhcp_ips(cli, routed["id"]) == ["172.31.0.2"]
    router = cli.json("router", "show", "testrouter")
    [iface] = cli.json("port", "list", "--device-id", router["id"])
    assert iface["device_owner"] == "network:router_interface"
    assert iface["fixed_ips"] == [{"subnet_id": gw["id"], "ip_address": "172.31.0.1"}]
    # The isolated subnet cannot be attached: it has no gateway.
    failed = cli.run("router-interface-add", "testrouter", "test-metadata-in-dhcp", check=False)
    assert failed.returncode == 1
    assert "must have a gateway IP" in failed.stderr
    # Table output by default, naming the ports.
    table = cli.run("port", "list").stdout
    assert "network:router_interface" in table and "172.31.0.1" in table


def test_noun_verb_workflow_and_servers(cli: Cli, tmp_path: Path) -> None:
    cli.run("network", "create", "nv-net")
    sub = cli.json("subnet", "create", "nv-sub", "--network", "nv-net", "--subnet-range",
                   "10.20.0.0/24", "--gateway", "10.20.0.254", "--dns-nameserver", "10.20.0.53",
                   "--host-route", "destination=10.30.0.0/16,gateway=10.20.0.1")
    assert sub["gateway_ip"] == "10.20.0.254"
    assert sub["host_routes"] == [{"destination": "10.30.0.0/16", "nexthop": "10.20.0.1"}]
    nodhcp = cli.json("subnet", "create", "v6", "--network", "nv-net", "--subnet-range",
                      "fd00:20::/64", "--ip-version", "6", "--no-dhcp")
    assert nodhcp["enable_dhcp"] is False and nodhcp["ip_version"] == 6
    cli.run("router", "create", "nv-router")
    cli.run("router", "add", "subnet", "nv-router", "nv-sub")
    key = tmp_path / "id.pub"
    key.write_text("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAG1MI0O4S9J1wP+2c0NLFBUzqG8KeAvTkrmjdX"
                   "uGY9r test@example\n")
    cli.run("keypair", "create", "--public-key", str(key), "k1")
    user_data = tmp_path / "ud"
    user_data.write_bytes(b"#cloud-config\nhostname: x\n")
    srv = cli.json("server", "create", "vm-1", "--network", "nv-net", "--fixed-ip",
                   "10.20.0.10", "--user-data", str(user_data), "--property", "role=db",
                   "--property", "tier=2", "--key-name", "k1", "--availability-zone", "az9",
                   "--flavor", "m1.tiny", "--image", "cirros")
    assert srv["metadata"] == {"role": "db", "tier": "2"}
    addrs = [a["addr"] for a in srv["addresses"]["nv-net"]]
    assert "10.20.0.10" in addrs
    [port] = cli.json("port", "list", "--device-id", srv["id"])
    assert port["device_owner"] == "compute:az9"
    assert "vm-1" in cli.run("server", "list").stdout
    # The address is in use: an API error prints the server's message and exits 1.
    clash = cli.run("port", "create", "p", "--network", "nv-net", "--fixed-ip",
                    "ip-address=10.20.0.10", check=False)
    assert clash.returncode == 1 and "in use" in clash.stderr
    cli.run("server", "delete", "vm-1")
    assert cli.json("port", "list", "--fixed-ip", "10.20.0.10") == []
    cli.run("router", "remove", "subnet", "nv-router", "nv-sub")
    cli.run("router", "delete", "nv-router")
    cli.run("network", "delete", "nv-net")
    gone = cli.run("network", "show", "nv-net", check=False)
    assert gone.returncode == 1 and "No network" in gone.stderr


def test_projects_users_and_isolation_through_the_cli(cli: Cli) -> None:
    cli.admin("project", "create", "tenant-x")
    cli.admin("user", "create", "xavier", "--project", "tenant-x", "--password", "xpw")
    dup = cli.run("user", "create", "xavier", "--project", "tenant-x", "--password", "x",
                  "--config-file", str(cli.conf), check=False)
    assert dup.returncode == 1 and "already exists" in dup.stderr
    x_env = {**cli.env, "OS_USERNAME": "xavier", "OS_PASSWORD": "xpw",
             "OS_PROJECT_NAME": "tenant-x",
             "OS_AUTH_URL": cli.url + "/v2.0"}
    cli.run("net-create", "x-net", env=x_env)
    cli.run("server", "create", "x-vm", env=x_env)
    # Servers list per project (Nova); an admin asks for every project explicitly.
    assert "x-vm" not in cli.run("server", "list").stdout
    assert "x-vm" in cli.run("server", "list", "--all-projects").stdout
    denied = cli.run("server", "list", "--all-projects", env=x_env, check=False)
    assert denied.returncode == 1
    mine = json.loads(cli.run("network", "list", "-f", "json", env=x_env).stdout)
    assert [n["name"] for n in mine] == ["x-net"]  # none of the admin's networks
    bad = cli.run("network", "list", env={**x_env, "OS_PASSWORD": "nope"}, check=False)
    assert bad.returncode == 1 and "authentication" in bad.stderr
    missing = cli.run("network", "list", env={k: v for k, v in x_env.items()
                                              if k != "OS_AUTH_URL"}, check=False)
    assert missing.returncode == 1 and "OS_AUTH_URL" in missing.stderr


def test_config_flags_are_accepted_by_client_commands(cli: Cli) -> None:
    out = cli.run("network", "list", "--config-file", str(cli.conf), "--config-dir",
                  str(cli.conf.parent))
    assert out.returncode == 0


def test_server_metadata_options_through_the_cli(cli: Cli) -> None:
    srv = cli.json("server", "create", "md-vm", "--metadata-http-tokens", "required",
                   "--metadata-http-put-response-hop-limit", "2")
    assert srv["openimds:metadata_options"] == {"http_tokens": "required",
                                                "http_put_response_hop_limit": 2}
    shown = cli.json("server", "show", "md-vm")
    assert shown["metadata_options"]["http_tokens"] == "required"
    assert shown["metadata_options"]["http_endpoint"] == "enabled"  # the cloud default
    assert shown["metadata_token_usage"]["tokenless_requests"] == 0
    cli.run("server", "set", "md-vm", "--metadata-http-tokens", "default",
            "--metadata-http-endpoint", "disabled", "--metadata-instance-metadata-tags",
            "enabled", "--metadata-http-protocol-ipv6", "disabled")
    shown = cli.json("server", "show", "md-vm")
    assert shown["metadata_options"] == {
        "http_tokens": "optional", "http_put_response_hop_limit": 2,
        "http_endpoint": "disabled", "instance_metadata_tags": "enabled",
        "http_protocol_ipv6": "disabled"}
    table = cli.run("server", "show", "md-vm").stdout
    assert "metadata_options" in table and "http_endpoint" in table
    bad = cli.run("server", "set", "md-vm", "--metadata-http-put-response-hop-limit", "65",
                  check=False)
    assert bad.returncode == 1 and "1..64" in bad.stderr
    nothing = cli.run("server", "set", "md-vm", check=False)
    assert nothing.returncode == 1 and "nothing to set" in nothing.stderr
    usage = cli.json("server", "token-usage")
    assert any(u["name"] == "md-vm" and u["tokenless_requests"] == 0 for u in usage)
    assert "Tokenless" in cli.run("server", "token-usage").stdout
    cli.run("server", "delete", "md-vm")


def test_both_spellings_list_show_and_delete_alike(cli: Cli) -> None:
    """`net-show X` and `network show X` (and list, delete) come from one table: the same
    answers in both spellings, for every resource the seeds spell the neutron way."""
    cli.run("network", "create", "spelling-net")
    cli.run("subnet", "create", "spelling-sub", "--network", "spelling-net",
            "--subnet-range", "10.77.0.0/24")
    cli.run("router", "create", "spelling-router")
    cli.run("port", "create", "spelling-port", "--network", "spelling-net")
    for noun, legacy, name in (("network", "net", "spelling-net"),
                               ("subnet", "subnet", "spelling-sub"),
                               ("router", "router", "spelling-router"),
                               ("port", "port", "spelling-port")):
        shown = cli.json(noun, "show", name)
        assert shown["name"] == name
        assert cli.json(f"{legacy}-show", name) == shown
        listed = cli.json(noun, "list")
        assert name in [item["name"] for item in listed]
        assert cli.json(f"{legacy}-list") == listed
    cli.run("port", "delete", "spelling-port")
    for legacy, name in (("subnet", "spelling-sub"), ("net", "spelling-net"),
                         ("router", "spelling-router")):
        cli.run(f"{legacy}-delete", name)
        gone = cli.run(f"{legacy}-show", name, check=False)
        assert gone.returncode == 1 and f"with a name or ID of '{name}'" in gone.stderr


def test_control_api_on_an_address_another_process_holds_says_so_in_one_line(
        tmp_path: Path) -> None:
    """A port already taken is an operator's condition, not a crash: exit 1 with one line
    naming the address, no traceback, and no claim that it is listening."""
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = int(taken.getsockname()[1])
        conf = tmp_path / "control.conf"
        conf.write_text(f"[DEFAULT]\nstate_path = {tmp_path}\nbind_host = 127.0.0.1\n"
                        f"bind_port = {port}\n")
        env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
        proc = subprocess.run([PYTHON, "-m", "openimds", "control-api", "--config-file",
                               str(conf)], capture_output=True, text=True, env=env,
                              timeout=120)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1, output
    assert "Traceback" not in output, output
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in proc.stderr, output
    assert "listening on" not in output, output
