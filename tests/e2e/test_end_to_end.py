"""End to end on a real all-in-one node: the seed-2 workflows, the router path, overlapping
tenants, a real cloud-init reader and churn. Guests are namespaces plugged into the test's
fabric; every metadata request leaves a guest namespace, never the host's."""

from __future__ import annotations

import base64
import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.cloud import Cloud, _clean_env
from tests.fabric.lab import sh, wait_for

pytestmark = pytest.mark.root

ISOLATED_ROUTE = "169.254.169.254 via {via} dev eth0"


def _uid() -> str:
    return str(time.monotonic_ns())[-6:]


def _public_key(comment: str) -> str:
    """A well-formed ssh-ed25519 public key line (random key material; never used to log in)."""
    import os
    import struct

    def field(b: bytes) -> bytes:
        return struct.pack(">I", len(b)) + b

    blob = field(b"ssh-ed25519") + field(os.urandom(32))
    return f"ssh-ed25519 {base64.b64encode(blob).decode()} {comment}"


def _dhcp_ip(cloud: Cloud, network_id: str) -> str:
    ports = cloud.cli("port", "list", "--network", network_id, "--device-owner", "network:dhcp")
    assert len(ports) == 1
    return str(ports[0]["fixed_ips"][0]["ip_address"])


def test_seed2_isolated_network_guest_gets_its_metadata_over_dhcp_path(
    cloud: Cloud, tmp_path: Path
) -> None:
    tag = _uid()
    net = cloud.cli("net-create", f"iso-{tag}")
    cloud.cli("subnet-create", "--no-gateway", "--name", f"iso-sub-{tag}", f"iso-{tag}",
              "192.168.111.0/24")
    key = tmp_path / "k.pub"
    key.write_text(_public_key("e2e@test") + "\n")
    cloud.cli("keypair", "create", "--public-key", str(key), f"key-{tag}")
    user_data = tmp_path / "ud"
    user_data.write_bytes(b"#cloud-config\nruncmd: [echo seed2]\n")
    server = cloud.cli("server", "create", f"vm-{tag}", "--network", f"iso-{tag}",
                       "--user-data", str(user_data), "--key-name", f"key-{tag}",
                       "--property", "role=web")
    port = cloud.server_port(server["id"])
    dhcp_ip = _dhcp_ip(cloud, net["id"])

    guest = cloud.boot_guest(port["id"])
    routes = cloud.dhcp(guest)
    assert ISOLATED_ROUTE.format(via=dhcp_ip) in routes
    assert "default" not in routes  # no gateway: option:router is sent empty

    meta = cloud.metadata(guest)
    assert meta["uuid"] == server["id"]
    assert meta["name"] == f"vm-{tag}"
    assert meta["meta"] == {"role": "web"}
    assert meta["public_keys"] == {f"key-{tag}": key.read_text().strip()}
    status, body = cloud.fetch(guest, "/openstack/latest/user_data")
    assert (status, body) == (200, user_data.read_bytes())
    status, body = cloud.fetch(guest, "/openstack/latest/network_data.json")
    assert status == 200
    links = json.loads(body)["links"]
    assert [link["ethernet_mac_address"] for link in links] == [port["mac_address"]]
    status, body = cloud.fetch(guest, "/latest/meta-data/local-ipv4")
    assert (status, body.decode()) == (200, port["fixed_ips"][0]["ip_address"])


def test_seed2_router_attach_restart_and_detach(cloud: Cloud) -> None:
    tag = _uid()
    net = cloud.cli("net-create", f"gw-{tag}")
    subnet = cloud.cli("subnet-create", "--name", f"gw-sub-{tag}", f"gw-{tag}", "172.31.0.0/24")
    dhcp_ip = _dhcp_ip(cloud, net["id"])
    assert subnet["gateway_ip"] == "172.31.0.1" and dhcp_ip == "172.31.0.2"
    isolated_opts = (
        "tag:tag0,option:classless-static-route,169.254.169.254/32,172.31.0.2,0.0.0.0/0,172.31.0.1\n"
        "tag:tag0,249,169.254.169.254/32,172.31.0.2,0.0.0.0/0,172.31.0.1\n"
        "tag:tag0,option:router,172.31.0.1\n"
    )
    wait_for(lambda: cloud.read_opts(net["id"]) == isolated_opts, timeout=15, interval=0.2)

    router = cloud.cli("router-create", f"r-{tag}")
    attached = time.monotonic()
    cloud.cli("router-interface-add", f"r-{tag}", f"gw-sub-{tag}")
    routed_opts = (
        "tag:tag0,option:classless-static-route,169.254.169.254/32,172.31.0.1,0.0.0.0/0,172.31.0.1\n"
        "tag:tag0,249,169.254.169.254/32,172.31.0.1,0.0.0.0/0,172.31.0.1\n"
        "tag:tag0,option:router,172.31.0.1\n"
    )
    wait_for(lambda: cloud.read_opts(net["id"]) == routed_opts, timeout=15, interval=0.1)
    assert time.monotonic() - attached < 10, "router attach must reach the DHCP opts within seconds"
    ns = f"qdhcp-{net['id']}"
    # Within the lease window guests may still hold the old route: address and proxy stay.
    assert "169.254.169.254/32" in sh("ip", "-4", "-o", "addr", netns=ns)

    conf_dir = cloud.state / "dhcp" / net["id"]
    proxy_conf = cloud.state / "ns-metadata-proxy" / f"{net['id']}.conf"

    def snapshot() -> dict[str, bytes]:
        files = {p.name: p.read_bytes() for p in sorted(conf_dir.iterdir())
                 if p.name in ("host", "addn_hosts", "opts")}
        files["proxy"] = proxy_conf.read_bytes()
        files["pids"] = sh("ip", "netns", "pids", ns).encode()
        # Addresses as (device, address/prefix): DAD flags like "tentative" are kernel timing.
        links = json.loads(sh("ip", "-j", "addr", netns=ns))
        files["addrs"] = json.dumps(sorted(
            (link["ifname"], f"{a['local']}/{a['prefixlen']}")
            for link in links for a in link.get("addr_info", []))).encode()
        return files

    def dhcp_agent() -> dict[str, Any]:
        rows = [a for a in cloud.cli("network", "agent", "list")
                if a["agent_type"] == "DHCP agent"]
        assert len(rows) == 1, rows
        return dict(cloud.cli("network", "agent", "show", rows[0]["id"]))

    # The revision the running agent has fully applied (reported with its heartbeat).
    synced = wait_for(lambda: dhcp_agent()["configurations"].get("synced_revision"),
                      timeout=30, interval=0.3)
    before = snapshot()
    old_agent = cloud.child_pid("dhcp-agent")
    assert old_agent is not None
    old_start = dhcp_agent()["started_at"]
    subprocess.run(["kill", "-TERM", str(old_agent)], check=True)
    wait_for(lambda: cloud.child_pid("dhcp-agent") not in (None, old_agent), timeout=30,
             interval=0.3)

    def restarted_and_synced() -> bool:
        row = dhcp_agent()
        got = row["configurations"].get("synced_revision")
        return row["started_at"] != old_start and got is not None and got >= synced

    # The restarted agent has adopted everything and finished a whole pass.
    wait_for(restarted_and_synced, timeout=60, interval=0.3)
    assert snapshot() == before, "a DHCP agent restart must change nothing"

    cloud.cli("router", "remove", "subnet", f"r-{tag}", f"gw-sub-{tag}")
    wait_for(lambda: cloud.read_opts(net["id"]) == isolated_opts, timeout=15, interval=0.1)
    cloud.cli("router", "delete", router["id"])


def test_router_path_redirect_and_direct_port_dropped(cloud: Cloud) -> None:
    tag = _uid()
    cloud.cli("net-create", f"rt-{tag}")
    cloud.cli("subnet-create", "--name", f"rt-sub-{tag}", f"rt-{tag}", "10.20.0.0/24")
    router = cloud.cli("router-create", f"rr-{tag}")
    cloud.cli("router-interface-add", f"rr-{tag}", f"rt-sub-{tag}")
    server = cloud.cli("server", "create", f"rvm-{tag}", "--network", f"rt-{tag}")
    port = cloud.server_port(server["id"])
    # Static address and default route via the router only: no 169.254 host route at all.
    guest = cloud.boot_guest(port["id"], configure_ip=True)
    routes = sh("ip", "-4", "route", netns=guest)
    assert "169.254.169.254" not in routes and "default via 10.20.0.1" in routes
    wait_for(lambda: Path(f"/run/netns/qrouter-{router['id']}").exists(), timeout=15)
    meta = cloud.metadata(guest, retries=20)
    assert meta["uuid"] == server["id"]
    # The proxy port itself is not reachable directly, only through the REDIRECT.
    code = (
        "import socket; s = socket.socket(); s.settimeout(2)\n"
        "try:\n    s.connect(('10.20.0.1', 9697)); print('open')\n"
        "except OSError as e:\n    print('blocked', type(e).__name__)\n"
    )
    out = sh("python3", "-c", code, netns=guest)
    assert out.startswith("blocked"), out


def test_overlapping_tenants_each_get_their_own_data(cloud: Cloud) -> None:
    tag = _uid()
    envs = []
    for name in ("a", "b"):
        proj = f"proj-{name}-{tag}"
        proc = cloud.cli_raw("project", "create", proj, *cloud.conf_args())
        assert proc.returncode == 0, proc.stderr
        proc = cloud.cli_raw("user", "create", f"user-{name}-{tag}", "--project", proj,
                             "--password", "pw-" + tag, *cloud.conf_args())
        assert proc.returncode == 0, proc.stderr
        envs.append({**cloud.env, "OS_USERNAME": f"user-{name}-{tag}", "OS_PASSWORD": "pw-" + tag,
                     "OS_PROJECT_NAME": proj})
    tenants = []
    for env in envs:
        net = cloud.cli("network", "create", "same", env=env)
        cloud.cli("subnet", "create", "same-sub", "--network", net["id"], "--subnet-range",
                  "10.0.0.0/24", env=env)
        server = cloud.cli("server", "create", "twin", "--network", net["id"], "--fixed-ip",
                           "10.0.0.5", env=env)
        port = cloud.server_port(server["id"])
        assert port["fixed_ips"][0]["ip_address"] == "10.0.0.5"
        tenants.append((env, net, server, port))

    guests = []
    for _env, _net, server, port in tenants:
        guest = cloud.boot_guest(port["id"])
        assert "169.254.169.254 via" in cloud.dhcp(guest)
        meta = cloud.metadata(guest)
        assert meta["uuid"] == server["id"]
        assert meta["project_id"] == server["tenant_id"]
        guests.append(guest)

    # Now the router path: each tenant attaches a router; guests route metadata via it.
    for (env, net, server, _port), guest in zip(tenants, guests, strict=True):
        router = cloud.cli("router", "create", "edge", env=env)
        subnet_id = net["subnets"][0] if net.get("subnets") else cloud.cli(
            "subnet", "list", "--network", net["id"], env=env)[0]["id"]
        cloud.cli("router", "add", "subnet", router["id"], subnet_id, env=env)
        wait_for(lambda r=router: Path(f"/run/netns/qrouter-{r['id']}").exists(), timeout=15)
        sh("ip", "route", "replace", "169.254.169.254", "via", "10.0.0.1", netns=guest)
        sh("ip", "route", "replace", "default", "via", "10.0.0.1", netns=guest)
        meta = cloud.metadata(guest, retries=20)
        assert meta["uuid"] == server["id"]


def test_cloud_init_openstack_reader_inside_the_guest(cloud: Cloud, tmp_path: Path) -> None:
    tag = _uid()
    cloud.cli("net-create", f"ci-{tag}")
    cloud.cli("subnet-create", "--no-gateway", "--name", f"ci-sub-{tag}", f"ci-{tag}",
              "192.168.50.0/24")
    key = tmp_path / "k.pub"
    key.write_text(_public_key("ci@test") + "\n")
    cloud.cli("keypair", "create", "--public-key", str(key), f"cikey-{tag}")
    user_data = tmp_path / "ud"
    user_data.write_bytes(b"#!/bin/sh\necho cloud-init-e2e\n")
    server = cloud.cli("server", "create", f"ci-vm-{tag}", "--network", f"ci-{tag}",
                       "--user-data", str(user_data), "--key-name", f"cikey-{tag}")
    guest = cloud.boot_guest(cloud.server_port(server["id"])["id"])
    cloud.dhcp(guest)
    cloud.metadata(guest)  # proxy converged
    reader = (
        "import json, base64\n"
        "from cloudinit.sources.helpers import openstack\n"
        "r = openstack.MetadataReader('http://169.254.169.254', timeout=5, retries=2)\n"
        "d = r.read_v2()\n"
        "ud = d.get('userdata') or b''\n"
        "ud = ud.encode() if isinstance(ud, str) else ud\n"
        "print(json.dumps({'uuid': d['metadata']['uuid'], 'hostname': d['metadata']['hostname'],\n"
        "  'keys': d['metadata'].get('public_keys'), 'userdata': base64.b64encode(ud).decode(),\n"
        "  'ec2_instance_id': d.get('ec2-metadata', {}).get('instance-id')}))\n"
    )
    proc = subprocess.run(["ip", "netns", "exec", guest, "/usr/bin/python3", "-c", reader],
                          capture_output=True, text=True, timeout=120, env=_clean_env())
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["uuid"] == server["id"]
    assert got["hostname"].split(".")[0] == f"ci-vm-{tag}"
    assert got["keys"] == {f"cikey-{tag}": key.read_text().strip()}
    assert base64.b64decode(got["userdata"]) == user_data.read_bytes()
    assert got["ec2_instance_id"] and got["ec2_instance_id"].startswith("i-")


def test_churn_reused_ip_answers_for_the_new_instance(cloud: Cloud) -> None:
    tag = _uid()
    cloud.cli("net-create", f"ch-{tag}")
    cloud.cli("subnet-create", "--no-gateway", "--name", f"ch-sub-{tag}", f"ch-{tag}",
              "192.168.60.0/24")
    first = cloud.cli("server", "create", f"old-{tag}", "--network", f"ch-{tag}", "--fixed-ip",
                      "192.168.60.50")
    guest = cloud.boot_guest(cloud.server_port(first["id"])["id"])
    cloud.dhcp(guest)
    assert cloud.metadata(guest)["uuid"] == first["id"]

    cloud.cli_raw("server", "delete", first["id"])
    second = cloud.cli("server", "create", f"new-{tag}", "--network", f"ch-{tag}",
                       "--fixed-ip", "192.168.60.50")
    assert second["id"] != first["id"]
    # The guest keeps its address; the very first answer after the boot must be the new owner
    # (the port index and the document cache follow the change feed, no TTL).
    status, body = cloud.fetch(guest, "/openstack/latest/meta_data.json")
    assert status == 200, body
    assert json.loads(body)["uuid"] == second["id"]


def test_ctrl_c_stops_every_child_and_a_second_start_reuses_the_state(cloud: Cloud) -> None:
    conf = cloud.state / "openimds.conf"
    assert conf.stat().st_mode & 0o777 == 0o600
    assert (cloud.state / "openrc").stat().st_mode & 0o777 == 0o600
    before_conf = conf.read_bytes()
    networks_before = {n["id"] for n in cloud.cli("network", "list")}
    children = cloud.children()
    assert len(children) == 5  # control-api, metadata-api, metadata-agent, dhcp-agent, l3-agent
    cloud.stop()  # SIGINT, like Ctrl-C
    for pid in children:
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text()
    cloud.start()
    assert conf.read_bytes() == before_conf
    assert {n["id"] for n in cloud.cli("network", "list")} == networks_before
