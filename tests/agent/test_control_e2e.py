"""The agent against the real control-plane API (SQLite inventory), and the real command.

The control plane and the metadata API stand-in run in the test's event loop on 127.0.0.1; the
agent runs in-process (ControlFeed) or as `openimds metadata-agent` in its own process.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from sqlalchemy import select

from openimds.agent.control_feed import ControlFeed
from openimds.control import auth
from openimds.control.app import build_app
from openimds.control.call import Settings
from openimds.control.client import ControlClient
from openimds.inventory.migrate import open_store
from openimds.inventory.models import Instance, Port, Project

from .harness import RunningAgent, StubUpstream, free_port, settings_for

SECRET = "S3cr3t!"
SERVICE_PW = "agent-pw"
REPO = Path(__file__).resolve().parents[2]


class ControlPlane:
    def __init__(self, tmp: Path) -> None:
        self.store = open_store(f"sqlite:///{tmp / 'inventory.sqlite'}")
        auth.bootstrap(self.store, "admin-pw")
        auth.create_project(self.store, "service", exist_ok=True)
        auth.create_user(self.store, "neutron", SERVICE_PW, "service", "service")
        self.port = free_port()
        self.runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        # The server's shutdown waits for in-flight long polls: keep them short here.
        settings = Settings(bind_port=self.port, max_changes_timeout=1.0)
        self.runner = web.AppRunner(build_app(self.store, settings))
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    def admin(self) -> ControlClient:
        return ControlClient(self.url + "/v3", "admin", "admin-pw", "admin")


async def make_network(api: ControlClient, cidr: str) -> tuple[str, str]:
    net = await api.create("networks", {"name": cidr})
    sub = await api.create("subnets", {"network_id": net["id"], "cidr": cidr, "ip_version": 4})
    return net["id"], sub["id"]


async def make_vm_port(api: ControlClient, net: str, ip: str, vm: str) -> dict[str, Any]:
    return await api.create("ports", {"network_id": net, "fixed_ips": [{"ip_address": ip}],
                                      "device_id": vm, "device_owner": "compute:nova"})


@pytest.fixture
async def control(tmp_path: Path) -> AsyncIterator[ControlPlane]:
    cp = ControlPlane(tmp_path)
    await cp.start()
    yield cp
    await cp.stop()


@pytest.fixture
async def upstream() -> AsyncIterator[StubUpstream]:
    up = StubUpstream(SECRET)
    await up.start()
    yield up
    await up.stop()


def agent_settings(tmp: Path, control: ControlPlane, upstream: StubUpstream) -> Any:
    base = settings_for(tmp, [upstream.url], SECRET)
    # The seed's REST-era form: a /v2.0 auth_url, tenant "service", user "neutron".
    return replace(base, auth_url=control.url + "/v2.0", username="neutron",
                   password=SERVICE_PW, project_name="service")


async def instance_of(agent: RunningAgent, ip: str, *, network: str | None = None,
                      router: str | None = None) -> tuple[int, str | None]:
    r = await agent.request(xff=[ip], network=[network] if network else [],
                            router=[router] if router else [])
    return r.status, (json.loads(r.body)["instance"] if r.status == 200 else None)


async def test_real_control_plane(tmp_path: Path, control: ControlPlane,
                                  upstream: StubUpstream) -> None:
    async with control.admin() as api:
        net_a, sub_a = await make_network(api, "10.0.0.0/24")
        net_b, sub_b = await make_network(api, "10.0.0.0/24")
        net_c, sub_c = await make_network(api, "10.1.0.0/24")
        pa = await make_vm_port(api, net_a, "10.0.0.5", "vm-a")
        await make_vm_port(api, net_b, "10.0.0.5", "vm-b")
        await make_vm_port(api, net_c, "10.1.0.7", "vm-c")
        router = (await api.create("routers", {"name": "r"}))["id"]
        await api.router_interface(router, "add", subnet_id=sub_a)
        await api.router_interface(router, "add", subnet_id=sub_c)
        empty_router = (await api.create("routers", {"name": "empty"}))["id"]

        settings = agent_settings(tmp_path, control, upstream)
        feed = ControlFeed.from_settings(settings)
        async with RunningAgent(settings, feed) as agent:
            await agent.wait_ready()
            # overlap: each network's 10.0.0.5 is its own instance; the router sees a and c
            assert await instance_of(agent, "10.0.0.5", network=net_a) == (200, "vm-a")
            assert await instance_of(agent, "10.0.0.5", network=net_b) == (200, "vm-b")
            assert await instance_of(agent, "10.0.0.5", router=router) == (200, "vm-a")
            assert await instance_of(agent, "10.1.0.7", router=router) == (200, "vm-c")
            assert (await instance_of(agent, "10.0.0.5", router=empty_router))[0] == 404
            # the router's own interface port and the DHCP port are not instances
            assert (await instance_of(agent, "10.0.0.1", router=router))[0] == 404
            dhcp = [p for p in await api.list("ports", network_id=net_a)
                    if p["device_owner"] == "network:dhcp"]
            if dhcp:
                ip = dhcp[0]["fixed_ips"][0]["ip_address"]
                assert (await instance_of(agent, ip, network=net_a))[0] == 404

            # churn: delete the port, reuse its address for another instance
            await api.delete("ports", pa["id"])
            t0 = time.monotonic()
            while (await instance_of(agent, "10.0.0.5", network=net_a))[0] != 404:
                assert time.monotonic() - t0 < 2, "deleted port still resolves"
                await asyncio.sleep(0.01)
            await make_vm_port(api, net_a, "10.0.0.5", "vm-new")
            t0 = time.monotonic()
            while await instance_of(agent, "10.0.0.5", network=net_a) != (200, "vm-new"):
                assert time.monotonic() - t0 < 2, "new owner not visible"
                await asyncio.sleep(0.01)

            # detaching an interface removes the router's view of that network
            await api.router_interface(router, "remove", subnet_id=sub_c)
            t0 = time.monotonic()
            while (await instance_of(agent, "10.1.0.7", router=router))[0] != 404:
                assert time.monotonic() - t0 < 2, "detached network still reachable"
                await asyncio.sleep(0.01)

            # control plane lost: still serving; changes made meanwhile land after it returns
            await control.stop()
            await asyncio.sleep(0.3)
            assert await instance_of(agent, "10.0.0.5", network=net_b) == (200, "vm-b")
            health = json.loads((await agent.request("/healthz")).body)
            assert health["ready"] is True
            assert health["control_plane_connected"] is False
            vm_b_port = [p for p in await _store_ports(control) if p["device_id"] == "vm-b"][0]
            await control.start()
            await api.delete("ports", vm_b_port["id"])
            t0 = time.monotonic()
            while (await instance_of(agent, "10.0.0.5", network=net_b))[0] != 404:
                assert time.monotonic() - t0 < 20, "no resync after the control plane returned"
                await asyncio.sleep(0.05)


async def _store_ports(control: ControlPlane) -> list[dict[str, Any]]:
    # The API is down in the caller; read the ports through the store's own session instead.
    with control.store.session() as s:
        return [{"id": p.id, "device_id": p.device_id} for p in s.scalars(select(Port))]


def _write_ini(tmp: Path, control: ControlPlane, upstream: StubUpstream, workers: int) -> Path:
    ini = tmp / "metadata_agent.ini"
    ini.write_text(
        "[DEFAULT]\n"
        f"auth_url = {control.url}/v2.0\n"
        "auth_region = RegionOne\n"
        "admin_tenant_name = service\n"
        "admin_user = neutron\n"
        f"admin_password = {SERVICE_PW}\n"
        "nova_metadata_ip = 127.0.0.1\n"
        f"nova_metadata_port = {upstream.port}\n"
        f"metadata_proxy_shared_secret = {SECRET}\n"
        f"state_path = {tmp}\n"
        f"metadata_workers = {workers}\n"
        "metadata_proxy_socket_mode = group\n"
        "metadata_backlog = 1000\n")
    return ini


@pytest.mark.parametrize("workers", [1, 2])
async def test_command_serves_and_stops_cleanly(tmp_path: Path, control: ControlPlane,
                                                upstream: StubUpstream, workers: int) -> None:
    async with control.admin() as api:
        net, _ = await make_network(api, "10.0.0.0/24")
        await make_vm_port(api, net, "10.0.0.5", "vm-a")
    ini = _write_ini(tmp_path, control, upstream, workers)
    sock = tmp_path / "metadata_proxy"
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    proc = subprocess.Popen([sys.executable, "-m", "openimds", "metadata-agent",
                             "--config-file", str(ini)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        conn = aiohttp.UnixConnector(path=str(sock))
        async with aiohttp.ClientSession(connector=conn) as http:
            deadline = time.monotonic() + 15
            while True:
                assert proc.poll() is None, proc.stdout.read().decode()  # type: ignore[union-attr]
                try:
                    async with http.get("http://agent/healthz") as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                assert time.monotonic() < deadline, "agent never became ready"
                await asyncio.sleep(0.05)
            assert oct(os.stat(sock).st_mode & 0o777) == oct(0o664)
            # The listen queue is metadata_backlog, not the HTTP library's default of 128.
            listing = subprocess.run(["ss", "-xlnH"], capture_output=True, text=True,
                                     check=True).stdout
            queues = {f[4]: int(f[3]) for f in (line.split() for line in listing.splitlines())
                      if len(f) > 4}
            assert queues[str(sock)] == 1000, listing
            for _ in range(4):  # several requests, so more than one worker may answer
                async with http.get("http://agent/latest/meta-data/", headers={
                        "X-Forwarded-For": "10.0.0.5", "X-Neutron-Network-ID": net}) as r:
                    assert r.status == 200
                    assert json.loads(await r.read())["instance"] == "vm-a"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            out = proc.communicate(timeout=15)[0].decode()
        except subprocess.TimeoutExpired:
            proc.kill()
            out = proc.communicate()[0].decode()
    assert proc.returncode == 0, out
    assert "Traceback" not in out, out
    assert not sock.exists()


def test_command_rejects_missing_credentials(tmp_path: Path) -> None:
    ini = tmp_path / "metadata_agent.ini"
    ini.write_text(f"[DEFAULT]\nstate_path = {tmp_path}\n")
    proc = subprocess.run([sys.executable, "-m", "openimds", "metadata-agent",
                           "--config-file", str(ini)], cwd=REPO, capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode == 2
    assert "auth_url" in proc.stderr and "admin_password" in proc.stderr


async def test_full_chain_with_real_metadata_api(tmp_path: Path, control: ControlPlane) -> None:
    """control-plane API + `openimds metadata-api` (a process) + the agent: the real chain."""
    user_data = gzip.compress(b"#cloud-config\nhostname: chained\n")
    with control.store.session() as s:
        admin_project = s.scalars(select(Project).where(Project.name == "admin")).one().id
        inst = Instance(name="chained", hostname="chained", project_id=admin_project,
                        availability_zone="nova", user_data=user_data)
        s.add(inst)
        s.flush()
        vm_uuid = inst.uuid
    async with control.admin() as api:
        net, _ = await make_network(api, "10.0.0.0/24")
        other, _ = await make_network(api, "10.0.0.0/24")
        await make_vm_port(api, net, "10.0.0.5", vm_uuid)

    md_port, metrics_port = free_port(), free_port()
    nova = tmp_path / "nova.conf"
    nova.write_text(
        "[DEFAULT]\nmetadata_listen = 127.0.0.1\n"
        f"metadata_listen_port = {md_port}\nmetadata_workers = 1\n"
        f"metrics_listen_port = {metrics_port}\nstate_path = {tmp_path}\n"
        f"[database]\nconnection = sqlite:///{tmp_path / 'inventory.sqlite'}\n"
        f"[neutron]\nservice_metadata_proxy = true\nmetadata_proxy_shared_secret = {SECRET}\n")
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    md = subprocess.Popen([sys.executable, "-m", "openimds", "metadata-api", "--config-file",
                           str(nova)], cwd=REPO, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while True:
            assert md.poll() is None, md.stdout.read().decode()  # type: ignore[union-attr]
            try:
                _r, w = await asyncio.open_connection("127.0.0.1", md_port)
                w.close()
                break
            except OSError:
                assert time.monotonic() < deadline, "metadata-api did not start"
                await asyncio.sleep(0.1)
        up = StubUpstream(SECRET, md_port)  # only for its URL; the real API answers
        settings = agent_settings(tmp_path, control, up)
        async with RunningAgent(settings, ControlFeed.from_settings(settings)) as agent:
            await agent.wait_ready()
            r = await agent.request("/openstack/latest/meta_data.json", xff=["10.0.0.5"],
                                    network=[net])
            assert r.status == 200, r.body
            assert json.loads(r.body)["uuid"] == vm_uuid
            r = await agent.request("/openstack/latest/user_data", xff=["10.0.0.5"],
                                    network=[net])
            assert r.status == 200 and r.body == user_data
            r = await agent.request("/latest/meta-data/instance-id", xff=["10.0.0.5"],
                                    network=[net])
            assert r.status == 200 and r.body.startswith(b"i-")
            r = await agent.request("/openstack/latest/meta_data.json", xff=["10.0.0.5"],
                                    network=[other])
            assert r.status == 404
            r = await agent.request("/openstack/2013-04-04/password", method="POST",
                                    body=b"sekrit", xff=["10.0.0.5"], network=[net])
            assert r.status == 200, r.body
            r = await agent.request("/openstack/2013-04-04/password", xff=["10.0.0.5"],
                                    network=[net])
            assert r.body == b"sekrit"
        # A wrong secret: the real API says 403 and the agent relays it.
        bad = replace(settings, shared_secret="SECRETE_KEY")
        async with RunningAgent(bad, ControlFeed.from_settings(bad)) as agent:
            await agent.wait_ready()
            r = await agent.request("/openstack/latest/meta_data.json", xff=["10.0.0.5"],
                                    network=[net])
            assert r.status == 403
    finally:
        md.send_signal(signal.SIGTERM)
        try:
            md.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            md.kill()
            md.communicate()


async def test_a_pruned_feed_is_a_gap_that_the_index_recovers_from(
        tmp_path: Path, control: ControlPlane, upstream: StubUpstream) -> None:
    from openimds.agent.feed import FeedGap
    from openimds.inventory.retention import Retention

    async with control.admin() as api:
        net, _ = await make_network(api, "10.2.0.0/24")
        await make_vm_port(api, net, "10.2.0.5", "vm-old")
        settings = agent_settings(tmp_path, control, upstream)
        feed = ControlFeed.from_settings(settings)
        try:
            control.store.prune_changes(Retention(max_age_seconds=0, max_count=1))
            with pytest.raises(FeedGap, match="pruned"):
                await feed.changes(since=0, timeout=0)
            # The agent's sync loop starts from a snapshot and keeps following the feed.
            async with RunningAgent(settings, feed) as agent:
                await agent.wait_ready()
                assert await instance_of(agent, "10.2.0.5", network=net) == (200, "vm-old")
                await make_vm_port(api, net, "10.2.0.6", "vm-new")
                for _ in range(100):
                    if (await instance_of(agent, "10.2.0.6", network=net))[0] == 200:
                        break
                    await asyncio.sleep(0.05)
                assert await instance_of(agent, "10.2.0.6", network=net) == (200, "vm-new")
        finally:
            await feed.aclose()


async def test_the_snapshot_keeps_only_what_the_index_reads(
        tmp_path: Path, control: ControlPlane, upstream: StubUpstream) -> None:
    """Issue 14 (agent RSS at 100k ports): the listing asks Neutron `fields` for the index's
    attributes and makes index entries page by page; they equal the entries made from the
    whole ports."""
    from openimds.agent.feed import INDEX_LISTING
    from openimds.agent.index import PortEntry
    from openimds.feed import Kind

    async with control.admin() as api:
        net, _ = await make_network(api, "10.0.0.0/24")
        for i in range(3):
            await make_vm_port(api, net, f"10.0.0.{10 + i}", f"vm-{i}")
        whole = await api.list("ports", page_size=2)
        feed = ControlFeed.from_settings(agent_settings(tmp_path, control, upstream))
        try:
            snap = await feed.listing(INDEX_LISTING)
        finally:
            await feed.aclose()
    assert all(isinstance(p, PortEntry) for p in snap.of(Kind.PORT))
    assert list(snap.of(Kind.PORT)) == [PortEntry.from_api(p) for p in whole]
    assert len(whole) == 4  # three instance ports and the DHCP port
