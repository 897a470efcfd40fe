"""Routers on one L3 agent: the interface ports are bound to the chosen agent's host."""

from __future__ import annotations

import pytest

from openimds.control.call import Settings
from openimds.l3.agent import hosted_here

from .conftest import Api, make_network


@pytest.fixture
def settings() -> Settings:
    """Legacy (single-agent) routers: with two L3 agents alive, l3_ha would default to true
    (HA routers are tested in test_l3_ha_api.py)."""
    return Settings(l3_ha=False)


async def register(api: Api, host: str, agent_type: str = "L3 agent") -> str:
    status, body = await api.call("neutron", "POST", "/v2.0/agents", {"agent": {
        "agent_type": agent_type, "host": host}})
    assert status in (200, 201), body
    return str(body["agent"]["id"])


async def interface_hosts(api: Api, router_id: str) -> list[str]:
    ports = (await api.ok("admin", "GET", "/v2.0/ports", params={"device_id": router_id}))[
        "ports"]
    return [p["binding:host_id"] for p in ports]


async def test_router_goes_to_the_least_loaded_l3_agent_and_stays(api: Api) -> None:
    a1, a2 = await register(api, "net-1"), await register(api, "net-2")
    routers = []
    for i in range(2):
        router = (await api.ok("alice", "POST", "/v2.0/routers", {"router": {
            "name": f"r{i}"}}))["router"]
        for j in range(2):
            _, sub = await make_network(api, "alice", f"n{i}{j}", f"10.{i}.{j}.0/24")
            assert sub is not None
            await api.ok("alice", "PUT", f"/v2.0/routers/{router['id']}/add_router_interface",
                         {"subnet_id": sub["id"]})
        routers.append(router["id"])
    first = await interface_hosts(api, routers[0])
    second = await interface_hosts(api, routers[1])
    assert len(set(first)) == 1 and len(set(second)) == 1 and set(first) != set(second)
    agents = (await api.ok("admin", "GET", f"/v2.0/routers/{routers[0]}/l3-agents"))["agents"]
    assert [a["host"] for a in agents] == first[:1]
    hosted = (await api.ok("admin", "GET", f"/v2.0/agents/{a1}/l3-routers"))["routers"]
    hosted += (await api.ok("admin", "GET", f"/v2.0/agents/{a2}/l3-routers"))["routers"]
    assert sorted(r["id"] for r in hosted) == sorted(routers)


async def test_without_l3_agents_interfaces_stay_unbound(api: Api) -> None:
    router = (await api.ok("alice", "POST", "/v2.0/routers", {"router": {"name": "r"}}))[
        "router"]
    _, sub = await make_network(api, "alice", "n", "10.50.0.0/24")
    assert sub is not None
    await api.ok("alice", "PUT", f"/v2.0/routers/{router['id']}/add_router_interface",
                 {"subnet_id": sub["id"]})
    assert await interface_hosts(api, router["id"]) == [""]


@pytest.mark.parametrize(("host", "bound", "expected"), [
    ("", ["net-2"], True),
    ("net-1", [], True),
    ("net-1", ["", ""], True),
    ("net-1", ["net-1", "net-1"], True),
    ("net-1", ["net-2"], False),
])
def test_hosted_here(host: str, bound: list[str], expected: bool) -> None:
    assert hosted_here(host, bound) is expected
