"""Answers kept as response bytes (answers.py) on the fast server: reused, and never stale.

Against a real inventory (SQLite, and PostgreSQL when configured) through the change feed, every
change an answer depends on is made as the control plane makes it, and the next request must
see it. Requests that differ in anything an answer depends on are compared byte for byte with
a server that keeps no answers (the Responder alone).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
from sqlalchemy import select

from openimds.inventory.migrate import open_store
from openimds.inventory.models import FixedIP, Instance, KeyPair, Network, Port
from openimds.inventory.store import Store
from openimds.leanhttp import LeanServer
from openimds.metadata.answers import Answer, AnswerCache, SeedPool, plain_identity
from openimds.metadata.fastserver import fast_metadata_server
from openimds.metadata.gate import TOKEN_HEADER, TTL_HEADER
from openimds.metadata.identify import IdentifySettings
from openimds.metadata.metrics import MetadataMetrics
from openimds.metadata.respond import Responder, RespondSettings
from openimds.metadata.source import DictSource
from openimds.metadata.store_source import StoreSource
from openimds.wire import sign_instance_id
from tests.metadata.fixtures import SECRET, UUID_A, full_view
from tests.metadata.helpers import signed_headers, wait_until
from tests.metadata.test_store_source import INSTANCE, seed

MD = "/openstack/latest/meta_data.json"


def _hits(metrics: MetadataMetrics, result: str = "hit") -> float:
    value = metrics.registry.get_sample_value(
        "openimds_metadata_cache_total", {"cache": "answer", "result": result}
    )
    return value or 0.0


class Api:
    """The fast server over a source, and a second one that keeps no answers."""

    def __init__(self, source: Any, settings: RespondSettings, **kwargs: Any) -> None:
        self.source = source
        self.metrics = MetadataMetrics()
        self.kept = fast_metadata_server(Responder(source, settings), self.metrics, **kwargs)
        self.plain = fast_metadata_server(
            Responder(source, settings), MetadataMetrics(), answer_cache_size=0, **kwargs
        )
        self.session: aiohttp.ClientSession | None = None
        self.ports: dict[LeanServer, int] = {}

    async def start(self) -> None:
        for server in (self.kept, self.plain):
            self.ports[server] = await server.start_tcp("127.0.0.1", 0)
        self.session = aiohttp.ClientSession()

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()
        for server in (self.kept, self.plain):
            await server.close()

    async def ask(
        self, path: str, headers: Any, method: str = "GET", *, plain: bool = False,
        data: bytes | None = None,
    ) -> tuple[int, str, bytes]:
        assert self.session is not None
        port = self.ports[self.plain if plain else self.kept]
        async with self.session.request(
            method, f"http://127.0.0.1:{port}{path}", headers=headers, data=data
        ) as r:
            return r.status, r.headers.get("Content-Type", ""), await r.read()

    async def reused(self, path: str, headers: Any, method: str = "GET") -> tuple[int, bytes]:
        """Ask twice; the second answer must come from the kept bytes."""
        first = await self.ask(path, headers, method)
        before = _hits(self.metrics)
        again = await self.ask(path, headers, method)
        assert _hits(self.metrics) == before + 1, "not answered from the kept bytes"
        assert again[:2] == first[:2]
        return again[0], again[2]


def _seedless(body: bytes) -> dict[str, Any]:
    doc = json.loads(body)
    doc.pop("random_seed", None)
    return doc  # type: ignore[no-any-return]


# ---- against the inventory and its change feed -------------------------------------------------


class Inventory:
    def __init__(self, store: Store, source: StoreSource, ids: dict[str, Any], api: Api) -> None:
        self.store = store
        self.source = source
        self.ids = ids
        self.api = api
        self.headers = dict(signed_headers(INSTANCE, ids["project"], SECRET))

    async def mutate(self, fn: Any) -> None:
        with self.store.session() as s:
            fn(s)
        await self.source.wait_for_revision(self.store.current_revision())


@pytest.fixture
async def inventory(db_url: str) -> AsyncIterator[Inventory]:
    store = open_store(db_url)
    ids = seed(store)
    source = StoreSource(store, feed_timeout=1.0)
    await source.start()
    api = Api(source, RespondSettings(identify=IdentifySettings(True, SECRET)))
    await api.start()
    try:
        yield Inventory(store, source, ids, api)
    finally:
        await api.close()
        await source.stop()
        store.dispose()


def _instance(s: Any) -> Any:
    return s.scalar(select(Instance).where(Instance.uuid == INSTANCE))


async def test_every_change_reaches_the_next_answer(inventory: Inventory) -> None:
    api, h, ids = inventory.api, inventory.headers, inventory.ids
    assert await api.reused("/latest/meta-data/hostname", h) == (200, b"web-1.novalocal")

    def rename(s: Any) -> None:
        _instance(s).hostname = "renamed"

    await inventory.mutate(rename)
    assert await api.reused("/latest/meta-data/hostname", h) == (200, b"renamed.novalocal")

    # The network's MTU (a network change) reaches network_data.json.
    _, body = await api.reused("/openstack/latest/network_data.json", h)
    assert json.loads(body)["links"][0]["mtu"] == 1450

    def mtu(s: Any) -> None:
        s.get(Network, ids["network"]).mtu = 1400

    await inventory.mutate(mtu)
    _, body = await api.reused("/openstack/latest/network_data.json", h)
    assert json.loads(body)["links"][0]["mtu"] == 1400

    # A port change: the instance's address moves.
    assert await api.reused("/latest/meta-data/local-ipv4", h) == (200, b"10.0.0.5")

    def move(s: Any) -> None:
        s.get(Port, ids["port"]).fixed_ips = [
            FixedIP(subnet_id=ids["subnet"], ip_address="10.0.0.9")
        ]

    await inventory.mutate(move)
    assert await api.reused("/latest/meta-data/local-ipv4", h) == (200, b"10.0.0.9")

    # A key pair change (here its deletion) reaches meta_data.json.
    _, body = await api.reused(MD, h)
    assert "public_keys" in json.loads(body)

    def drop_key(s: Any) -> None:
        s.delete(s.scalars(select(KeyPair)).one())

    await inventory.mutate(drop_key)
    _, body = await api.reused(MD, h)
    assert "public_keys" not in json.loads(body)

    # Deleting the instance ends its answers.
    def delete(s: Any) -> None:
        s.delete(s.get(Port, ids["port"]))
        s.delete(_instance(s))

    await inventory.mutate(delete)
    assert (await api.ask("/latest/meta-data/hostname", h))[0] == 404
    assert (await api.ask(MD, h))[0] == 404


async def test_metadata_options_and_token_rules_take_effect_at_their_revision(
    inventory: Inventory,
) -> None:
    api, h = inventory.api, inventory.headers
    assert (await api.reused("/latest/meta-data/instance-id", h))[0] == 200

    def require_tokens(s: Any) -> None:
        _instance(s).metadata_options = {"http_tokens": "required"}

    await inventory.mutate(require_tokens)
    assert (await api.ask("/latest/meta-data/instance-id", h))[0] == 401
    assert (await api.ask("/latest/meta-data/instance-id", h))[0] == 401
    # With a session token it is served, and never from bytes (the token's expiry decides).
    status, _, token = await api.ask("/latest/api/token", {**h, TTL_HEADER: "60"}, "PUT")
    assert status == 200
    before = _hits(api.metrics)
    for _ in range(2):
        got = await api.ask("/latest/meta-data/instance-id", {**h, TOKEN_HEADER: token.decode()})
        assert got[0] == 200
    assert _hits(api.metrics) == before

    def disable(s: Any) -> None:
        _instance(s).metadata_options = {"http_endpoint": "disabled"}

    await inventory.mutate(disable)
    assert (await api.ask("/latest/meta-data/instance-id", h))[0] == 403

    def enable(s: Any) -> None:
        _instance(s).metadata_options = {}

    await inventory.mutate(enable)
    assert (await api.reused("/latest/meta-data/instance-id", h))[0] == 200
    assert b"tags/" not in (await api.reused("/latest/meta-data/", h))[1]

    def tags(s: Any) -> None:
        _instance(s).metadata_options = {"instance_metadata_tags": "enabled"}

    await inventory.mutate(tags)
    assert b"tags/" in (await api.reused("/latest/meta-data/", h))[1]
    assert await api.reused("/latest/meta-data/tags/instance/role", h) == (200, b"web")


async def test_password_post_is_seen_by_the_next_get_at_once(inventory: Inventory) -> None:
    api, h = inventory.api, inventory.headers
    url = "/openstack/latest/password"
    assert await api.reused(url, h) == (200, b"")
    assert (await api.ask(url, h, "POST", data=b"c2VjcmV0"))[0] == 200
    # Not waiting for the feed: the writer's own next GET sees it.
    assert (await api.ask(url, h))[2] == b"c2VjcmV0"
    # The feed's record of the write drops the view once more (and the answer with it).
    await inventory.source.wait_for_revision(inventory.store.current_revision())
    assert await api.reused(url, h) == (200, b"c2VjcmV0")
    assert (await api.ask(url, h, "POST", data=b"again"))[0] == 409
    # The size limit still holds on a key with a kept answer.
    assert (await api.ask(url, h, "POST", data=b"x" * 5000))[0] in (400, 409)


async def test_kept_answers_are_dropped_with_their_view(inventory: Inventory) -> None:
    """The source's forget listener lets an instance's answers go with its view."""
    api, h = inventory.api, inventory.headers
    dropped: list[str] = []
    inventory.source.add_forget_listener(dropped.append)
    await api.reused("/latest/meta-data/hostname", h)

    def rename(s: Any) -> None:
        _instance(s).hostname = "again"

    await inventory.mutate(rename)
    assert INSTANCE in dropped
    # A request that only the stale answer would have matched (none may remain) is a miss.
    misses = _hits(api.metrics, "miss")
    assert (await api.ask("/latest/meta-data/hostname", h))[2] == b"again.novalocal"
    assert _hits(api.metrics, "miss") == misses + 1


# ---- answers rendered ahead of a new instance's first request --------------------------------

NEW = "0b7e6c1e-2f43-4c8a-8d1e-5a4b3c2d1e0f"
# What a boot asks (a guest of instance A asks them first, so the server learns them).
TAUGHT = ("/openstack", MD, "/openstack/latest/network_data.json", "/latest/meta-data/",
          "/latest/meta-data/hostname", "/latest/meta-data/public-keys/0/openssh-key")


def _create_new(ids: dict[str, Any], **options: str) -> Any:
    def create(s: Any) -> None:
        s.add(Instance(uuid=NEW, name="new-1", hostname="new-1", project_id=ids["project"],
                       user_id=ids["user"], availability_zone="nova", image_id=ids["image"],
                       reservation_id="r-00000002", metadata_options=options or None,
                       key_name="key", key_data=s.scalars(select(KeyPair)).one().public_key))
        s.flush()
        s.add(Port(network_id=ids["network"], project_id=ids["project"],
                   mac_address="fa:16:3e:00:00:06", device_id=NEW, device_owner="compute:nova",
                   fixed_ips=[FixedIP(subnet_id=ids["subnet"], ip_address="10.0.0.6")]))

    return create


def _prefetched(source: StoreSource) -> list[str]:
    """Instances the prefetcher handed to its listeners, in order; a listener added after the
    fast server's runs after its render is done."""
    seen: list[str] = []

    async def note(view: Any) -> None:
        seen.append(view.uuid)

    source.add_prefetch_listener(note)
    return seen


async def _same_as_plain(api: Api, path: str, headers: Any) -> None:
    kept = await api.ask(path, headers)
    plain = await api.ask(path, headers, plain=True)
    assert kept[:2] == plain[:2], path
    if path == MD:
        assert _seedless(kept[2]) == _seedless(plain[2])
    else:
        assert kept[2] == plain[2], path


async def test_a_new_instance_is_answered_from_bytes_rendered_ahead(
    inventory: Inventory,
) -> None:
    """Paths guests asked before are rendered for an instance as soon as the feed brings it:
    its very first requests are answered from bytes, equal to the Responder's answers."""
    api = inventory.api
    for path in TAUGHT:
        assert (await api.ask(path, inventory.headers))[0] == 200
    seen = _prefetched(inventory.source)
    await inventory.mutate(_create_new(inventory.ids))
    await wait_until(lambda: NEW in seen)
    h = dict(signed_headers(NEW, inventory.ids["project"], SECRET))
    hits, misses = _hits(api.metrics), _hits(api.metrics, "miss")
    for path in TAUGHT:
        await _same_as_plain(api, path, h)
    assert _hits(api.metrics) == hits + len(TAUGHT)
    assert _hits(api.metrics, "miss") == misses
    # A forged signature is still refused (the kept answer holds the expected one).
    forged = {**h, "X-Instance-ID-Signature": sign_instance_id("wrong", NEW)}
    assert (await api.ask("/latest/meta-data/hostname", forged))[0] == 403


async def test_an_instances_own_entries_of_crawled_listings_are_rendered_ahead(
    inventory: Inventory,
) -> None:
    """A guest that crawled a listing (asked it and its entries) teaches that the listing is
    crawled: a new instance's own entries there (its MAC's directory) are rendered ahead."""
    api, macs = inventory.api, "/latest/meta-data/network/interfaces/macs/"
    for path in (macs, macs + "fa:16:3e:00:00:05/", macs + "fa:16:3e:00:00:05/local-ipv4s"):
        assert (await api.ask(path, inventory.headers))[0] == 200
    seen = _prefetched(inventory.source)
    await inventory.mutate(_create_new(inventory.ids))
    await wait_until(lambda: NEW in seen)
    h = dict(signed_headers(NEW, inventory.ids["project"], SECRET))
    hits, misses = _hits(api.metrics), _hits(api.metrics, "miss")
    own = (macs, macs + "fa:16:3e:00:00:06/", macs + "fa:16:3e:00:00:06/local-ipv4s",
           macs + "fa:16:3e:00:00:06/mac")
    for path in own:
        await _same_as_plain(api, path, h)
    assert (await api.ask(own[2], h))[2] == b"10.0.0.6"
    assert _hits(api.metrics) == hits + len(own) + 1
    assert _hits(api.metrics, "miss") == misses
    # Another instance's MAC is not this instance's: 404, as from the Responder.
    await _same_as_plain(api, macs + "fa:16:3e:00:00:05/local-ipv4s", h)


async def test_answers_rendered_ahead_follow_every_change(inventory: Inventory) -> None:
    api = inventory.api
    for path in TAUGHT:
        await api.ask(path, inventory.headers)
    seen = _prefetched(inventory.source)
    await inventory.mutate(_create_new(inventory.ids))
    await wait_until(lambda: NEW in seen)
    h = dict(signed_headers(NEW, inventory.ids["project"], SECRET))

    def rename(s: Any) -> None:
        s.scalar(select(Instance).where(Instance.uuid == NEW)).hostname = "renamed"

    await inventory.mutate(rename)
    # Asked at once, before or while the changed instance is rendered again: never the old one.
    assert (await api.ask("/latest/meta-data/hostname", h))[2] == b"renamed.novalocal"
    # Rendered again for the new view, and served from bytes.
    await wait_until(lambda: seen.count(NEW) == 2)
    assert await api.reused("/latest/meta-data/hostname", h) == (200, b"renamed.novalocal")

    def drop_key(s: Any) -> None:
        s.delete(s.scalars(select(KeyPair)).one())

    await inventory.mutate(drop_key)
    assert "public_keys" not in json.loads((await api.ask(MD, h))[2])
    for path in TAUGHT:
        await _same_as_plain(api, path, h)


async def test_nothing_is_rendered_ahead_that_a_guest_would_be_refused(
    inventory: Inventory,
) -> None:
    api = inventory.api
    for path in TAUGHT:
        await api.ask(path, inventory.headers)
    seen = _prefetched(inventory.source)
    await inventory.mutate(_create_new(inventory.ids, http_tokens="required"))
    await wait_until(lambda: NEW in seen)
    h = dict(signed_headers(NEW, inventory.ids["project"], SECRET))
    hits = _hits(api.metrics)
    assert (await api.ask("/latest/meta-data/hostname", h))[0] == 401
    assert (await api.ask(MD, h))[0] == 401
    assert _hits(api.metrics) == hits


async def test_rendering_ahead_never_evicts_kept_answers(db_url: str) -> None:
    store = open_store(db_url)
    ids = seed(store)
    source = StoreSource(store, feed_timeout=1.0)
    await source.start()
    metrics = MetadataMetrics()
    server = fast_metadata_server(
        Responder(source, RespondSettings(identify=IdentifySettings(True, SECRET))), metrics,
        answer_cache_size=3)
    port = await server.start_tcp("127.0.0.1", 0)
    seen = _prefetched(source)
    h = dict(signed_headers(INSTANCE, ids["project"], SECRET))
    try:
        async with aiohttp.ClientSession() as session:

            async def ask(path: str, headers: Any) -> int:
                async with session.get(f"http://127.0.0.1:{port}{path}", headers=headers) as r:
                    await r.read()
                    return r.status

            for path in ("/latest/meta-data/hostname", "/latest/meta-data/local-ipv4"):
                assert await ask(path, h) == 200
            with store.session() as s:
                _create_new(ids)(s)
            await source.wait_for_revision(store.current_revision())
            await wait_until(lambda: NEW in seen)
            # Two more would not fit beside the two kept: none was rendered, none evicted.
            hits, misses = _hits(metrics), _hits(metrics, "miss")
            new = dict(signed_headers(NEW, ids["project"], SECRET))
            assert await ask("/latest/meta-data/hostname", new) == 200
            assert (_hits(metrics), _hits(metrics, "miss")) == (hits, misses + 1)
            assert await ask("/latest/meta-data/local-ipv4", h) == 200
            assert _hits(metrics) == hits + 1
    finally:
        await server.close()
        await source.stop()
        store.dispose()


# ---- against the Responder alone ------------------------------------------------------------


@pytest.fixture
async def api() -> AsyncIterator[Api]:
    source = DictSource([full_view()])
    served = Api(source, RespondSettings(identify=IdentifySettings(True, SECRET)))
    await served.start()
    try:
        yield served
    finally:
        await served.close()


H = dict(signed_headers(UUID_A, "test", SECRET))


def _variants() -> list[tuple[str, str, dict[str, str]]]:
    """Requests like a kept one but for one thing the answer may depend on."""
    forged = sign_instance_id("wrong", UUID_A)
    return [
        ("GET", "/latest/meta-data/hostname", H),
        ("HEAD", "/latest/meta-data/hostname", H),
        ("GET", "/latest/meta-data/hostname", {**H, "X-Instance-ID-Signature": forged}),
        ("GET", "/latest/meta-data/hostname", {**H, "X-Instance-ID-Signature": ""}),
        ("GET", "/latest/meta-data/hostname", {**H, "X-Tenant-ID": "other"}),
        ("GET", "/latest/meta-data/hostname", {**H, TOKEN_HEADER: "1.2.3"}),
        ("GET", "/latest/meta-data/hostname", {**H, "X-Metadata-Provider": "net"}),
        ("GET", "/latest/meta-data/hostname", {**H, "X-Forwarded-For": "10.0.0.5"}),
        ("GET", "/latest/meta-data/hostname", {**H, "x-instance-id": UUID_A.upper()}),
        ("GET", "/latest/meta-data/local-ipv4", {**H, "X-Forwarded-For": "10.9.9.9"}),
        ("GET", "/latest/meta-data/nope", H),
        ("GET", "/openstack/latest/password", H),
        ("HEAD", "/openstack/latest/password", H),
        ("GET", "/latest/api/token", H),
        ("GET", "/openstack", H),
        ("GET", "/", H),
        ("GET", MD, H),
        ("HEAD", MD, H),
    ]


async def test_answers_equal_the_responders_byte_for_byte(api: Api) -> None:
    for _ in range(3):  # the first round keeps what can be kept, the others reuse it
        for method, path, headers in _variants():
            kept = await api.ask(path, headers, method)
            plain = await api.ask(path, headers, method, plain=True)
            if path == MD and method == "GET" and kept[0] == 200:
                assert kept[:2] == plain[:2] and _seedless(kept[2]) == _seedless(plain[2])
            else:
                assert kept == plain, (method, path, headers)
    assert _hits(api.metrics) > 0


async def test_raw_header_bytes_decide_like_the_responder(api: Api) -> None:
    """A duplicate identity header or a non-UTF-8 X-Forwarded-For is a 400 on a kept key."""
    port = api.ports[api.kept]
    await api.reused("/latest/meta-data/hostname", H)
    head = b"".join(f"{k}: {v}\r\n".encode() for k, v in H.items())
    for extra in (f"X-Instance-ID: {UUID_A}\r\n".encode(), b"X-Forwarded-For: \xff\xfe\r\n"):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /latest/meta-data/hostname HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                     + head + extra + b"\r\n")
        data = await reader.read()
        writer.close()
        assert data.startswith(b"HTTP/1.1 400"), data


async def test_random_seed_is_fresh_on_every_kept_answer(api: Api) -> None:
    seeds = set()
    for _ in range(200):  # more than one pooled read's worth of 512-byte seeds
        status, _, body = await api.ask(MD, H)
        assert status == 200
        seeds.add(json.loads(body)["random_seed"])
    assert len(seeds) == 200
    assert _hits(api.metrics) == 199


async def test_pipelined_and_closing_requests_on_kept_answers(api: Api) -> None:
    await api.reused("/latest/meta-data/hostname", H)
    await api.reused("/latest/meta-data/instance-id", H)
    head = b"".join(f"{k}: {v}\r\n".encode() for k, v in H.items())
    one = b"GET /latest/meta-data/hostname HTTP/1.1\r\nHost: x\r\n" + head + b"\r\n"
    two = b"GET /latest/meta-data/instance-id HTTP/1.1\r\nHost: x\r\n" + head + b"\r\n"
    last = b"HEAD /latest/meta-data/hostname HTTP/1.0\r\n" + head + b"\r\n"
    reader, writer = await asyncio.open_connection("127.0.0.1", api.ports[api.kept])
    writer.write(one + two + one + last)
    data = await reader.read()  # HTTP/1.0 without keep-alive: closed after the last answer
    writer.close()
    parts = data.split(b"HTTP/1.1 200 OK\r\n")
    assert len(parts) == 5 and parts[0] == b""
    assert parts[1].endswith(b"\r\n\r\ntest.novalocal")
    assert parts[2].endswith(b"\r\n\r\ni-00000001")
    assert parts[3].endswith(b"\r\n\r\ntest.novalocal")
    assert b"Connection: close\r\n" in parts[4] and parts[4].endswith(b"\r\n\r\n")


async def test_the_access_log_line_is_the_handlers(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="openimds.metadata.access")
    before = _hits(api.metrics)
    for _ in range(2):
        await api.ask("/latest/meta-data/hostname", H)
    assert _hits(api.metrics) == before + 1
    lines = [r.getMessage() for r in caplog.records if r.name == "openimds.metadata.access"]
    assert len(lines) == 2
    expected = f'127.0.0.1 "GET /latest/meta-data/hostname" 200 14 instance={UUID_A} outcome=ok '
    assert all(line.startswith(expected) and line.endswith("ms") for line in lines), lines


async def test_a_source_update_replaces_the_kept_answer() -> None:
    source = DictSource([full_view()])
    api = Api(source, RespondSettings(identify=IdentifySettings(True, SECRET)))
    await api.start()
    try:
        assert await api.reused("/latest/meta-data/hostname", H) == (200, b"test.novalocal")
        source.put(full_view(hostname="other"))
        assert await api.reused("/latest/meta-data/hostname", H) == (200, b"other.novalocal")
        source.delete(UUID_A)
        assert (await api.ask("/latest/meta-data/hostname", H))[0] == 404
    finally:
        await api.close()


async def test_a_new_day_is_rendered_anew() -> None:
    """The OpenStack listing hides versions dated after today: kept answers are per date."""
    now = [datetime(2016, 10, 5, tzinfo=UTC)]
    source = DictSource([full_view()])
    api = Api(source, RespondSettings(identify=IdentifySettings(True, SECRET)),
              clock=lambda: now[0])
    await api.start()
    try:
        _, before = await api.reused("/openstack", H)
        now[0] = datetime(2017, 3, 1, tzinfo=UTC)
        _, after = await api.reused("/openstack", H)
        assert b"2017-02-22" in after and b"2017-02-22" not in before
    finally:
        await api.close()


# ---- pure parts ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ([(b"X-Instance-ID", b"i"), (b"X-Tenant-ID", b"t"), (b"X-Instance-ID-Signature", b"s")],
         (b"i", b"t", b"s")),
        ([(b"x-instance-id", b"i"), (b"X-TENANT-ID", b"t"), (b"x-instance-id-signature", b"s"),
          (b"Host", b"h"), (b"X-Forwarded-For", b"10.0.0.1"), (b"Accept", b"*/*")],
         (b"i", b"t", b"s")),
        ([(b"X-Instance-ID", b"i"), (b"X-Tenant-ID", b"t")], None),
        ([(b"X-Instance-ID", b"i"), (b"X-Instance-ID", b"i"), (b"X-Tenant-ID", b"t"),
          (b"X-Instance-ID-Signature", b"s")], None),
        ([(b"X-Instance-ID", b"i"), (b"X-Tenant-ID", b"t"), (b"X-Instance-ID-Signature", b"s"),
          (b"X-Metadata-Provider", b"")], None),
        ([(b"X-Instance-ID", b"i"), (b"X-Tenant-ID", b"t"), (b"X-Instance-ID-Signature", b"s"),
          (b"X-aws-ec2-metadata-token", b"x")], None),
        ([(b"X-Instance-ID", b"i"), (b"X-Tenant-ID", b"t"), (b"X-Instance-ID-Signature", b"s"),
          (b"X-Forwarded-For", b"\xff")], None),
        ([(b"X-Instance-ID", b"i"), (b"X-Tenant-ID", b"t"), (b"X-Instance-ID-Signature", b"s"),
          (b"X-Instance-\xc4\xb0D", b"j")], None),
    ],
)
def test_plain_identity(
    headers: list[tuple[bytes, bytes]], expected: tuple[bytes, bytes, bytes] | None
) -> None:
    assert plain_identity(headers) == expected


def _answer(uuid: str) -> Answer:
    return Answer(
        view=full_view(uuid=uuid), today=datetime(2026, 1, 1).date(), signature=b"s",
        head=b"", body=b"b", suffix=None, status=200, family="ec2",
        fields=("GET", "/", 200, 1, uuid, "ok"),
    )


def test_answer_cache_is_bounded_and_drops_by_instance() -> None:
    cache = AnswerCache(size=3)
    keys = [("GET", f"/{i}".encode(), b"a" if i < 2 else b"b", b"t") for i in range(4)]
    a, b = _answer("a"), _answer("b")
    for i, key in enumerate(keys):
        cache.put(key, a if i < 2 else b)
    assert len(cache) == 3 and cache.get(keys[0]) is None  # the oldest went
    cache.drop_instance("b")
    assert len(cache) == 1 and cache.get(keys[1]) is a
    cache.discard(keys[1], b)  # not the answer held: kept
    assert cache.get(keys[1]) is a
    cache.discard(keys[1], a)
    assert len(cache) == 0
    assert len(AnswerCache(size=0)) == 0


def test_dict_source_tells_listeners_of_every_replaced_view() -> None:
    source = DictSource([full_view()])
    heard: list[str] = []
    source.add_forget_listener(heard.append)
    view = source.cached_view(UUID_A)
    source.put(replace(full_view(), hostname="x"))
    assert source.cached_view(UUID_A) is not view
    asyncio.run(source.set_password(UUID_A, "pw"))
    source.delete(UUID_A)
    assert heard == [UUID_A] * 3 and source.cached_view(UUID_A) is None


def test_seed_pool_texts_are_canonical_base64_of_512_fresh_bytes() -> None:
    reads: list[bytes] = []

    def urandom(n: int) -> bytes:
        data = os.urandom(n)
        reads.append(data)
        return data

    pool = SeedPool(urandom, size=683 * 3)
    seeds = [pool() for _ in range(7)]
    # 683 random bytes per seed (one per character before the "="), none used twice.
    assert len(reads) == 3 and len(set(seeds)) == 7
    for text in seeds:
        raw = base64.b64decode(text, validate=True)
        assert len(raw) == 512 and base64.b64encode(raw) == text
    # The characters come from the random bytes in order (their low 6 bits).
    alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    assert seeds[1][:682] == bytes(alphabet[b & 63] for b in reads[0][683 : 683 + 682])


@pytest.mark.parametrize("seconds", [0.0, 0.0000123, 0.0000499, 0.00005, 0.0012, 0.25])
async def test_access_log_again_writes_the_handlers_line(seconds: float) -> None:
    import io

    from openimds.metadata.access import AccessLog

    log = logging.Logger("test.answers.access", logging.INFO)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(name)s %(message)s"))
    log.addHandler(handler)
    access = AccessLog(log)
    assert access.batch_on(asyncio.get_running_loop())
    answer = _answer(UUID_A)
    access("10.0.0.5", *answer.fields, seconds)
    access.again("10.0.0.5", answer.log_entry, answer.fields, seconds)
    access.flush()
    first, second = stream.getvalue().splitlines()
    assert first == second


def test_answered_again_counts_what_the_handler_counts() -> None:
    again, plain = MetadataMetrics(), MetadataMetrics()
    for _ in range(3):
        again.answered_again((200, "openstack"), 0.00001, "a")
        plain.observe(200, "openstack", 0.00001)
        plain.token_event("none", "a")
        plain.cache_event("tree", True)
    again.token_event("invalid", "a")
    plain.token_event("invalid", "a")
    assert again.take_instance_usage() == plain.take_instance_usage() == {"a": [3, 1]}
    assert again.take_instance_usage() == {}

    def samples(metrics: MetadataMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in metrics.registry.collect()
            for s in family.samples
            if not s.name.endswith("_created") and s.labels.get("cache") != "answer"
        }

    assert samples(again) == samples(plain)
    assert again.registry.get_sample_value(
        "openimds_metadata_cache_total", {"cache": "answer", "result": "hit"}) == 3
