"""Changing existing servers: rename, server metadata, tags (2.26+), availability zones, and
key pair generation."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from openimds.inventory.models import Instance
from openimds.inventory.store import Store

from .conftest import Api

V226 = {"OpenStack-API-Version": "compute 2.26"}


async def _server(api: Api, user: str, name: str = "vm", **extra: Any) -> str:
    body = await api.ok(user, "POST", "/v2.1/servers", {"server": {"name": name, **extra}},
                        status=202)
    return str(body["server"]["id"])


async def _call(api: Api, user: str, method: str, path: str, json: Any = None,
                headers: dict[str, str] | None = None) -> tuple[int, Any]:
    resp = await api.client.request(method, path, json=json, headers={
        "X-Auth-Token": api.tokens[user], **(headers or {})})
    text = await resp.text()
    import json as _json

    return resp.status, (_json.loads(text) if text else None)


async def test_rename(api: Api) -> None:
    sid = await _server(api, "alice", "old")
    body = await api.ok("alice", "PUT", f"/v2.1/servers/{sid}", {"server": {"name": "new"}})
    assert body["server"]["name"] == "new"
    assert (await api.ok("alice", "GET", f"/v2.1/servers/{sid}"))["server"]["name"] == "new"
    status, _ = await api.call("bob", "PUT", f"/v2.1/servers/{sid}", {"server": {"name": "x"}})
    assert status == 404
    status, _ = await api.call("alice", "PUT", f"/v2.1/servers/{sid}", {"server": {"name": ""}})
    assert status == 400


async def test_metadata_put_post_delete(api: Api, store: Store) -> None:
    sid = await _server(api, "alice", metadata={"a": "1", "b": "2"})
    path = f"/v2.1/servers/{sid}/metadata"
    assert (await api.ok("alice", "GET", path)) == {"metadata": {"a": "1", "b": "2"}}
    body = await api.ok("alice", "POST", path, {"metadata": {"b": "20", "c": "3"}}, status=200)
    assert body == {"metadata": {"a": "1", "b": "20", "c": "3"}}
    body = await api.ok("alice", "PUT", path, {"metadata": {"only": "x"}})
    assert body == {"metadata": {"only": "x"}}
    assert (await api.ok("alice", "PUT", f"{path}/k", {"meta": {"k": "v"}})) == {
        "meta": {"k": "v"}}
    assert (await api.ok("alice", "GET", f"{path}/k")) == {"meta": {"k": "v"}}
    status, _ = await api.call("alice", "PUT", f"{path}/k", {"meta": {"other": "v"}})
    assert status == 400
    await api.ok("alice", "DELETE", f"{path}/only")
    status, _ = await api.call("alice", "DELETE", f"{path}/only")
    assert status == 404
    with store.read() as s:
        inst = s.scalars(select(Instance).where(Instance.uuid == sid)).one()
        assert inst.properties == {"k": "v"}
    status, _ = await api.call("alice", "POST", path, {"metadata": {"n": 1}})
    assert status == 400
    status, _ = await api.call("bob", "POST", path, {"metadata": {"n": "1"}})
    assert status == 404


async def test_metadata_change_bumps_the_revision_the_metadata_api_follows(
        api: Api, store: Store) -> None:
    sid = await _server(api, "alice")
    before = store.changes_since(0, timeout=0)
    await api.ok("alice", "POST", f"/v2.1/servers/{sid}/metadata", {"metadata": {"x": "y"}},
                 status=200)
    after = store.changes_since(before[-1].revision, timeout=0)
    assert [(c.resource, c.op) for c in after] == [("instance", "update")]


async def test_tags_need_2_26(api: Api) -> None:
    sid = await _server(api, "alice")
    base = f"/v2.1/servers/{sid}/tags"
    status, _ = await _call(api, "alice", "GET", base)
    assert status == 404  # before 2.26 the resource does not exist
    status, _ = await _call(api, "alice", "PUT", f"{base}/web", headers=V226)
    assert status == 201
    status, _ = await _call(api, "alice", "PUT", f"{base}/web", headers=V226)
    assert status == 204
    status, body = await _call(api, "alice", "GET", base, headers=V226)
    assert (status, body) == (200, {"tags": ["web"]})
    status, body = await _call(api, "alice", "PUT", base, {"tags": ["a", "b", "a"]},
                               headers=V226)
    assert (status, body) == (200, {"tags": ["a", "b"]})
    status, body = await _call(api, "alice", "GET", f"/v2.1/servers/{sid}", headers=V226)
    assert body["server"]["tags"] == ["a", "b"]
    status, _ = await _call(api, "alice", "GET", f"{base}/zzz", headers=V226)
    assert status == 404
    status, _ = await _call(api, "alice", "DELETE", f"{base}/a", headers=V226)
    assert status == 204
    status, _ = await _call(api, "alice", "PUT", f"{base}/a,b", headers=V226)
    assert status == 400
    status, _ = await _call(api, "alice", "DELETE", base, headers=V226)
    assert status == 204
    status, body = await _call(api, "alice", "GET", base, headers=V226)
    assert body == {"tags": []}


async def test_availability_zones(api: Api) -> None:
    await _server(api, "alice", availability_zone="az1")
    body = await api.ok("bob", "GET", "/v2.1/os-availability-zone")
    assert [z["zoneName"] for z in body["availabilityZoneInfo"]] == ["az1", "nova"]
    assert all(z["zoneState"] == {"available": True} for z in body["availabilityZoneInfo"])


async def test_keypair_generation_returns_the_private_key_once(api: Api) -> None:
    body = (await api.ok("alice", "POST", "/v2.1/os-keypairs", {"keypair": {
        "name": "gen"}}))["keypair"]
    assert body["private_key"].startswith("-----BEGIN RSA PRIVATE KEY-----")
    assert body["public_key"].startswith("ssh-rsa ")
    assert len(body["fingerprint"].split(":")) == 16
    shown = (await api.ok("alice", "GET", "/v2.1/os-keypairs/gen"))["keypair"]
    assert "private_key" not in shown and shown["public_key"] == body["public_key"]
    status, _ = await api.call("alice", "POST", "/v2.1/os-keypairs", {"keypair": {
        "name": "x509", "type": "x509"}})
    assert status == 400
