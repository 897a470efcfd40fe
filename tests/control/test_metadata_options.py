"""Per-server metadata options and token usage (the /v2.1/servers/{id}/metadata-options
extension), and the metadata API's usage writer that feeds it."""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import pytest
from sqlalchemy import event, select

from openimds.control.call import Call, Settings
from openimds.control.errors import NotFound
from openimds.control.metadata_options import identity_certificate
from openimds.inventory.migrate import open_store
from openimds.inventory.models import Change, Instance, MetadataTokenUsage
from openimds.inventory.store import Store
from openimds.metadata.options import MetadataOptions
from openimds.metadata.token_usage import TokenUsageWriter

from .conftest import Api

OPTS = "/v2.1/servers/{}/metadata-options"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    cert = tmp_path / "identity.pem"
    cert.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    return Settings(metadata_defaults=MetadataOptions(http_put_response_hop_limit=2),
                    identity_cert_file=str(cert))


async def make_server(api: Api, user: str = "alice", **extra: Any) -> dict[str, Any]:
    status, body = await api.call(user, "POST", "/v2.1/servers",
                                  {"server": {"name": "vm", "networks": "none", **extra}})
    assert status == 202, body
    return dict(body["server"])


async def test_defaults_then_set_then_back_to_default(api: Api, store: Store) -> None:
    srv = await make_server(api)
    doc = await api.ok("alice", "GET", OPTS.format(srv["id"]))
    assert doc["metadata_options"] == {
        "http_tokens": "optional", "http_put_response_hop_limit": 2,
        "http_endpoint": "enabled", "instance_metadata_tags": "disabled",
        "http_protocol_ipv6": "enabled"}
    assert doc["set"] == {} and doc["token_usage"]["tokenless_requests"] == 0
    with store.read() as s:
        before = s.scalar(select(Change.revision).order_by(Change.revision.desc()).limit(1))
    doc = await api.ok("alice", "PUT", OPTS.format(srv["id"]), {"metadata_options": {
        "http_tokens": "required", "http_put_response_hop_limit": 3}})
    assert doc["metadata_options"]["http_tokens"] == "required"
    assert doc["set"] == {"http_tokens": "required", "http_put_response_hop_limit": 3}
    # The change reaches the metadata API through the feed: the server's revision moved.
    with store.read() as s:
        change = s.scalars(select(Change).where(Change.revision > before)).one()
        assert (change.resource, change.resource_id, change.op) == ("instance", srv["id"],
                                                                    "update")
    shown = await api.ok("alice", "GET", f"/v2.1/servers/{srv['id']}")
    assert shown["server"]["openimds:metadata_options"]["http_tokens"] == "required"
    doc = await api.ok("alice", "PUT", OPTS.format(srv["id"]), {"metadata_options": {
        "http_tokens": None}})
    assert doc["set"] == {"http_put_response_hop_limit": 3}
    assert doc["metadata_options"]["http_tokens"] == "optional"


async def test_set_at_create(api: Api, store: Store) -> None:
    srv = await make_server(api, **{"openimds:metadata_options": {"http_endpoint": "disabled"}})
    assert srv["openimds:metadata_options"] == {"http_endpoint": "disabled"}
    with store.read() as s:
        inst = s.scalars(select(Instance).where(Instance.uuid == srv["id"])).one()
        assert inst.metadata_options == {"http_endpoint": "disabled"}


@pytest.mark.parametrize(
    ("options", "needle"),
    [
        ({"http_tokens": "always"}, "http_tokens must be one of optional, required"),
        ({"http_put_response_hop_limit": 65}, "1..64"),
        ({"http_put_response_hop_limit": 0}, "1..64"),
        ({"http_put_response_hop_limit": True}, "1..64"),
        ({"bogus": 1}, "unknown metadata option 'bogus'"),
        ("required", "JSON object"),
    ],
)
async def test_bad_options_are_400(api: Api, options: Any, needle: str) -> None:
    srv = await make_server(api)
    status, body = await api.call("alice", "PUT", OPTS.format(srv["id"]),
                                  {"metadata_options": options})
    assert status == 400 and needle in str(body), body
    status, body = await api.call("alice", "POST", "/v2.1/servers", {"server": {
        "name": "x", "networks": "none", "openimds:metadata_options": options}})
    assert status == 400 and needle in str(body), body


async def test_other_projects_cannot_see_or_set(api: Api) -> None:
    srv = await make_server(api)
    assert (await api.call("bob", "GET", OPTS.format(srv["id"])))[0] == 404
    status, _ = await api.call("bob", "PUT", OPTS.format(srv["id"]),
                               {"metadata_options": {"http_tokens": "required"}})
    assert status == 404
    # The agents' service role reads but does not write.
    assert (await api.call("neutron", "GET", OPTS.format(srv["id"])))[0] == 200
    status, _ = await api.call("neutron", "PUT", OPTS.format(srv["id"]),
                               {"metadata_options": {"http_tokens": "required"}})
    assert status == 404


async def test_token_usage_written_by_the_metadata_api_is_shown(api: Api, store: Store) -> None:
    a = await make_server(api)
    b = await make_server(api, "bob")
    pending = [{a["id"]: [3, 1]}, {a["id"]: [2, 0], b["id"]: [0, 4]}]
    writer = TokenUsageWriter(store, lambda: pending.pop(0) if pending else {})
    await writer.flush()
    await writer.flush()  # the second batch adds to the rows the first one created
    doc = await api.ok("alice", "GET", OPTS.format(a["id"]))
    assert doc["token_usage"]["tokenless_requests"] == 5
    assert doc["token_usage"]["invalid_token_requests"] == 1
    assert doc["token_usage"]["last_tokenless_at"] is not None
    rows = (await api.ok("admin", "GET", "/v2.1/os-metadata-token-usage"))["token_usage"]
    by_id = {r["server_id"]: r for r in rows}
    assert by_id[b["id"]]["invalid_token_requests"] == 4
    assert by_id[b["id"]]["tokenless_requests"] == 0
    # A member sees its own project's servers only.
    rows = (await api.ok("alice", "GET", "/v2.1/os-metadata-token-usage"))["token_usage"]
    assert [r["server_id"] for r in rows] == [a["id"]]


async def test_usage_is_kept_while_the_database_is_away(store: Store, tmp_path: Path) -> None:
    broken = Store(f"sqlite:///{tmp_path / 'missing' / 'nothing.sqlite'}")
    batches = [{"i-1": [1, 0]}, {"i-1": [2, 0]}]
    writer = TokenUsageWriter(broken, lambda: batches.pop(0) if batches else {})
    await writer.flush()
    await writer.flush()
    assert writer._pending == {"i-1": [3, 0]}
    broken.dispose()
    writer.store = store
    await writer.flush()
    assert writer._pending == {}


async def test_identity_certificate_is_published(api: Api) -> None:
    doc = await api.ok("alice", "GET", "/v2.1/os-metadata-identity-certificate")
    assert doc["certificate"].startswith("-----BEGIN CERTIFICATE-----")


def test_no_identity_certificate_is_404(store: Store) -> None:
    with pytest.raises(NotFound, match="identity_cert_file"):
        identity_certificate(Call(store, Settings(), None))


async def test_usage_of_many_instances_costs_three_statements(db_url: str) -> None:
    """The writer's cost does not grow with the number of instances (a boot storm of 1,000
    instances used to cost one UPDATE each a second): one SELECT of the existing rows, one
    UPDATE executed for all of them, one INSERT for the new ones."""
    statements: list[tuple[str, bool]] = []

    def count(conn: Any, cursor: Any, statement: str, params: Any, context: Any,
              executemany: bool) -> None:
        statements.append((statement.split()[0].upper(), executemany))

    old = {f"i-{n}": [1, 0] for n in range(300)}
    batches = [old, {**{u: [2, 1] for u in old}, **{f"j-{n}": [0, 3] for n in range(300)}}]
    store = open_store(db_url)
    try:
        writer = TokenUsageWriter(store, lambda: batches.pop(0) if batches else {})
        await writer.flush()
        event.listen(store._write_engine, "before_cursor_execute", count)
        try:
            await writer.flush()
        finally:
            event.remove(store._write_engine, "before_cursor_execute", count)
        assert writer._pending == {}
        with store.read() as s:
            rows = {r.instance_uuid: (r.tokenless_requests, r.invalid_token_requests,
                                      r.last_tokenless_at is not None)
                    for r in s.scalars(select(MetadataTokenUsage))}
    finally:
        store.dispose()
    work = [st for st in statements if st[0] in ("SELECT", "UPDATE", "INSERT")]
    assert work == [("SELECT", False), ("UPDATE", True), ("INSERT", True)]
    assert len(rows) == 600
    assert rows["i-7"] == (3, 1, True)
    assert rows["j-7"] == (0, 3, False)


class Row(NamedTuple):
    tokenless_requests: int
    invalid_token_requests: int
    last_tokenless_at: Any


async def test_usage_adds_up_across_chunks_and_keeps_the_last_tokenless_time(
        db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import openimds.metadata.token_usage as token_usage

    store = open_store(db_url)

    # Several statements per batch (the bound on parameters per statement), on both databases.
    monkeypatch.setattr(token_usage, "CHUNK", 3)
    ids = [f"i-{n}" for n in range(8)]
    batches: list[dict[str, list[int]]] = [
        {u: [n % 2, 1] for n, u in enumerate(ids)},
        {**{u: [0, 2] for u in ids}, "i-8": [5, 0], "i-9": [0, 0]},
        {"i-1": [4, 0]},
    ]
    writer = TokenUsageWriter(store, lambda: batches.pop(0) if batches else {})
    await writer.flush()
    with store.read() as s:
        first = {r.instance_uuid: r.last_tokenless_at for r in s.scalars(select(MetadataTokenUsage))}
    await writer.flush()
    await writer.flush()
    with store.read() as s:
        rows = {r.instance_uuid: Row(r.tokenless_requests, r.invalid_token_requests,
                                     r.last_tokenless_at)
                for r in s.scalars(select(MetadataTokenUsage))}
    store.dispose()
    assert sorted(rows) == sorted([*ids, "i-8", "i-9"])
    for n, u in enumerate(ids):
        assert (rows[u].tokenless_requests, rows[u].invalid_token_requests) == (
            n % 2 + (4 if u == "i-1" else 0), 3)
        # A batch without tokenless requests leaves the time of the last one as it was.
        if u != "i-1":
            assert rows[u].last_tokenless_at == first[u]
            assert (first[u] is None) == (n % 2 == 0)
    assert rows["i-1"].last_tokenless_at is not None and rows["i-1"].last_tokenless_at > first["i-1"]
    assert rows["i-8"].tokenless_requests == 5 and rows["i-9"].last_tokenless_at is None
    assert writer._pending == {}
