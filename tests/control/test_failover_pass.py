"""The failover pass over a real inventory (control/rescheduler.py), on SQLite and PostgreSQL:
a dead agent's DHCP port and router interfaces move with their addresses, the feed carries the
moves, a returning agent gets nothing back, and on PostgreSQL one replica at a time decides."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, text

from openimds.control.call import Settings
from openimds.control.rescheduler import LOCK_KEY, failover_pass
from openimds.inventory.migrate import open_store
from openimds.inventory.models import Agent, utcnow
from openimds.inventory.store import Store

from .conftest import Api, make_network


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    st = open_store(db_url)
    try:
        yield st
    finally:
        st.dispose()


@pytest.fixture
def settings() -> Settings:
    return Settings(dhcp_agents_per_network=1, agent_down_time=30)


def device(host: str, net_id: str) -> str:
    return f"dhcp{uuid.uuid5(uuid.NAMESPACE_DNS, host)}-{net_id}"


async def report(api: Api, host: str, agent_type: str, start: bool = True) -> str:
    status, body = await api.call("neutron", "POST", "/v2.0/agents", {"agent": {
        "agent_type": agent_type, "host": host, "start_flag": start}})
    assert status in (200, 201), body
    return str(body["agent"]["id"])


def age(store: Store, host: str, seconds: float) -> None:
    """Make every agent on `host` have last reported `seconds` ago."""
    with store.session() as s:
        for row in s.scalars(select(Agent).where(Agent.host == host)):
            row.heartbeat_timestamp = utcnow() - timedelta(seconds=seconds)


async def ports(api: Api, **filters: str) -> list[dict[str, Any]]:
    return list((await api.ok("admin", "GET", "/v2.0/ports", params=filters))["ports"])


async def revision(api: Api) -> int:
    return int((await api.ok("neutron", "GET", "/v2.0/changes",
                             params={"since": "0", "limit": "0"}))["current_revision"])


async def test_dead_agents_resources_move_with_their_addresses(api: Api, store: Store,
                                                               settings: Settings) -> None:
    for kind in ("DHCP agent", "L3 agent"):
        await report(api, "net-1", kind)
    net, sub = await make_network(api, "alice", "n", "10.9.0.0/24")
    assert sub is not None
    router = (await api.ok("alice", "POST", "/v2.0/routers",
                           {"router": {"name": "r"}}))["router"]
    await api.ok("alice", "PUT", f"/v2.0/routers/{router['id']}/add_router_interface",
                 {"subnet_id": sub["id"]})
    for kind in ("DHCP agent", "L3 agent"):
        await report(api, "net-2", kind)
    (dhcp,) = await ports(api, network_id=net["id"], device_owner="network:dhcp")
    (qr,) = await ports(api, device_id=router["id"])
    assert dhcp["binding:host_id"] == qr["binding:host_id"] == "net-1"

    # Alive (a late heartbeat inside the window): nothing moves.
    age(store, "net-1", settings.agent_down_time - 5)
    assert failover_pass(store, settings) == []

    age(store, "net-1", settings.agent_down_time + 5)
    before = await revision(api)
    made = failover_pass(store, settings)
    assert sorted((kind, m.resource_id, m.from_host, m.to_host) for kind, m in made) == sorted(
        [("DHCP agent", net["id"], "net-1", "net-2"),
         ("L3 agent", router["id"], "net-1", "net-2")])
    (moved,) = await ports(api, network_id=net["id"], device_owner="network:dhcp")
    assert (moved["id"], moved["mac_address"], moved["fixed_ips"]) == (
        dhcp["id"], dhcp["mac_address"], dhcp["fixed_ips"])
    assert (moved["binding:host_id"], moved["device_id"]) == ("net-2", device("net-2",
                                                                             net["id"]))
    (qr_moved,) = await ports(api, device_id=router["id"])
    assert (qr_moved["binding:host_id"], qr_moved["fixed_ips"]) == ("net-2", qr["fixed_ips"])
    page = await api.ok("neutron", "GET", "/v2.0/changes", params={"since": str(before)})
    assert {(c["resource"], c["resource_id"]) for c in page["changes"]} >= {
        ("port", dhcp["id"]), ("port", qr["id"])}
    views = (await api.ok("admin", "GET", f"/v2.0/routers/{router['id']}/l3-agents"))["agents"]
    assert [a["host"] for a in views] == ["net-2"]

    # Nothing left to move; the dead agent returning (start_flag) gets nothing back.
    assert failover_pass(store, settings) == []
    for kind in ("DHCP agent", "L3 agent"):
        await report(api, "net-1", kind)
    assert failover_pass(store, settings) == []
    hosts = {p["binding:host_id"] for p in await ports(api, network_id=net["id"])
             if p["device_owner"] in ("network:dhcp", "network:router_interface")}
    assert hosts == {"net-2"}


async def test_switched_off_per_kind(api: Api, store: Store) -> None:
    for host in ("net-1", "net-2"):
        await report(api, host, "DHCP agent")
    age(store, "net-2", 300)
    net, _ = await make_network(api, "alice", "n", "10.10.0.0/24")
    age(store, "net-1", 300)
    await report(api, "net-2", "DHCP agent", start=False)
    off = Settings(agent_down_time=30, allow_automatic_dhcp_failover=False)
    assert failover_pass(store, off) == []
    on = Settings(agent_down_time=30, allow_automatic_l3agent_failover=False)
    assert [(k, m.to_host) for k, m in failover_pass(store, on)] == [("DHCP agent", "net-2")]
    assert net["id"]


# The advisory lock exists on PostgreSQL only (SQLite has one writer at a time anyway).
@pytest.mark.postgres
@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
async def test_one_replica_at_a_time_on_postgresql(api: Api, store: Store) -> None:
    assert store.backend == "postgresql"
    for host in ("net-1", "net-2"):
        await report(api, host, "DHCP agent")
    age(store, "net-2", 300)
    await make_network(api, "alice", "n", "10.11.0.0/24")
    age(store, "net-1", 300)
    await report(api, "net-2", "DHCP agent", start=False)
    settings = Settings(agent_down_time=30)
    with store.session() as other:  # another replica's pass in progress
        assert other.execute(text("SELECT pg_try_advisory_xact_lock(:k)"),
                             {"k": LOCK_KEY}).scalar()
        assert failover_pass(store, settings) == []
    assert len(failover_pass(store, settings)) == 1
