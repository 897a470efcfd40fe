"""Real clients against a loopback server: cloud-init 22.4.2 (OpenStack reader, EC2 helpers)
and botocore's IMDS fetcher, in both identification modes.

Safety (real-clients.md): each client runs in a subprocess whose first act is a guard that
makes any non-loopback connect, sendto or name lookup raise before a packet leaves, and that
refuses non-loopback URLs in cloud-init's url helper. Proxy variables are removed. cloud-init's
OpenStack reader crawls http://169.254.169.254 regardless of its base URL in 22.4.2; the
runner points that crawl at the test server, and the guard would refuse it otherwise (checked).

Proxy mode runs behind a minimal signer (what the metadata agent does: it adds X-Instance-ID,
X-Tenant-ID, the signature and X-Forwarded-For); direct mode gives the instance a loopback
address, since the clients connect from 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from openimds.metadata.aws import AwsProfile
from openimds.metadata.gate import TOKEN_HEADER, TTL_HEADER
from openimds.metadata.identify import IdentifySettings
from openimds.metadata.respond import Responder, RespondSettings
from openimds.metadata.source import DictSource
from openimds.metadata.tree import VendordataOptions
from openimds.metadata.view import FixedIPView, InstanceView, PortView, SubnetView
from openimds.wire import sign_instance_id
from tests.metadata.fixtures import KEY, PORT_VIEW_A, SECRET, UUID_A, full_view
from tests.metadata.servers import HTTP_SERVERS, start_metadata

SYSTEM_PYTHON = "/usr/bin/python3"

GUARD = textwrap.dedent(
    """
    import ipaddress, socket, sys
    REFUSED = []

    def _loopback(host):
        try:
            return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
        except ValueError:
            return False

    def _check(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6) and not _loopback(address[0]):
            REFUSED.append(address[0])
            raise ConnectionRefusedError(f"test guard: {address[0]} is not loopback")

    _connect, _connect_ex, _sendto = socket.socket.connect, socket.socket.connect_ex, socket.socket.sendto

    def connect(self, address):
        _check(self, address)
        return _connect(self, address)

    def connect_ex(self, address):
        _check(self, address)
        return _connect_ex(self, address)

    def sendto(self, data, *args):
        _check(self, args[-1])
        return _sendto(self, data, *args)

    socket.socket.connect, socket.socket.connect_ex, socket.socket.sendto = connect, connect_ex, sendto
    _getaddrinfo = socket.getaddrinfo

    def getaddrinfo(host, *args, **kw):
        # No DNS query may leave either: only literal loopback names resolve.
        if host not in (None, "localhost") and not _loopback(host):
            REFUSED.append(host)
            raise socket.gaierror(f"test guard: will not resolve {host}")
        return _getaddrinfo(host, *args, **kw)

    socket.getaddrinfo = getaddrinfo
    """
)

CLOUDINIT_GUARD = textwrap.dedent(
    """
    from urllib.parse import urlparse
    from cloudinit import url_helper
    _readurl = url_helper.readurl

    def readurl(url, *args, **kw):
        host = urlparse(url).hostname
        if not _loopback(host):
            REFUSED.append(host)
            raise url_helper.UrlError(ConnectionRefusedError("test guard"), url=url)
        return _readurl(url, *args, **kw)

    url_helper.readurl = readurl
    """
)

OPENSTACK_SCRIPT = textwrap.dedent(
    """
    import json
    from cloudinit.sources.helpers import ec2, openstack
    base = sys.argv[1]

    # The guard must hold: this is the crawl 22.4.2 sends to 169.254.169.254 by default.
    try:
        url_helper.readurl("http://169.254.169.254/latest/meta-data/", timeout=1, retries=0)
        raise SystemExit("guard failed")
    except url_helper.UrlError:
        pass
    assert REFUSED == ["169.254.169.254"], REFUSED

    _crawl = ec2.get_instance_metadata
    ec2.get_instance_metadata = lambda *a, **kw: _crawl(*a, **{**kw, "metadata_address": base})
    reader = openstack.MetadataReader(base, timeout=5, retries=0)
    result = reader.read_v2()
    macs = {l["ethernet_mac_address"]: f"eth{i}" for i, l in enumerate(result["networkdata"]["links"])}
    net = openstack.convert_net_json(result["networkdata"], known_macs=macs)
    ud = result["userdata"]
    print(json.dumps({
        "version": result.get("version"),
        "metadata": result["metadata"],
        "userdata": ud.decode("latin-1") if isinstance(ud, bytes) else ud,
        "vendordata": result.get("vendordata"),
        "vendordata2": result.get("vendordata2"),
        "networkdata": result["networkdata"],
        "net": net,
        "ec2": result["ec2-metadata"],
        "refused": REFUSED,
    }, default=lambda b: "bytes:" + b.decode("latin-1")))
    """
)

EC2_SCRIPT = textwrap.dedent(
    """
    import json
    from cloudinit.sources.helpers import ec2
    base = sys.argv[1]
    md = ec2.get_instance_metadata(api_version="2009-04-04", metadata_address=base, retries=0)
    ud = ec2.get_instance_userdata(api_version="2009-04-04", metadata_address=base, retries=0)
    print(json.dumps({
        "md": md,
        "ud": ud.decode("latin-1") if isinstance(ud, bytes) else ud,
        "refused": REFUSED,
    }, default=lambda b: "bytes:" + b.decode("latin-1")))
    """
)

BOTOCORE_SCRIPT = textwrap.dedent(
    """
    import json
    import botocore.session
    from botocore.utils import IMDSFetcher, IMDSRegionProvider

    session = botocore.session.get_session()
    region = IMDSRegionProvider(session).provide()

    class InstanceIdFetcher(IMDSFetcher):
        def instance_id(self):
            token = self._fetch_metadata_token()
            resp = self._get_request("latest/meta-data/instance-id", self._default_retry, token)
            return resp.text

    config = {"ec2_metadata_service_endpoint": session.get_config_variable(
        "ec2_metadata_service_endpoint")}
    fetcher = InstanceIdFetcher(timeout=2, num_attempts=1, config=config)
    zone = fetcher._get_request(
        "latest/meta-data/placement/availability-zone/", fetcher._default_retry, None
    ).text
    print(json.dumps({
        "region": region,
        "instance_id": fetcher.instance_id(),
        "zone": zone,
        "base": fetcher.get_base_url(),
        "refused": REFUSED,
    }, default=lambda b: "bytes:" + b.decode("latin-1")))
    """
)

# botocore's region is the availability zone minus its last character ("fake-az" → "fake-a"),
# so a cloud that wants botocore to find its region names zones <region><letter>.
REGION = "fake-a"

LOOP_SUBNET = SubnetView(id="lo", cidr="127.0.0.0/8", ip_version=4, enable_dhcp=True)
LOOP_PORT = PortView(
    id="7e57aaaa-0000-4000-8000-000000000001",
    mac_address="fa:16:3e:7e:57:01",
    network_id="net-lo",
    mtu=1500,
    fixed_ips=(FixedIPView("127.0.0.1", LOOP_SUBNET),),
)


def client_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env.pop("PYTHONPATH", None)
    env.update(extra)
    return env


async def run_client(python: str, script: str, base: str, **env: str) -> dict:
    proc = await asyncio.create_subprocess_exec(
        python,
        "-c",
        script,
        base,
        env=client_env(**env),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
    assert proc.returncode == 0, err.decode()[-3000:]
    return json.loads(out.decode().strip().splitlines()[-1])


async def _site(app: web.Application) -> tuple[web.BaseRunner, str]:
    runner: web.BaseRunner = (
        web.ServerRunner(app)
        if isinstance(app, web.Server)
        else web.AppRunner(app, access_log=None)
    )
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}"


def signer_app(upstream: str, view: InstanceView) -> web.Application:
    """What the metadata agent does for a known port: sign and forward (pooled connections)."""
    session_holder: dict[str, aiohttp.ClientSession] = {}

    async def forward(request: web.Request) -> web.StreamResponse:
        session = session_holder["s"]
        headers = {
            "X-Forwarded-For": request.remote or "",
            "X-Instance-ID": view.uuid,
            "X-Tenant-ID": view.project_id,
            "X-Instance-ID-Signature": sign_instance_id(SECRET, view.uuid),
        }
        # As the agent does: the guest's session-token headers pass through.
        for name in (TOKEN_HEADER, TTL_HEADER):
            if name in request.headers:
                headers[name] = request.headers[name]
        body = await request.read()
        async with session.request(
            request.method, upstream + request.raw_path, headers=headers, data=body or None
        ) as resp:
            payload = await resp.read()
            out = {"Content-Type": resp.headers.get("Content-Type", "text/plain")}
            if TTL_HEADER in resp.headers:
                out[TTL_HEADER] = resp.headers[TTL_HEADER]
            return web.Response(status=resp.status, body=payload, headers=out)

    async def open_(app: web.Application) -> None:
        session_holder["s"] = aiohttp.ClientSession(auto_decompress=False)

    async def close(app: web.Application) -> None:
        await session_holder["s"].close()

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", forward)
    app.on_startup.append(open_)
    app.on_cleanup.append(close)
    return app


@pytest.fixture(params=[(m, k) for m in ("proxy", "direct") for k in HTTP_SERVERS],
                ids=lambda p: "-".join(p))
async def base_url(request: pytest.FixtureRequest) -> AsyncIterator[str]:
    mode, kind = request.param
    view = full_view(ports=(PORT_VIEW_A, LOOP_PORT)) if mode == "direct" else full_view()
    settings = RespondSettings(
        identify=IdentifySettings(service_metadata_proxy=mode == "proxy", shared_secret=SECRET),
        vendordata=VendordataOptions(("StaticJSON",), {"cloud-init": "#cloud-config\n{}\n"}),
        aws=AwsProfile(region=REGION),
    )
    port, stop = await start_metadata(kind, Responder(DictSource([view]), settings))
    api = f"http://127.0.0.1:{port}"
    runners = []
    base = api
    if mode == "proxy":
        signer, base = await _site(signer_app(api, view))
        runners.append(signer)
    try:
        yield base
    finally:
        for r in reversed(runners):
            await r.cleanup()
        await stop()


@pytest.fixture(scope="module")
def cloudinit_python() -> str:
    """The system python with Debian's cloud-init; required (not skipped) under CI=true."""
    ok = Path(SYSTEM_PYTHON).exists() and (
        subprocess.run([SYSTEM_PYTHON, "-c", "import cloudinit"], capture_output=True).returncode
        == 0
    )
    if not ok:
        reason = f"{SYSTEM_PYTHON} cannot import cloudinit (apt-get install cloud-init)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(reason)
        pytest.skip(reason)
    return SYSTEM_PYTHON


async def test_cloud_init_openstack_reader(base_url: str, cloudinit_python: str) -> None:
    got = await run_client(cloudinit_python, GUARD + CLOUDINIT_GUARD + OPENSTACK_SCRIPT, base_url)
    assert got["version"] == 2  # the reader's result format
    md = got["metadata"]
    assert md["uuid"] == UUID_A and md["public_keys"] == {"key": KEY}
    assert md["hostname"] == "test.novalocal"
    assert got["userdata"] == "#!/bin/sh\necho hi\n\x00\xff"
    assert got["vendordata"] == {"cloud-init": "#cloud-config\n{}\n"}
    assert got["vendordata2"] == {"static": {"cloud-init": "#cloud-config\n{}\n"}}
    assert got["networkdata"]["links"][0]["vif_id"] == PORT_VIEW_A.id
    configs = {c.get("name"): c for c in got["net"]["config"] if c.get("type") == "physical"}
    eth0 = configs["eth0"]
    assert eth0["mac_address"] == "fa:16:3e:9c:bf:3d" and eth0["mtu"] == 1450
    assert {s["type"] for s in eth0["subnets"]} == {"static", "ipv6_slaac"}
    # The EC2 crawl, pointed at us, walked the whole tree (every listed entry was fetchable).
    ec2 = got["ec2"]
    assert ec2["instance-id"] == "i-00000001"
    assert ec2["public-keys"] == {"key": KEY}
    # The AWS profile (the default) adds the region keys to placement.
    assert ec2["placement"] == {"availability-zone": "fake-az", "region": REGION,
                                "availability-zone-id": f"{REGION}-fake-az"}
    assert ec2["block-device-mapping"]["root"] == "/dev/sda1"
    assert got["refused"] == ["169.254.169.254"]


async def test_cloud_init_ec2_helpers(base_url: str, cloudinit_python: str) -> None:
    got = await run_client(cloudinit_python, GUARD + CLOUDINIT_GUARD + EC2_SCRIPT, base_url)
    md = got["md"]
    assert md["instance-id"] == "i-00000001"
    assert md["ami-id"] == "ami-00000001"
    assert md["local-ipv4"] == "10.0.0.5"
    assert md["security-groups"] == ["default", "web"]
    assert md["placement"]["availability-zone"] == "fake-az"
    assert got["ud"] == "#!/bin/sh\necho hi\n\x00\xff"
    assert got["refused"] == []


async def test_botocore_imds_fetcher(base_url: str) -> None:
    got = await run_client(
        sys.executable,
        GUARD + BOTOCORE_SCRIPT,
        base_url,
        AWS_EC2_METADATA_SERVICE_ENDPOINT=base_url + "/",
        AWS_CONFIG_FILE="/dev/null",
        AWS_SHARED_CREDENTIALS_FILE="/dev/null",
    )
    assert got["base"] == base_url + "/"
    # IMDSv2: botocore gets a token (PUT /latest/api/token) and sends it.
    assert got["instance_id"] == "i-00000001"
    assert got["zone"] == "fake-az"
    assert got["region"] == "fake-a"
    assert got["refused"] == []
