"""HA routers through the API: `ha`, the HA network, ha- ports, vr ids, l3-agents' ha_state."""

from __future__ import annotations

from typing import Any

import pytest

from openimds.control.call import Settings

from .conftest import Api, make_network

HA_OWNER = "network:router_ha_interface"


@pytest.fixture
def settings() -> Settings:
    return Settings(agent_down_time=30, max_l3_agents_per_router=2)


async def register(api: Api, host: str, **configurations: Any) -> str:
    status, body = await api.call("neutron", "POST", "/v2.0/agents", {"agent": {
        "agent_type": "L3 agent", "host": host, "configurations": configurations}})
    assert status in (200, 201), body
    return str(body["agent"]["id"])


async def router_ports(api: Api, router_id: str) -> list[dict[str, Any]]:
    return list((await api.ok("admin", "GET", "/v2.0/ports",
                              params={"device_id": router_id}))["ports"])


async def add_interface(api: Api, router_id: str, cidr: str, user: str = "alice") -> None:
    _, sub = await make_network(api, user, f"n-{cidr}", cidr)
    assert sub is not None
    await api.ok(user, "PUT", f"/v2.0/routers/{router_id}/add_router_interface",
                 {"subnet_id": sub["id"]})


async def test_two_alive_agents_make_routers_ha_on_max_agents(api: Api) -> None:
    for host in ("net-1", "net-2", "net-3"):
        await register(api, host)
    router = (await api.ok("alice", "POST", "/v2.0/routers", {"router": {"name": "r"}}))[
        "router"]
    assert "ha" not in router  # Neutron shows `ha` to admins only
    shown = (await api.ok("admin", "GET", f"/v2.0/routers/{router['id']}"))["router"]
    assert shown["ha"] is True and shown["ha_vr_id"] == 1
    await add_interface(api, router["id"], "10.1.0.0/24")
    ports = await router_ports(api, router["id"])
    ha_ports = [p for p in ports if p["device_owner"] == HA_OWNER]
    interfaces = [p for p in ports if p["device_owner"] == "network:router_interface"]
    assert len(ha_ports) == 2 and len({p["binding:host_id"] for p in ha_ports}) == 2
    assert [p["binding:host_id"] for p in interfaces] == [""]  # on every chosen host
    net = (await api.ok("admin", "GET", f"/v2.0/networks/{ha_ports[0]['network_id']}"))[
        "network"]
    assert net["name"] == f"HA network tenant {router['project_id']}"
    for p in ha_ports:
        assert p["fixed_ips"][0]["ip_address"].startswith("169.254.")
        assert p["name"] == f"HA port tenant {router['project_id']}"
    # A second interface adds no ha- port; a second router gets the next VRRP id.
    await add_interface(api, router["id"], "10.2.0.0/24")
    assert len([p for p in await router_ports(api, router["id"])
                if p["device_owner"] == HA_OWNER]) == 2
    other = (await api.ok("alice", "POST", "/v2.0/routers", {"router": {"name": "r2"}}))[
        "router"]
    assert (await api.ok("admin", "GET", f"/v2.0/routers/{other['id']}"))["router"][
        "ha_vr_id"] == 2


async def test_one_agent_alive_means_legacy_and_explicit_ha_needs_min_agents(api: Api) -> None:
    await register(api, "net-1")
    router = (await api.ok("admin", "POST", "/v2.0/routers", {"router": {"name": "r"}}))[
        "router"]
    assert router["ha"] is False
    status, body = await api.call("admin", "POST", "/v2.0/routers",
                                  {"router": {"name": "h", "ha": True}})
    assert status == 409 and body["NeutronError"]["type"] == "HANotEnoughAvailableAgents"


async def test_only_an_admin_sets_ha(api: Api) -> None:
    status, _ = await api.call("alice", "POST", "/v2.0/routers",
                               {"router": {"name": "r", "ha": False}})
    assert status == 403
    router = (await api.ok("alice", "POST", "/v2.0/routers", {"router": {"name": "r"}}))[
        "router"]
    status, _ = await api.call("alice", "PUT", f"/v2.0/routers/{router['id']}",
                               {"router": {"ha": True}})
    assert status == 403


async def test_ha_changes_only_while_down_and_moves_the_bindings(api: Api) -> None:
    for host in ("net-1", "net-2"):
        await register(api, host)
    router = (await api.ok("admin", "POST", "/v2.0/routers",
                           {"router": {"name": "r", "ha": False}}))["router"]
    await add_interface(api, router["id"], "10.3.0.0/24", "admin")
    rid = router["id"]
    status, body = await api.call("admin", "PUT", f"/v2.0/routers/{rid}",
                                  {"router": {"ha": True}})
    assert status == 400 and "admin_state_up to False" in body["NeutronError"]["message"]
    up = (await api.ok("admin", "PUT", f"/v2.0/routers/{rid}",
                       {"router": {"ha": True, "admin_state_up": False}}))["router"]
    assert up["ha"] is True
    ports = await router_ports(api, rid)
    assert len([p for p in ports if p["device_owner"] == HA_OWNER]) == 2
    assert [p["binding:host_id"] for p in ports
            if p["device_owner"] == "network:router_interface"] == [""]
    await api.ok("admin", "PUT", f"/v2.0/routers/{rid}", {"router": {"ha": False}})
    ports = await router_ports(api, rid)
    assert [p["device_owner"] for p in ports] == ["network:router_interface"]
    assert ports[0]["binding:host_id"] in ("net-1", "net-2")


async def test_l3_agents_show_ha_state_and_delete_removes_the_ha_network(api: Api) -> None:
    a1 = await register(api, "net-1")
    await register(api, "net-2")
    router = (await api.ok("alice", "POST", "/v2.0/routers", {"router": {"name": "r"}}))[
        "router"]
    rid = router["id"]
    await add_interface(api, rid, "10.4.0.0/24")
    agents = (await api.ok("admin", "GET", f"/v2.0/routers/{rid}/l3-agents"))["agents"]
    assert sorted((a["host"], a["ha_state"]) for a in agents) == [
        ("net-1", "standby"), ("net-2", "standby")]
    await register(api, "net-1", ha_routers={rid: "active"})
    agents = (await api.ok("admin", "GET", f"/v2.0/routers/{rid}/l3-agents"))["agents"]
    assert sorted((a["host"], a["ha_state"]) for a in agents) == [
        ("net-1", "active"), ("net-2", "standby")]
    hosted = (await api.ok("admin", "GET", f"/v2.0/agents/{a1}/l3-routers"))["routers"]
    assert [r["id"] for r in hosted] == [rid]
    port = next(p for p in await router_ports(api, rid)
                if p["device_owner"] == "network:router_interface")
    await api.ok("alice", "PUT", f"/v2.0/routers/{rid}/remove_router_interface",
                 {"port_id": port["id"]})
    await api.ok("alice", "DELETE", f"/v2.0/routers/{rid}")
    nets = (await api.ok("admin", "GET", "/v2.0/networks"))["networks"]
    assert not [n for n in nets if n["name"].startswith("HA network tenant")]


async def test_failover_moves_a_dead_agents_ha_port_to_the_free_agent(api: Api,
                                                                     store: Any) -> None:
    from datetime import timedelta

    from sqlalchemy import select

    from openimds.control.rescheduler import failover_pass
    from openimds.inventory.models import Agent, utcnow

    for host in ("net-1", "net-2", "net-3"):
        await register(api, host)
    router = (await api.ok("alice", "POST", "/v2.0/routers", {"router": {"name": "r"}}))[
        "router"]
    await add_interface(api, router["id"], "10.5.0.0/24")
    before = {p["binding:host_id"]: p for p in await router_ports(api, router["id"])
              if p["device_owner"] == HA_OWNER}
    assert len(before) == 2  # max_l3_agents_per_router = 2
    dead = sorted(before)[0]
    (free,) = {"net-1", "net-2", "net-3"} - set(before)
    with store.session() as s:
        for row in s.scalars(select(Agent).where(Agent.host == dead)):
            row.heartbeat_timestamp = utcnow() - timedelta(seconds=300)
    moves = failover_pass(store, Settings(agent_down_time=30))
    assert [(m.resource_id, m.from_host, m.to_host) for _, m in moves] == [
        (router["id"], dead, free)]
    after = {p["binding:host_id"]: p for p in await router_ports(api, router["id"])
             if p["device_owner"] == HA_OWNER}
    assert set(after) == set(before) - {dead} | {free}
    # The same port (address, MAC) on its new host; the interfaces stay unbound.
    assert after[free]["id"] == before[dead]["id"]
    assert after[free]["fixed_ips"] == before[dead]["fixed_ips"]
    assert [p["binding:host_id"] for p in await router_ports(api, router["id"])
            if p["device_owner"] == "network:router_interface"] == [""]
