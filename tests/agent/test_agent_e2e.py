"""The agent end to end on its unix socket: fake control plane, loopback metadata API stub.

Everything here is real except the control plane (an in-memory InventoryFeed): the socket, the
aiohttp server, the pooled upstream client, the signature checked by the stub.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import os
import stat
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from aiohttp import web

from openimds.agent.feed import Backoff
from openimds.feed import Kind, MemoryFeed

from .fakes import GZ_BODY, IFACE, port_dict
from .harness import RunningAgent, StubUpstream, free_port, settings_for

SECRET = "S3cr3t!"


async def poll(pred: Callable[[], object], timeout: float = 3.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await pred():  # type: ignore[misc]
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


@pytest.fixture
async def upstream() -> AsyncIterator[StubUpstream]:
    up = StubUpstream(SECRET)
    await up.start()
    yield up
    await up.stop()


@pytest.fixture
async def feed() -> MemoryFeed:
    f = MemoryFeed()
    for p in [
        port_dict("p-a", "net-a", "10.0.0.5", device="vm-a", project="proj-a"),
        port_dict("p-b", "net-b", "10.0.0.5", device="vm-b", project="proj-b"),
        port_dict("ri-a", "net-a", "10.0.0.1", device="r1", owner=IFACE),
        port_dict("ri-c", "net-c", "10.1.0.1", device="r1", owner=IFACE),
        port_dict("p-c", "net-c", "10.1.0.7", device="vm-c", project="proj-c"),
        port_dict("dhcp-a", "net-a", "10.0.0.2", device="dhcp", owner="network:dhcp"),
        port_dict("dup1", "net-d", "10.4.0.9", device="vm-d1"),
        port_dict("dup2", "net-d", "10.4.0.9", device="vm-d2"),
    ]:
        f.put(Kind.PORT, p)
    f.put(Kind.ROUTER, {"id": "r1"})
    f.put(Kind.ROUTER, {"id": "r-empty"})
    return f


@pytest.fixture
async def agent(tmp_path: Path, upstream: StubUpstream, feed: MemoryFeed
                ) -> AsyncIterator[RunningAgent]:
    async with RunningAgent(settings_for(tmp_path, [upstream.url], SECRET), feed) as a:
        await a.wait_ready()
        yield a


# -- overlap ---------------------------------------------------------------------------------
async def test_overlapping_addresses_get_their_own_instance(agent: RunningAgent) -> None:
    a = await agent.request(xff=["10.0.0.5"], network=["net-a"])
    b = await agent.request(xff=["10.0.0.5"], network=["net-b"])
    assert (a.status, b.status) == (200, 200)
    ja, jb = json.loads(a.body), json.loads(b.body)
    assert (ja["instance"], ja["tenant"]) == ("vm-a", "proj-a")
    assert (jb["instance"], jb["tenant"]) == ("vm-b", "proj-b")
    assert ja["xff"] == ["10.0.0.5"]


async def test_router_on_two_networks_resolves_each(agent: RunningAgent) -> None:
    a = json.loads((await agent.request(xff=["10.0.0.5"], router=["r1"])).body)
    c = json.loads((await agent.request(xff=["10.1.0.7"], router=["r1"])).body)
    assert (a["instance"], c["instance"]) == ("vm-a", "vm-c")


async def test_ipv4_mapped_address(agent: RunningAgent) -> None:
    r = await agent.request(xff=["::ffff:10.0.0.5"], network=["net-b"])
    assert json.loads(r.body)["instance"] == "vm-b"


# -- spoofing --------------------------------------------------------------------------------
async def test_guest_sent_forwarded_for_is_ignored(agent: RunningAgent) -> None:
    # vm-a (10.0.0.5 on net-a) sends "X-Forwarded-For: 10.1.0.7" to pass as vm-c; haproxy
    # appends the real source after it. Only that last hop counts.
    r = await agent.request(xff=["10.1.0.7", "10.0.0.5"], network=["net-a"])
    assert json.loads(r.body)["instance"] == "vm-a"
    r = await agent.request(xff=["10.1.0.7, 10.0.0.5"], network=["net-a"])
    assert json.loads(r.body)["instance"] == "vm-a"
    # Reversed order: the last hop (10.1.0.7) has no port on net-a, so 404, never vm-a.
    r = await agent.request(xff=["10.0.0.5, 10.1.0.7"], network=["net-a"])
    assert r.status == 404


async def test_both_or_repeated_ids_are_400(agent: RunningAgent) -> None:
    r = await agent.request(xff=["10.0.0.5"], network=["net-a"], router=["r1"])
    assert r.status == 400
    assert b"Both network net-a and router r1 defined." in r.body
    assert (await agent.request(xff=["10.0.0.5"], network=["net-a", "net-b"])).status == 400
    assert (await agent.request(xff=["10.0.0.5"])).status == 400


async def test_guest_headers_are_not_forwarded(agent: RunningAgent) -> None:
    r = await agent.request(xff=["10.0.0.5"], network=["net-a"], extra=[("X-Guest", "hi"),
                            ("X-Instance-ID", "vm-b")])
    body = json.loads(r.body)
    assert body["instance"] == "vm-a" and body["guest_header"] == ""


async def test_session_token_headers_pass_both_ways(agent: RunningAgent) -> None:
    r = await agent.request(xff=["10.0.0.5"], network=["net-a"],
                            extra=[("x-aws-ec2-metadata-token", "abc.def"),
                                   ("X-OpenIMDS-Guest-Forwarded", "1")])
    body = json.loads(r.body)
    assert body["token"] == ["abc.def"] and body["guest_forwarded"] == ["1"]
    # A value that cannot be sent as a header line arrives as an (equally invalid) token.
    r = await agent.request(xff=["10.0.0.5"], network=["net-a"],
                            extra=[("X-aws-ec2-metadata-token", "a\tb")])
    assert json.loads(r.body)["token"] == ["invalid"]
    r = await agent.request("/latest/api/token", method="PUT", xff=["10.0.0.5"],
                            network=["net-a"],
                            extra=[("X-aws-ec2-metadata-token-ttl-seconds", "60")])
    assert r.status == 200 and r.body == b"tok"
    assert r.headers["X-aws-ec2-metadata-token-ttl-seconds"] == "60"
    # The proxy turns this one into the IP TTL and strips it (proxy/haproxy.py).
    assert r.headers["X-OpenIMDS-Hop-Limit"] == "3"


# -- errors ----------------------------------------------------------------------------------
@pytest.mark.parametrize(("xff", "net", "router"), [
    ("10.9.9.9", "net-a", None),       # unknown address
    ("10.4.0.9", "net-d", None),       # ambiguous
    ("10.0.0.2", "net-a", None),       # DHCP port
    ("10.0.0.1", None, "r1"),          # the router's own port
    ("10.0.0.5", None, "r-empty"),     # router without interfaces
    ("10.0.0.5", None, "r-nope"),      # unknown router
])
async def test_not_found_cases(agent: RunningAgent, xff: str, net: str | None,
                               router: str | None) -> None:
    r = await agent.request(xff=[xff], network=[net] if net else [],
                            router=[router] if router else [])
    assert r.status == 404
    assert r.body.startswith(b"Instance was not found on ")


async def test_ambiguous_is_logged_with_port_ids(agent: RunningAgent,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="openimds.agent"):
        r = await agent.request(xff=["10.4.0.9"], network=["net-d"])
    assert r.status == 404
    assert any("dup1" in m and "dup2" in m for m in caplog.messages)


async def test_relay_status_body_type_length(agent: RunningAgent) -> None:
    r = await agent.request("/user_data.gz", xff=["10.0.0.5"], network=["net-a"])
    assert r.status == 200
    assert r.body == GZ_BODY  # not decompressed
    assert gzip.decompress(r.body).startswith(b"#cloud-config")
    assert r.headers["Content-Type"] == "application/octet-stream"
    assert int(r.headers["Content-Length"]) == len(GZ_BODY)
    r = await agent.request("/missing?x=1", xff=["10.0.0.5"], network=["net-a"])
    assert r.status == 404
    assert r.headers["Content-Type"] == "application/json; charset=utf-8"
    assert json.loads(r.body)["path"] == "/missing?x=1"
    assert int(r.headers["Content-Length"]) == len(r.body)


async def test_password_post_passes_through(agent: RunningAgent) -> None:
    r = await agent.request("/openstack/2013-04-04/password", method="POST", body=b"c2VjcmV0",
                            xff=["10.0.0.5"], network=["net-b"])
    body = json.loads(r.body)
    assert (body["method"], body["body"], body["instance"]) == ("POST", "c2VjcmV0", "vm-b")


async def test_upstream_down_then_back(agent: RunningAgent, upstream: StubUpstream) -> None:
    await upstream.stop()
    r = await agent.request(xff=["10.0.0.5"], network=["net-a"])
    assert r.status == 503
    assert r.headers["Retry-After"].isdigit()
    assert b"temporarily unavailable" in r.body
    await upstream.start()  # same port; no agent restart
    r = await agent.request(xff=["10.0.0.5"], network=["net-a"])
    assert r.status == 200


async def test_upstream_timeout_is_503(agent: RunningAgent) -> None:
    r = await agent.request("/slow?s=3", xff=["10.0.0.5"], network=["net-a"])
    assert r.status == 503 and "Retry-After" in r.headers


async def test_failover_to_second_upstream(tmp_path: Path, feed: MemoryFeed) -> None:
    second = StubUpstream(SECRET)
    await second.start()
    dead = f"http://127.0.0.1:{free_port()}"
    try:
        async with RunningAgent(settings_for(tmp_path, [dead, second.url], SECRET), feed) as a:
            await a.wait_ready()
            for _ in range(3):
                r = await a.request(xff=["10.0.0.5"], network=["net-a"])
                assert r.status == 200
    finally:
        await second.stop()


async def test_secret_mismatch_is_403_and_logged(tmp_path: Path, upstream: StubUpstream,
                                                 feed: MemoryFeed,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    async with RunningAgent(settings_for(tmp_path, [upstream.url], "SECRETE_KEY"), feed) as a:
        await a.wait_ready()
        with caplog.at_level(logging.WARNING, logger="openimds.agent"):
            r = await a.request(xff=["10.0.0.5"], network=["net-a"])
    assert r.status == 403
    assert b"Invalid proxy request signature." in r.body
    assert any("shared secrets likely do not match" in m for m in caplog.messages)


# -- control plane ---------------------------------------------------------------------------
async def test_not_ready_until_first_sync_then_serves(tmp_path: Path, upstream: StubUpstream,
                                                      feed: MemoryFeed) -> None:
    feed.set_down(True)
    async with RunningAgent(settings_for(tmp_path, [upstream.url], SECRET), feed) as a:
        r = await a.request(xff=["10.0.0.5"], network=["net-a"])
        assert r.status == 503 and "Retry-After" in r.headers
        assert (await a.request("/healthz")).status == 503
        feed.set_down(False)
        await a.wait_ready(timeout=5)
        assert (await a.request(xff=["10.0.0.5"], network=["net-a"])).status == 200


async def test_control_plane_lost_after_start_keeps_serving(agent: RunningAgent,
                                                           feed: MemoryFeed) -> None:
    feed.set_down(True)
    await asyncio.sleep(0.1)
    r = await agent.request(xff=["10.0.0.5"], network=["net-b"])
    assert r.status == 200 and json.loads(r.body)["instance"] == "vm-b"
    health = json.loads((await agent.request("/healthz")).body)
    assert health["ready"] is True
    # Changes made while we were cut off arrive by a resync when it comes back.
    feed.down = False  # make the change without waking waiters, then announce recovery
    feed.delete(Kind.PORT, "p-b")
    feed.put(Kind.PORT, port_dict("p-b2", "net-b", "10.0.0.5", device="vm-b2"))

    async def moved() -> bool:
        r = await agent.request(xff=["10.0.0.5"], network=["net-b"])
        return r.status == 200 and json.loads(r.body)["instance"] == "vm-b2"
    await poll(moved, timeout=20)


# -- churn -----------------------------------------------------------------------------------
async def test_delete_and_reuse_ip_resolves_new_owner(agent: RunningAgent, feed: MemoryFeed
                                                      ) -> None:
    feed.delete(Kind.PORT, "p-a")

    async def gone() -> bool:
        return (await agent.request(xff=["10.0.0.5"], network=["net-a"])).status == 404
    await poll(gone)
    feed.put(Kind.PORT, port_dict("p-new", "net-a", "10.0.0.5", device="vm-new",
                                  project="proj-new"))

    async def new_owner() -> bool:
        r = await agent.request(xff=["10.0.0.5"], network=["net-a"])
        return r.status == 200 and json.loads(r.body)["instance"] == "vm-new"
    await poll(new_owner)


async def test_router_interface_added_and_removed(agent: RunningAgent, feed: MemoryFeed) -> None:
    feed.put(Kind.PORT, port_dict("ri-e", "net-b", "10.0.0.1", device="r-empty", owner=IFACE))

    async def attached() -> bool:
        r = await agent.request(xff=["10.0.0.5"], router=["r-empty"])
        return r.status == 200 and json.loads(r.body)["instance"] == "vm-b"
    await poll(attached)
    feed.delete(Kind.PORT, "ri-e")

    async def detached() -> bool:
        return (await agent.request(xff=["10.0.0.5"], router=["r-empty"])).status == 404
    await poll(detached)


# -- socket ----------------------------------------------------------------------------------
async def test_socket_mode_applied(agent: RunningAgent) -> None:
    st = os.stat(agent.settings.socket_path)
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o644


async def test_second_agent_on_same_socket_refused(agent: RunningAgent) -> None:
    from openimds.agent.server import bind_unix_socket
    with pytest.raises(RuntimeError, match="already serving"):
        bind_unix_socket(agent.settings)


def test_backoff_grows_and_caps() -> None:
    b = Backoff(initial=1, maximum=4)
    delays = [b.next_delay() for _ in range(5)]
    assert delays[0] <= 1.2 and delays[-1] <= 4.8 and delays[-1] >= 3.2


# -- upstream client edges -------------------------------------------------------------------
async def test_head_is_relayed_without_a_body(agent: RunningAgent) -> None:
    r = await agent.request(xff=["10.0.0.5"], network=["net-a"], method="HEAD")
    assert r.status == 200 and r.body == b""
    # And the pooled connection is still in step for the next request.
    r = await agent.request(xff=["10.0.0.5"], network=["net-a"])
    assert r.status == 200 and json.loads(r.body)["instance"] == "vm-a"


async def test_many_requests_reuse_pooled_upstream_connections(agent: RunningAgent) -> None:
    replies = await asyncio.gather(*(agent.request(f"/n{i}", xff=["10.0.0.5"],
                                                   network=["net-a"]) for i in range(50)))
    assert [json.loads(r.body)["path"] for r in replies] == [f"/n{i}" for i in range(50)]


async def test_inventory_value_with_newline_is_never_sent_as_a_header(
        agent: RunningAgent, feed: MemoryFeed) -> None:
    feed.put(Kind.PORT, port_dict("p-x", "net-x", "10.7.0.5", device="vm-x\r\nX-Evil: 1"))

    async def loaded() -> bool:
        r = await agent.request(xff=["10.7.0.5"], network=["net-x"])
        return r.status != 404
    await poll(loaded)
    r = await agent.request(xff=["10.7.0.5"], network=["net-x"])
    assert r.status == 500 and b"unknown error" in r.body


async def test_body_over_one_mib_is_413(agent: RunningAgent) -> None:
    r = await agent.request("/openstack/2013-04-04/password", method="POST",
                            body=b"x" * (1024 * 1024 + 1), xff=["10.0.0.5"], network=["net-b"])
    assert r.status == 413


class _Unavailable:
    """A metadata API replica that answers every request 503 (starting, or database away)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.methods: list[str] = []
        self.runner: web.AppRunner | None = None

    async def start(self) -> None:
        async def handle(request: web.Request) -> web.Response:
            self.methods.append(request.method)
            return web.Response(status=503, text="database away", headers={"Retry-After": "5"})

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


async def test_a_replicas_503_sends_a_get_to_the_next_but_never_a_post(
        tmp_path: Path, feed: MemoryFeed) -> None:
    sick, healthy = _Unavailable(), StubUpstream(SECRET)
    await sick.start()
    await healthy.start()
    urls = [f"http://127.0.0.1:{sick.port}", healthy.url]
    try:
        async with RunningAgent(settings_for(tmp_path, urls, SECRET), feed) as a:
            await a.wait_ready()
            r = await a.request(xff=["10.0.0.5"], network=["net-a"])
            assert r.status == 200 and json.loads(r.body)["instance"] == "vm-a"
            # A POST that met a 503 is relayed as is: asking the next replica could write
            # twice. (The GET above made the healthy one preferred; start over with the sick
            # one first.)
        async with RunningAgent(settings_for(tmp_path, urls, SECRET), feed) as a:
            await a.wait_ready()
            r = await a.request("/openstack/latest/password", method="POST", body=b"pw",
                                xff=["10.0.0.5"], network=["net-a"])
            assert r.status == 503 and r.headers["Retry-After"] == "5"
        assert sick.methods == ["GET", "POST"]
    finally:
        await sick.stop()
        await healthy.stop()


async def test_every_replica_503_relays_the_503(tmp_path: Path, feed: MemoryFeed) -> None:
    one, two = _Unavailable(), _Unavailable()
    await one.start()
    await two.start()
    try:
        urls = [f"http://127.0.0.1:{one.port}", f"http://127.0.0.1:{two.port}"]
        async with RunningAgent(settings_for(tmp_path, urls, SECRET), feed) as a:
            await a.wait_ready()
            r = await a.request(xff=["10.0.0.5"], network=["net-a"])
        assert r.status == 503 and b"database away" in r.body
        assert (one.methods, two.methods) == (["GET"], ["GET"])
    finally:
        await one.stop()
        await two.stop()


async def test_map_mode_worker_keeps_the_proxies_maps_from_the_feed(
        tmp_path: Path, upstream: StubUpstream, feed: MemoryFeed) -> None:
    """The worker's wiring in map mode: its index's changes reach the map files of the proxies
    configured under state_path (no haproxy here: the runtime update is deferred, and
    /healthz says so)."""
    from dataclasses import replace

    from openimds.metadata.identify import sign_instance_id
    from openimds.proxy.haproxy import (
        Connections,
        proxy_spec_for_network,
        proxy_spec_for_router,
        render_haproxy_cfg,
    )

    state = tmp_path / "st"
    conns = Connections(identity="haproxy_map", api_servers=(("127.0.0.1", upstream.port),))
    confs = state / "ns-metadata-proxy"
    confs.mkdir(parents=True)
    for spec in (proxy_spec_for_network("net-a", state_path=str(state), socket_path="/x",
                                        connections=conns),
                 proxy_spec_for_router("r1", state_path=str(state), socket_path="/x",
                                       connections=conns)):
        (confs / f"{spec.resource_id}.conf").write_text(render_haproxy_cfg(spec))
    settings = replace(settings_for(tmp_path, [upstream.url], SECRET),
                       proxy_identity="haproxy_map", state_path=str(state))

    def entries(owner: str) -> dict[str, str]:
        path = confs / f"{owner}.map"
        if not path.exists():
            return {}
        return dict(line.split(" ", 1) for line in path.read_text().splitlines())

    def value(instance: str, project: str) -> str:
        return f"{instance}|{project}|{sign_instance_id(SECRET, instance)}"

    async with RunningAgent(settings, feed) as a:
        await a.wait_ready()

        async def written() -> bool:
            return entries("net-a").get("10.0.0.5") == value("vm-a", "proj-a")
        await poll(written)
        assert stat.S_IMODE(os.stat(confs / "net-a.map").st_mode) == 0o600
        # The router's map spans its interface networks (net-a and net-c), not net-b.
        router = entries("r1")
        assert router["10.0.0.5"] == value("vm-a", "proj-a")
        assert router["10.1.0.7"] == value("vm-c", "proj-c")
        assert "10.0.0.2" not in router and "10.0.0.1" not in router

        feed.delete(Kind.PORT, "p-a")
        feed.put(Kind.PORT, port_dict("p-a2", "net-a", "10.0.0.5", device="vm-a2",
                                      project="proj-a"))

        async def moved() -> bool:
            return (entries("net-a").get("10.0.0.5") == value("vm-a2", "proj-a")
                    and entries("r1").get("10.0.0.5") == value("vm-a2", "proj-a"))
        await poll(moved)
        health = json.loads((await a.request("/healthz")).body)
        assert health["identity_maps"]["proxies"] == 2
        assert health["identity_maps"]["not_current"] == 2  # no haproxy to update
