"""DHCP scheduling through the API: dhcp_agents_per_network agents on distinct hosts, one
DHCP port each (Neutron's device_id), dead agents replaced, admin add/remove, and the
/dhcp-agents and /dhcp-networks views."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest

from openimds.control.call import Settings
from openimds.inventory.models import Agent, utcnow
from openimds.inventory.store import Store

from .conftest import Api, make_network


@pytest.fixture
def settings() -> Settings:
    return Settings(dhcp_agents_per_network=2, agent_down_time=30)


def device(host: str, net_id: str) -> str:
    return f"dhcp{uuid.uuid5(uuid.NAMESPACE_DNS, host)}-{net_id}"


async def register(api: Api, host: str, agent_type: str = "DHCP agent") -> str:
    status, body = await api.call("neutron", "POST", "/v2.0/agents", {"agent": {
        "agent_type": agent_type, "host": host, "start_flag": True}})
    assert status in (200, 201), body
    return str(body["agent"]["id"])


async def dhcp_ports(api: Api, net_id: str) -> list[dict[str, Any]]:
    return list((await api.ok("admin", "GET", "/v2.0/ports", params={
        "network_id": net_id, "device_owner": "network:dhcp"}))["ports"])


def kill(store: Store, agent_id: str) -> None:
    with store.session() as s:
        row = s.get(Agent, agent_id)
        assert row is not None
        row.heartbeat_timestamp = utcnow() - timedelta(seconds=300)


async def test_two_agents_per_network_each_with_its_own_bound_port(api: Api,
                                                                   store: Store) -> None:
    a1, a2 = await register(api, "net-1"), await register(api, "net-2")
    a3 = await register(api, "net-3")
    kill(store, a3)
    net, sub = await make_network(api, "alice", "n", "10.7.0.0/24")
    ports = await dhcp_ports(api, net["id"])
    assert sorted((p["device_id"], p["binding:host_id"]) for p in ports) == sorted(
        [(device("net-1", net["id"]), "net-1"), (device("net-2", net["id"]), "net-2")])
    assert len({p["fixed_ips"][0]["ip_address"] for p in ports}) == 2
    agents = (await api.ok("admin", "GET", f"/v2.0/networks/{net['id']}/dhcp-agents"))[
        "agents"]
    assert sorted(a["id"] for a in agents) == sorted([a1, a2])
    nets = (await api.ok("admin", "GET", f"/v2.0/agents/{a1}/dhcp-networks"))["networks"]
    assert [n["id"] for n in nets] == [net["id"]]

    # net-2 dies and net-3 comes back: the next change of the network moves its port.
    kill(store, a2)
    await register(api, "net-3")
    assert sub is not None
    await api.ok("alice", "PUT", f"/v2.0/subnets/{sub['id']}", {"subnet": {"name": "x"}})
    hosts = sorted(p["binding:host_id"] for p in await dhcp_ports(api, net["id"]))
    assert hosts == ["net-1", "net-3"]


async def test_a_starting_agent_gets_the_networks_that_lack_agents(api: Api) -> None:
    await register(api, "net-1")
    net, _ = await make_network(api, "alice", "n", "10.8.0.0/24")
    assert [p["binding:host_id"] for p in await dhcp_ports(api, net["id"])] == ["net-1"]
    await register(api, "net-2")
    assert sorted(p["binding:host_id"] for p in await dhcp_ports(api, net["id"])) == [
        "net-1", "net-2"]


async def test_networks_born_before_any_agent_keep_their_round_one_port(api: Api) -> None:
    net, _ = await make_network(api, "alice", "n", "10.9.0.0/24")
    await register(api, "net-1")
    ports = await dhcp_ports(api, net["id"])
    assert [(p["device_id"], p["binding:host_id"]) for p in ports] == [
        (f"dhcp-{net['id']}", "")]


async def test_admin_adds_and_removes_a_network(api: Api) -> None:
    a1, a2, a3 = (await register(api, "net-1"), await register(api, "net-2"),
                  await register(api, "net-3"))
    net, _ = await make_network(api, "alice", "n", "10.10.0.0/24")
    hosted = {p["binding:host_id"] for p in await dhcp_ports(api, net["id"])}
    spare = next(a for a, h in ((a1, "net-1"), (a2, "net-2"), (a3, "net-3"))
                 if h not in hosted)
    await api.ok("admin", "POST", f"/v2.0/agents/{spare}/dhcp-networks",
                 {"network_id": net["id"]})
    assert len(await dhcp_ports(api, net["id"])) == 3  # beyond dhcp_agents_per_network
    status, body = await api.call("admin", "POST", f"/v2.0/agents/{spare}/dhcp-networks",
                                  {"network_id": net["id"]})
    assert status == 409 and body["NeutronError"]["type"] == "NetworkHostedByDHCPAgent"
    await api.ok("admin", "DELETE", f"/v2.0/agents/{spare}/dhcp-networks/{net['id']}")
    assert len(await dhcp_ports(api, net["id"])) == 2
    status, body = await api.call("admin", "DELETE",
                                  f"/v2.0/agents/{spare}/dhcp-networks/{net['id']}")
    assert status == 409, body
    l3 = await register(api, "net-1", "L3 agent")
    status, body = await api.call("admin", "POST", f"/v2.0/agents/{l3}/dhcp-networks",
                                  {"network_id": net["id"]})
    assert status == 400 and "not a DHCP agent" in body["NeutronError"]["message"]
    status, _ = await api.call("alice", "POST", f"/v2.0/agents/{spare}/dhcp-networks",
                               {"network_id": net["id"]})
    assert status == 403
