"""Neutron list pagination (limit, marker, page_reverse, `<collection>_links`) through the real
app, and the agents' client reading a list page by page."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from openimds.control.client import ControlClient
from openimds.rows import Row, compact_row

from .conftest import PASSWORD, Api


async def _networks(api: Api, n: int) -> list[str]:
    ids = []
    for i in range(n):
        body = await api.ok("alice", "POST", "/v2.0/networks",
                            {"network": {"name": f"net{i}", "description": "paged"}})
        ids.append(body["network"]["id"])
    return ids


def _query_of(link: dict[str, str]) -> list[tuple[str, str]]:
    return [(k, v) for k, vs in parse_qs(urlsplit(link["href"]).query).items() for v in vs]


def _links(body: dict[str, Any], collection: str = "networks") -> dict[str, dict[str, str]]:
    return {link["rel"]: link for link in body.get(f"{collection}_links", [])}


@pytest.mark.parametrize("extra", [[], [("description", "paged")]],
                         ids=["sql-cut", "post-filter-cut"])
async def test_following_next_links_walks_the_whole_list_once(api: Api,
                                                              extra: list[tuple[str, str]],
                                                              ) -> None:
    ids = await _networks(api, 5)
    everything = await api.ok("alice", "GET", "/v2.0/networks", params=extra)
    assert [n["id"] for n in everything["networks"]] == ids
    assert "networks_links" not in everything  # no paging asked, no links

    seen: list[str] = []
    params: list[tuple[str, str]] = [*extra, ("limit", "2")]
    pages = 0
    while True:
        body = await api.ok("alice", "GET", "/v2.0/networks", params=params)
        pages += 1
        page = [n["id"] for n in body["networks"]]
        assert 0 < len(page) <= 2
        seen += page
        links = _links(body)
        if pages > 1:
            assert "previous" in links  # a marker was given: rows lie behind
        if "next" not in links:
            break
        assert links["next"]["href"].startswith(str(api.client.make_url("/v2.0/networks")))
        params = _query_of(links["next"])
        assert ("limit", "2") in params and all(p in params for p in extra)
    assert seen == ids and pages == 3


async def test_page_reverse_walks_back_from_a_marker(api: Api) -> None:
    ids = await _networks(api, 5)
    body = await api.ok("alice", "GET", "/v2.0/networks",
                        params={"limit": "2", "marker": ids[4], "page_reverse": "True"})
    assert [n["id"] for n in body["networks"]] == ids[2:4]  # still ascending
    links = _links(body)
    assert set(links) == {"next", "previous"}
    prev = await api.ok("alice", "GET", "/v2.0/networks", params=_query_of(links["previous"]))
    assert [n["id"] for n in prev["networks"]] == ids[0:2]
    assert set(_links(prev)) == {"next"}  # nothing further back
    nxt = await api.ok("alice", "GET", "/v2.0/networks", params=_query_of(links["next"]))
    assert [n["id"] for n in nxt["networks"]] == ids[4:]


async def test_limit_zero_means_everything_and_a_full_last_page_has_no_next(api: Api) -> None:
    ids = await _networks(api, 4)
    body = await api.ok("alice", "GET", "/v2.0/networks", params={"limit": "0"})
    assert [n["id"] for n in body["networks"]] == ids
    body = await api.ok("alice", "GET", "/v2.0/networks", params={"limit": "4"})
    assert len(body["networks"]) == 4 and "next" not in _links(body)


@pytest.mark.parametrize("limit", ["-1", "two", "1.5"])
async def test_bad_limit_is_a_400_that_names_it(api: Api, limit: str) -> None:
    status, body = await api.call("alice", "GET", "/v2.0/networks", params={"limit": limit})
    assert status == 400
    assert f"'{limit}'" in body["NeutronError"]["message"]


async def test_unknown_or_invisible_marker_is_a_404(api: Api) -> None:
    ids = await _networks(api, 2)
    status, body = await api.call("alice", "GET", "/v2.0/networks",
                                  params={"limit": "1", "marker": "no-such-id"})
    assert status == 404 and body["NeutronError"]["type"] == "NetworkNotFound"
    # bob cannot see alice's networks; paging from one of them must not reveal its place.
    status, body = await api.call("bob", "GET", "/v2.0/networks",
                                  params={"limit": "1", "marker": ids[0]})
    assert status == 404


@pytest.mark.parametrize("collection,path", [("ports", "/v2.0/ports"),
                                             ("subnets", "/v2.0/subnets"),
                                             ("routers", "/v2.0/routers")])
async def test_other_collections_page_the_same_way(api: Api, collection: str,
                                                   path: str) -> None:
    net = (await api.ok("alice", "POST", "/v2.0/networks", {"network": {"name": "n"}}))["network"]
    for i in range(3):
        if collection == "ports":
            await api.ok("alice", "POST", path, {"port": {"network_id": net["id"]}})
        elif collection == "subnets":
            await api.ok("alice", "POST", path, {"subnet": {
                "network_id": net["id"], "cidr": f"10.{i}.0.0/24", "ip_version": 4}})
        else:
            await api.ok("alice", "POST", path, {"router": {"name": f"r{i}"}})
    full = [x["id"] for x in (await api.ok("alice", "GET", path))[collection]]
    first = await api.ok("alice", "GET", path, params={"limit": "2"})
    assert [x["id"] for x in first[collection]] == full[:2]
    nxt = _links(first, collection)["next"]
    second = await api.ok("alice", "GET", path, params=_query_of(nxt))
    assert [x["id"] for x in second[collection]] == full[2:]


async def test_client_reads_a_list_in_pages(api: Api) -> None:
    ids = await _networks(api, 7)
    base = str(api.client.make_url("")).rstrip("/")
    async with ControlClient(base + "/v3", "alice", PASSWORD, "a") as client:
        paged = await client.list("networks", page_size=3)
        assert [n["id"] for n in paged] == ids
        filtered = await client.list("networks", page_size=2, name=["net1", "net5", "net6"])
        assert [n["name"] for n in filtered] == ["net1", "net5", "net6"]
        assert [n["id"] for n in await client.list("networks", page_size=None)] == ids
        # `each` turns every row as its page arrives (the agents keep compact rows).
        compact = await client.list("networks", page_size=3, each=compact_row)
        assert all(isinstance(n, Row) for n in compact) and compact == paged
        whole = await client.list("networks", page_size=None, each=compact_row)
        assert all(isinstance(n, Row) for n in whole) and whole == paged
