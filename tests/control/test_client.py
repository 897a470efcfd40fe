"""The agents' HTTP client against a real loopback server."""

from __future__ import annotations

import asyncio
import socket
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from sqlalchemy import delete, func, select

from openimds.agent.control_feed import ControlFeed, MissingCredentials
from openimds.agent.feed import INDEX_LISTING
from openimds.agent.settings import AgentSettings
from openimds.cli.network_agents_cmd import _client as agents_client
from openimds.config import load_config
from openimds.control.app import build_app
from openimds.control.call import Settings
from openimds.control.client import ApiConnectionError, ApiError, ControlClient, control_client
from openimds.control.tls import client_ssl_context
from openimds.feed import Kind
from openimds.inventory.models import Token, User
from openimds.inventory.store import Store

from .conftest import PASSWORD, Api


def base(api: Api) -> str:
    return str(api.client.make_url("")).rstrip("/")


def tokens_of(store: Store, user: str) -> int:
    with store.read() as s:
        uid = s.scalars(select(User.id).where(User.name == user)).one()
        return int(s.scalar(select(func.count()).select_from(Token)
                            .where(Token.user_id == uid)) or 0)


@pytest.mark.parametrize("suffix", ["/v2.0", "/v3", ""])
async def test_client_authenticates_lists_and_caches_its_token(api: Api, store: Store,
                                                               suffix: str) -> None:
    before = tokens_of(store, "neutron")  # the fixture's own login
    async with ControlClient(base(api) + suffix, "neutron", PASSWORD, "service") as client:
        assert await client.list("networks") == []
        net = await client.create("networks", {"name": "n"})
        await client.create("subnets", {"network_id": net["id"], "cidr": "10.0.0.0/24"})
        ports = await client.list("ports", network_id=net["id"],
                                  fixed_ips="ip_address=10.0.0.2")
        assert [p["device_owner"] for p in ports] == ["network:dhcp"]
        assert (await client.get("networks", net["id"]))["name"] == "n"
        assert await client.list("ports", fixed_ips=["ip_address=10.0.0.99"]) == []
    # Six calls, one token.
    assert tokens_of(store, "neutron") == before + 1


async def test_client_reauthenticates_once_on_401(api: Api, store: Store) -> None:
    async with ControlClient(base(api) + "/v2.0", "neutron", PASSWORD, "service") as client:
        await client.list("networks")
        first = client.token
        with store.session() as s:
            s.execute(delete(Token))  # e.g. the server's tokens were revoked
        assert await client.list("routers") == []
        assert client.token != first


async def test_client_errors_carry_the_server_message(api: Api) -> None:
    async with ControlClient(base(api), "alice", PASSWORD, "a") as client:
        with pytest.raises(ApiError) as info:
            await client.get("networks", "missing")
        assert info.value.status == 404 and info.value.type == "NetworkNotFound"
        with pytest.raises(ApiError) as info:
            await client.changes(0)
        assert info.value.status == 403
    async with ControlClient(base(api), "alice", "wrong", "a") as client:
        with pytest.raises(ApiError) as info:
            await client.list("networks")
        assert info.value.status == 401
    async with ControlClient("http://127.0.0.1:1", "alice", PASSWORD, "a",
                             timeout=2) as client:
        with pytest.raises(ApiConnectionError):
            await client.list("networks")


async def test_client_change_feed_watch(api: Api) -> None:
    async with ControlClient(base(api) + "/v2.0", "neutron", PASSWORD, "service") as watcher, \
            ControlClient(base(api), "alice", PASSWORD, "a") as alice:
        start = (await watcher.changes(0, limit=0)).current_revision
        waiting = asyncio.create_task(watcher.changes(start, timeout=10))
        await asyncio.sleep(0.2)
        net = await alice.create("networks", {"name": "watched"})
        page = await asyncio.wait_for(waiting, 5)
        assert [c["resource_id"] for c in page.changes] == [net["id"]]
        assert page.revision == start + 1


async def test_client_servers_and_keypairs(api: Api) -> None:
    async with ControlClient(base(api), "alice", PASSWORD, "a") as client:
        net = await client.create("networks", {"name": "n"})
        await client.create("subnets", {"network_id": net["id"], "cidr": "10.0.0.0/24"})
        srv = await client.create("servers", {"name": "vm", "networks": [{"uuid": net["id"]}]})
        listed = await client.list("servers")
        assert [s["id"] for s in listed] == [srv["id"]]
        assert listed[0]["addresses"]["n"][0]["addr"] == "10.0.0.3"
        await client.delete("servers", srv["id"])
        assert await client.list("servers") == []
        assert await client.list("keypairs") == []


# ---- https: the TLS context and the agents' one construction path ----------------------------


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (its own CA) and its key."""
    folder = tmp_path_factory.mktemp("tls")
    crt, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(crt), "-days", "2",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=60)
    return crt, key


@dataclass
class HttpsApi:
    url: str
    cafile: str


@pytest.fixture
async def https_api(store: Store, users: dict[str, str], settings: Settings,
                    cert: tuple[Path, Path]) -> AsyncIterator[HttpsApi]:
    """The real control-plane app served over https with the self-signed certificate."""
    import ssl

    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(str(cert[0]), str(cert[1]))
    runner = web.AppRunner(build_app(store, settings))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_ctx)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield HttpsApi(f"https://127.0.0.1:{port}", str(cert[0]))
    finally:
        await runner.cleanup()


async def test_ca_file_is_honoured(https_api: HttpsApi) -> None:
    ca = client_ssl_context(False, https_api.cafile)
    async with ControlClient(https_api.url + "/v3", "neutron", PASSWORD, "service",
                             ssl_context=ca) as client:
        assert await client.list("networks") == []
    # Without the CA file the system CAs do not know the certificate.
    async with ControlClient(https_api.url, "neutron", PASSWORD, "service", timeout=10,
                             ssl_context=client_ssl_context(False, None)) as client:
        with pytest.raises(ApiConnectionError, match="(?i)certificate"):
            await client.list("networks")
    # auth_insecure skips verification (a CA file, if named, is not even read).
    async with ControlClient(https_api.url, "neutron", PASSWORD, "service",
                             ssl_context=client_ssl_context(True, "/nonexistent")) as client:
        assert await client.list("networks") == []


def test_client_ssl_context_rules(cert: tuple[Path, Path]) -> None:
    import ssl

    strict = client_ssl_context(False, None)
    assert strict.verify_mode == ssl.CERT_REQUIRED and strict.check_hostname
    loose = client_ssl_context(True, None)
    assert loose.verify_mode == ssl.CERT_NONE and not loose.check_hostname
    with pytest.raises(FileNotFoundError):
        client_ssl_context(False, "/nonexistent/ca.pem")
    # A client certificate only with both halves (the self-signed pair serves as one).
    client_ssl_context(False, str(cert[0]), str(cert[0]), str(cert[1]))
    client_ssl_context(False, None, str(cert[0]), None)  # key missing: not loaded, no error


async def test_agents_https_client_is_closed(https_api: HttpsApi, tmp_path: Path) -> None:
    ini = tmp_path / "dhcp_agent.ini"
    ini.write_text(f"[DEFAULT]\nauth_url = {https_api.url}/v2.0\nadmin_user = neutron\n"
                   f"admin_password = {PASSWORD}\nadmin_tenant_name = service\n"
                   f"auth_region = RegionOne\nauth_ca_cert = {https_api.cafile}\n")
    client = agents_client(load_config("dhcp-agent", [str(ini)]), "dhcp-agent")
    assert client.region == "RegionOne" and client.ssl_context is not None
    assert client.closed  # nothing opened before the first request
    assert await client.list("networks") == []
    session = client._session
    assert session is not None and not client.closed
    await client.close()
    assert client.closed and session.closed


async def test_agent_feed_over_https_closes_its_client(https_api: HttpsApi) -> None:
    settings = AgentSettings(socket_path="/nonexistent", auth_url=https_api.url + "/v2.0",
                             username="neutron", password=PASSWORD, project_name="service",
                             auth_region="RegionOne", auth_ca_cert=https_api.cafile)
    feed = ControlFeed.from_settings(settings)
    snap = await feed.listing(INDEX_LISTING)
    assert snap.of(Kind.PORT) == [] and not feed.client.closed
    session = feed.client._session
    await feed.aclose()
    assert feed.client.closed and session is not None and session.closed


async def test_missing_credentials_are_all_named(tmp_path: Path) -> None:
    with pytest.raises(MissingCredentials, match=r"^x\.ini \[DEFAULT\] needs auth_url, "
                       r"admin_password to reach"):
        control_client(None, "u", "", "p", where="x.ini [DEFAULT]")
    ini = tmp_path / "l3_agent.ini"
    ini.write_text("[DEFAULT]\nadmin_user = neutron\n")
    with pytest.raises(SystemExit, match=r"^error: l3_agent\.ini \[DEFAULT\] needs auth_url, "
                       r"admin_password, admin_tenant_name"):
        agents_client(load_config("l3-agent", [str(ini)]), "l3-agent")
    with pytest.raises(MissingCredentials, match="metadata_agent.ini"):
        ControlFeed.check_settings(AgentSettings(socket_path="/s", auth_url="http://x"))


class _Flaky:
    """A control-api replica that authenticates (through the real API) but then drops every
    other request after reading it, or answers it 503: the request may have reached it."""

    def __init__(self, real: str, mode: str) -> None:
        self.real, self.mode = real, mode
        self.seen: list[str] = []
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def __aenter__(self) -> _Flaky:
        async def handle(request: web.Request) -> web.StreamResponse:
            body = await request.read()
            if "/tokens" in request.path:
                async with aiohttp.ClientSession() as http, http.request(
                        request.method, self.real + request.path_qs, data=body,
                        headers={"Content-Type": "application/json"}) as resp:
                    text = (await resp.text()).replace(self.real, self.url)
                    headers = {k: v for k, v in resp.headers.items()
                               if k.lower() == "x-subject-token"}
                    return web.Response(status=resp.status, text=text, headers=headers,
                                        content_type="application/json")
            self.seen.append(f"{request.method} {request.path}")
            if self.mode == "503":
                return web.json_response({"NeutronError": {
                    "type": "HTTPServiceUnavailable", "message": "database away"}}, status=503)
            assert request.transport is not None
            request.transport.close()
            return web.Response()

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *_exc: object) -> None:
        assert self.runner is not None
        await self.runner.cleanup()


async def test_client_fails_over_to_the_next_replica_when_one_is_down(api: Api) -> None:
    with socket.socket() as s:  # a port nobody listens on: connection refused
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    urls = f"{dead}/v2.0,{base(api)}/v2.0"
    async with ControlClient(urls, "neutron", PASSWORD, "service") as client:
        assert await client.list("networks") == []
        # Never connected to the dead one: a POST is safe to send to the next.
        net = await client.create("networks", {"name": "n"})
        assert client.auth_url == f"{base(api)}/v2.0"
    assert [n["id"] for n in (await api.ok("admin", "GET", "/v2.0/networks"))["networks"]] \
        == [net["id"]]


async def test_client_sends_a_get_again_but_never_a_post_that_may_have_arrived(
        api: Api) -> None:
    async with _Flaky(base(api), "drop") as flaky:
        urls = f"{flaky.url}/v2.0,{base(api)}/v2.0"
        async with ControlClient(urls, "neutron", PASSWORD, "service") as client:
            with pytest.raises(ApiConnectionError):
                await client.create("networks", {"name": "maybe-written"})
            assert flaky.seen == ["POST /v2.0/networks"]
        # The POST went nowhere else: no second network could be written.
        assert (await api.ok("admin", "GET", "/v2.0/networks"))["networks"] == []
        async with ControlClient(urls, "neutron", PASSWORD, "service") as client:
            assert await client.list("networks") == []
            assert flaky.seen[-1] == "GET /v2.0/networks"


async def test_client_asks_the_next_replica_after_a_503_to_a_get(api: Api) -> None:
    async with _Flaky(base(api), "503") as sick:
        urls = f"{sick.url}/v2.0,{base(api)}/v2.0"
        async with ControlClient(urls, "neutron", PASSWORD, "service") as client:
            assert await client.list("networks") == []
        assert sick.seen == ["GET /v2.0/networks"]
        async with ControlClient(f"{sick.url}/v2.0", "neutron", PASSWORD, "service") as one:
            with pytest.raises(ApiError) as err:
                await one.list("networks")
            assert err.value.status == 503


def test_auth_url_may_list_replicas(tmp_path: Path) -> None:
    ini = tmp_path / "dhcp_agent.ini"
    ini.write_text("[DEFAULT]\nauth_url = http://ctl-1:9696/v2.0, http://ctl-2:9696/v2.0\n")
    conf = load_config("dhcp-agent", [str(ini)])
    client = ControlClient(conf.auth_url, "u", "p", "proj")
    assert client.auth_urls == ["http://ctl-1:9696/v2.0", "http://ctl-2:9696/v2.0"]
    assert client.auth_url == "http://ctl-1:9696/v2.0"
