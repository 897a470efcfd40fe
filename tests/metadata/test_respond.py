"""Responder behaviour beyond path tables: error bodies, password, vendordata, caching."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from openimds.metadata.errors import error_body
from openimds.metadata.identify import IdentifySettings
from openimds.metadata.respond import MetadataRequest, Responder, RespondSettings
from openimds.metadata.source import DictSource, PasswordResult
from openimds.metadata.tree import VendordataOptions
from openimds.metadata.vendordata import (
    DynamicTarget,
    DynamicVendordata,
    DynamicVendordataOptions,
    merge_vendordata2,
    parse_targets,
)
from openimds.metadata.view import InstanceView
from tests.metadata.fixtures import SECRET, UUID_A, full_view
from tests.metadata.helpers import TODAY, call, signed_headers
from tests.metadata.servers import start_metadata

H = signed_headers(UUID_A, "test", SECRET)


def responder(view: InstanceView | None = None, **settings: Any) -> tuple[Responder, DictSource]:
    source = DictSource([view or full_view()])
    s = RespondSettings(identify=IdentifySettings(True, SECRET), **settings)
    return Responder(source, s), source


@pytest.mark.parametrize(
    ("accept", "ctype", "body"),
    [
        (
            None,
            "text/plain; charset=UTF-8",
            "404 Not Found\n\nThe resource could not be found.\n\n   ",
        ),
        (
            "text/plain",
            "text/plain; charset=UTF-8",
            "404 Not Found\n\nThe resource could not be found.\n\n   ",
        ),
        (
            "*/*",
            "text/html; charset=UTF-8",
            "<html>\n <head>\n  <title>404 Not Found</title>\n </head>\n <body>\n  <h1>404 Not Found</h1>\n"
            "  The resource could not be found.<br /><br />\n\n\n\n </body>\n</html>",
        ),
        ("text/html", "text/html; charset=UTF-8", None),
        (
            "application/json",
            "application/json",
            '{"message": "The resource could not be found.<br /><br />\\n\\n\\n", '
            '"code": "404 Not Found", "title": "Not Found"}',
        ),
        ("application/json, text/html;q=0.5", "application/json", None),
        ("text/html;q=0", "text/plain; charset=UTF-8", None),
    ],
)
async def test_error_body_negotiation(accept: str | None, ctype: str, body: str | None) -> None:
    r, _ = responder()
    headers = H + ([("Accept", accept)] if accept else [])
    resp = await call(r, "/latest/meta-data/nope", headers=headers)
    assert resp.status == 404
    assert resp.content_type == ctype
    if body is not None:
        assert resp.body == body.encode()


def test_error_body_403_plain() -> None:
    assert error_body(403, "Invalid proxy request signature.", None)[1] == (
        b"403 Forbidden\n\nInvalid proxy request signature.\n\n   "
    )


# Password ----------------------------------------------------------------------------------


async def test_password_post_once_then_409() -> None:
    r, _ = responder()
    url = "/openstack/latest/password"
    assert (await call(r, url, headers=H)).body == b""
    first = await call(r, url, method="POST", headers=H, body=b"c2VjcmV0")
    assert (first.status, first.content_type, first.body) == (200, "text/html; charset=UTF-8", b"")
    assert (await call(r, url, headers=H)).body == b"c2VjcmV0"
    again = await call(r, url, method="POST", headers=H, body=b"other")
    assert again.status == 409
    assert b"There was a conflict when trying to complete your request." in again.body
    # Already set wins over too large, as in nova.
    assert (await call(r, url, method="POST", headers=H, body=b"x" * 2000)).status == 409
    assert (await call(r, url, headers=H)).body == b"c2VjcmV0"


@pytest.mark.parametrize(("size", "status"), [(1020, 200), (1021, 400), (0, 200)])
async def test_password_size_limit(size: int, status: int) -> None:
    r, source = responder()
    resp = await call(
        r, "/openstack/2013-04-04/password", method="POST", headers=H, body=b"a" * size
    )
    assert resp.status == status
    if status == 400:
        assert b"Request is too large." in resp.body
        assert (await source.view_for_instance(UUID_A)).password is None  # type: ignore[union-attr]


async def test_password_post_without_body_is_an_empty_password() -> None:
    # Nova answers 500 here (None > 1020); we read the body and apply the limit instead.
    r, _ = responder()
    resp = await call(r, "/openstack/latest/password", method="POST", headers=H, body=None)
    assert resp.status == 200


async def test_password_not_utf8_is_400() -> None:
    r, _ = responder()
    resp = await call(r, "/openstack/latest/password", method="POST", headers=H, body=b"\xff\xfe")
    assert resp.status == 400


async def test_password_vanished_instance_is_400() -> None:
    class Vanishing(DictSource):
        async def set_password(self, uuid: str, password: str) -> PasswordResult:
            return PasswordResult.NOT_FOUND

    r = Responder(
        Vanishing([full_view()]), RespondSettings(identify=IdentifySettings(True, SECRET))
    )
    resp = await call(r, "/openstack/latest/password", method="POST", headers=H, body=b"x")
    assert resp.status == 400 and UUID_A.encode() in resp.body


# Caching -----------------------------------------------------------------------------------


async def test_tree_cache_follows_the_source() -> None:
    events: list[bool] = []
    source = DictSource([full_view()])
    r = Responder(
        source,
        RespondSettings(identify=IdentifySettings(True, SECRET)),
        on_tree_cache=events.append,
    )
    assert (await call(r, "/latest/meta-data/hostname", headers=H)).body == b"test.novalocal"
    assert (await call(r, "/latest/meta-data/hostname", headers=H)).body == b"test.novalocal"
    source.put(replace(full_view(), hostname="renamed"))
    assert (await call(r, "/latest/meta-data/hostname", headers=H)).body == b"renamed.novalocal"
    assert events == [False, True, False]
    source.delete(UUID_A)
    assert (await call(r, "/latest/meta-data/hostname", headers=H)).status == 404


async def test_a_tree_prepared_ahead_serves_the_first_request_and_never_evicts() -> None:
    events: list[bool] = []
    other = replace(full_view(), uuid="11111111-2222-3333-4444-555555555555")
    source = DictSource([full_view(), other])
    r = Responder(
        source,
        RespondSettings(identify=IdentifySettings(True, SECRET), tree_cache_size=1),
        on_tree_cache=events.append,
    )
    view = await source.view_for_instance(UUID_A)
    assert view is not None
    r.prepare(view, TODAY)
    assert events == [False]
    # Rendered ahead: the first request is a hit.
    assert (await call(r, "/latest/meta-data/hostname", headers=H)).body == b"test.novalocal"
    assert events == [False, True]
    # The cache is full: another instance's tree is not rendered ahead over the one in use.
    r.prepare(other, TODAY)
    assert events == [False, True]
    assert (await call(r, "/latest/meta-data/hostname", headers=H)).body == b"test.novalocal"
    assert events == [False, True, True]


async def test_dynamic_vendordata_is_never_asked_to_render_ahead() -> None:
    class Counting:
        calls = 0

        async def fetch(self, view: InstanceView) -> list[tuple[str, Any]]:
            self.calls += 1
            return [("t", {"y": 2})]

    fetcher = Counting()
    r = Responder(
        DictSource([full_view()]),
        RespondSettings(
            identify=IdentifySettings(True, SECRET),
            vendordata=VendordataOptions(("StaticJSON", "DynamicJSON"), {}),
        ),
        vendordata=fetcher,
    )
    path = "/openstack/latest/vendor_data2.json"
    ahead = await r.respond(MetadataRequest("GET", path, tuple(H), None, TODAY,
                                            os.urandom, ahead=True))
    assert ahead.reuse is None and ahead.status != 200 and fetcher.calls == 0
    resp = await call(r, path, headers=H)
    assert resp.status == 200 and json.loads(resp.body)["t"] == {"y": 2}
    assert fetcher.calls == 1
    # The rest of the tree is rendered ahead as for a guest.
    ahead = await r.respond(MetadataRequest("GET", "/openstack/latest/meta_data.json",
                                            tuple(H), None, TODAY, os.urandom,
                                            ahead=True))
    assert ahead.status == 200 and ahead.reuse is not None


async def test_dhcp_domain_empty_gives_bare_hostname() -> None:
    r, _ = responder(dhcp_domain="")
    assert (await call(r, "/latest/meta-data/hostname", headers=H)).body == b"test"


async def test_source_failure_is_500_without_traceback() -> None:
    class Broken(DictSource):
        async def view_for_instance(self, uuid: str) -> InstanceView | None:
            raise RuntimeError("database is down")

    r = Responder(Broken(), RespondSettings(identify=IdentifySettings(True, SECRET)))
    resp = await call(r, "/openstack", headers=H)
    assert resp.status == 500
    assert b"Traceback" not in resp.body and b"database" not in resp.body


# Vendordata --------------------------------------------------------------------------------


async def test_vendordata_static_document_and_providers() -> None:
    r, _ = responder(vendordata=VendordataOptions(("StaticJSON",), {"a": 1}))
    assert (await call(r, "/openstack/latest/vendor_data.json", headers=H)).body == b'{"a": 1}'
    vd2 = await call(r, "/openstack/latest/vendor_data2.json", headers=H)
    assert vd2.body == b'{"static": {"a": 1}}'


async def test_vendordata_without_providers() -> None:
    r, _ = responder(vendordata=VendordataOptions((), {"a": 1}))
    listing = (await call(r, "/openstack/latest", headers=H)).body.split(b"\n")
    assert b"vendor_data.json" in listing  # listed even though not served: nova's behaviour
    assert (await call(r, "/openstack/latest/vendor_data.json", headers=H)).status == 404
    assert (await call(r, "/openstack/latest/vendor_data2.json", headers=H)).body == b"{}"


def test_merge_vendordata2_drops_colliding_names() -> None:
    got = merge_vendordata2(
        ["StaticJSON", "DynamicJSON"], {"s": 1}, [("static", {"x": 1}), ("t", {"y": 2})]
    )
    assert got == {"static": {"s": 1}, "t": {"y": 2}}
    assert merge_vendordata2(["DynamicJSON", "StaticJSON"], {}, [("static", {"x": 1})]) == {
        "static": {}
    }


def test_parse_targets() -> None:
    got = parse_targets(["a@http://h/x@y", "nope", "a@http://other", "b@http://b"])
    assert got == (DynamicTarget("a", "http://h/x@y"), DynamicTarget("b", "http://b"))


async def _start_targets() -> tuple[web.AppRunner, int, list[dict[str, Any]]]:
    seen: list[dict[str, Any]] = []

    async def good(request: web.Request) -> web.Response:
        seen.append({"headers": dict(request.headers), "body": await request.json()})
        return web.json_response({"value1": 1})

    async def empty(request: web.Request) -> web.Response:
        return web.Response(status=204)

    async def broken(request: web.Request) -> web.Response:
        return web.Response(status=500, text="no")

    async def garbage(request: web.Request) -> web.Response:
        return web.Response(text="not json")

    app = web.Application()
    app.router.add_post("/good", good)
    app.router.add_post("/empty", empty)
    app.router.add_post("/broken", broken)
    app.router.add_post("/garbage", garbage)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, port, seen


async def test_dynamic_vendordata_over_http() -> None:
    runner, port, seen = await _start_targets()
    base = f"http://127.0.0.1:{port}"
    fetcher = DynamicVendordata(
        DynamicVendordataOptions(
            targets=parse_targets(
                [
                    f"testing@{base}/good",
                    f"e@{base}/empty",
                    f"b@{base}/broken",
                    f"g@{base}/garbage",
                    "dead@http://127.0.0.1:9/",
                ]
            ),
            connect_timeout=3,
            read_timeout=2,
        )
    )
    r = Responder(
        DictSource([full_view()]),
        RespondSettings(
            identify=IdentifySettings(True, SECRET),
            vendordata=VendordataOptions(("StaticJSON", "DynamicJSON"), {}),
        ),
        vendordata=fetcher,
    )
    try:
        resp = await call(r, "/openstack/latest/vendor_data2.json", headers=H)
        assert resp.status == 200
        assert json.loads(resp.body) == {
            "static": {},
            "testing": {"value1": 1},
            "e": {},
            "b": {},
            "g": {},
            "dead": {},
        }
        assert len(seen) == 1
        assert seen[0]["headers"]["User-Agent"] == "openstack-nova-vendordata"
        assert seen[0]["headers"]["Accept"] == "application/json"
        body = seen[0]["body"]
        assert body["instance-id"] == UUID_A and body["project-id"] == "test"
        assert body["hostname"] == "test"
        assert body["image-id"] == "155d900f-4e14-4e4c-a73d-069cbf4541e6"  # the Glance id
        assert set(body) == {
            "project-id",
            "instance-id",
            "image-id",
            "user-data",
            "hostname",
            "metadata",
            "boot-roles",
        }
        # Not cached: every request asks the targets again.
        await call(r, "/openstack/latest/vendor_data2.json", headers=H)
        assert len(seen) == 2

        fatal = DynamicVendordata(
            DynamicVendordataOptions(
                targets=parse_targets([f"b@{base}/broken"]), failure_fatal=True
            )
        )
        r.vendordata = fatal
        resp = await call(r, "/openstack/latest/vendor_data2.json", headers=H)
        assert resp.status == 500 and b"vendordata" in resp.body
        await fatal.close()
    finally:
        await fetcher.close()
        await runner.cleanup()


async def test_dynamic_vendordata_through_either_http_layer(http_server: str) -> None:
    """An outgoing HTTP call per request (aiohttp client, with its timeouts) through either
    layer: on the fast one the request suspends in its eager step and goes on in a Task."""
    runner, port, seen = await _start_targets()
    fetcher = DynamicVendordata(
        DynamicVendordataOptions(
            targets=parse_targets([f"testing@http://127.0.0.1:{port}/good"]),
            connect_timeout=3,
            read_timeout=2,
        )
    )
    r = Responder(
        DictSource([full_view()]),
        RespondSettings(
            identify=IdentifySettings(True, SECRET),
            vendordata=VendordataOptions(("StaticJSON", "DynamicJSON"), {}),
        ),
        vendordata=fetcher,
    )
    api_port, stop = await start_metadata(http_server, r)
    try:
        async with aiohttp.ClientSession() as s, s.get(
            f"http://127.0.0.1:{api_port}/openstack/latest/vendor_data2.json", headers=dict(H)
        ) as resp:
            assert resp.status == 200
            assert json.loads(await resp.read()) == {"static": {}, "testing": {"value1": 1}}
        assert len(seen) == 1
    finally:
        await stop()
        await fetcher.close()
        await runner.cleanup()
