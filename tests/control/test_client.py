"""The agents' HTTP client against a real loopback server."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import delete, func, select

from openimds.control.client import ApiConnectionError, ApiError, ControlClient
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
