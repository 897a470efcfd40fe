"""The agent registry through the HTTP API and the agents' reporter (control/agents.py,
control/report.py)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest

from openimds.control.call import Settings
from openimds.control.client import ControlClient
from openimds.control.report import AgentReport, report_once, report_state_loop
from openimds.inventory.models import Agent, utcnow
from openimds.inventory.store import Store

from .conftest import PASSWORD, Api

DOWN_TIME = 30


@pytest.fixture
def settings() -> Settings:
    return Settings(agent_down_time=DOWN_TIME)


def report(agent_type: str, host: str, **extra: Any) -> dict[str, Any]:
    return {"agent": {"agent_type": agent_type, "host": host, **extra}}


def age(store: Store, agent_id: str, seconds: float) -> None:
    """Move an agent's last heartbeat into the past (instead of waiting for it)."""
    with store.session() as s:
        row = s.get(Agent, agent_id)
        assert row is not None
        row.heartbeat_timestamp = utcnow() - timedelta(seconds=seconds)


async def test_report_registers_then_heartbeats(api: Api) -> None:
    first = (await api.ok("neutron", "POST", "/v2.0/agents", report(
        "DHCP agent", "net-1", configurations={"networks": 0}, availability_zone="nova",
        start_flag=True), status=201))["agent"]
    assert {k: first[k] for k in ("agent_type", "binary", "topic", "host", "alive",
                                  "admin_state_up", "availability_zone", "configurations")} == {
        "agent_type": "DHCP agent", "binary": "neutron-dhcp-agent", "topic": "dhcp_agent",
        "host": "net-1", "alive": True, "admin_state_up": True, "availability_zone": "nova",
        "configurations": {"networks": 0}}
    assert len(first["heartbeat_timestamp"]) == 19 and " " in first["heartbeat_timestamp"]
    again = (await api.ok("neutron", "POST", "/v2.0/agents", report(
        "DHCP agent", "net-1", configurations={"networks": 3}), status=200))["agent"]
    assert again["id"] == first["id"] and again["configurations"] == {"networks": 3}
    assert again["started_at"] == first["started_at"]
    listed = (await api.ok("admin", "GET", "/v2.0/agents"))["agents"]
    assert [x["id"] for x in listed] == [first["id"]]


async def test_alive_turns_false_after_agent_down_time(api: Api, store: Store) -> None:
    dhcp = (await api.ok("neutron", "POST", "/v2.0/agents", report("DHCP agent", "n1"),
                         status=201))["agent"]
    l3 = (await api.ok("neutron", "POST", "/v2.0/agents", report("L3 agent", "n1"),
                       status=201))["agent"]
    age(store, dhcp["id"], DOWN_TIME + 1)
    age(store, l3["id"], DOWN_TIME - 5)
    shown = (await api.ok("admin", "GET", f"/v2.0/agents/{dhcp['id']}"))["agent"]
    assert shown["alive"] is False
    dead = (await api.ok("admin", "GET", "/v2.0/agents", params={"alive": "false"}))["agents"]
    assert [x["id"] for x in dead] == [dhcp["id"]]
    # a report brings it back
    await api.ok("neutron", "POST", "/v2.0/agents", report("DHCP agent", "n1"), status=200)
    assert (await api.ok("admin", "GET", f"/v2.0/agents/{dhcp['id']}"))["agent"]["alive"]


async def test_admin_disables_and_deletes_only_dead_agents(api: Api, store: Store) -> None:
    agent = (await api.ok("neutron", "POST", "/v2.0/agents", report("L3 agent", "n2"),
                          status=201))["agent"]
    upd = (await api.ok("admin", "PUT", f"/v2.0/agents/{agent['id']}", {"agent": {
        "admin_state_up": False, "description": "maintenance"}}))["agent"]
    assert upd["admin_state_up"] is False and upd["description"] == "maintenance"
    status, body = await api.call("admin", "DELETE", f"/v2.0/agents/{agent['id']}")
    assert status == 409 and "is alive" in body["NeutronError"]["message"]
    age(store, agent["id"], DOWN_TIME + 1)
    await api.ok("admin", "DELETE", f"/v2.0/agents/{agent['id']}")
    status, body = await api.call("admin", "GET", f"/v2.0/agents/{agent['id']}")
    assert status == 404 and body["NeutronError"]["type"] == "AgentNotFound"


@pytest.mark.parametrize(("user", "method", "path", "body", "status"), [
    ("alice", "GET", "/v2.0/agents", None, 403),
    ("alice", "POST", "/v2.0/agents", report("DHCP agent", "x"), 403),
    ("neutron", "PUT", "/v2.0/agents/x", {"agent": {"admin_state_up": False}}, 403),
    ("neutron", "POST", "/v2.0/agents", report("Open vSwitch agent", "x"), 400),
    ("neutron", "POST", "/v2.0/agents", report("DHCP agent", " "), 400),
    ("neutron", "POST", "/v2.0/agents", {"agent": {"agent_type": "DHCP agent"}}, 400),
    ("neutron", "POST", "/v2.0/agents", report("DHCP agent", "x", configurations=[]), 400),
    ("admin", "GET", "/v2.0/agents/nope", None, 404),
])
async def test_agent_errors(api: Api, user: str, method: str, path: str, body: Any,
                           status: int) -> None:
    got, reply = await api.call(user, method, path, body)
    assert got == status, reply
    assert (await api.ok("admin", "GET", "/v2.0/agents"))["agents"] == []


def base(api: Api) -> str:
    return str(api.client.make_url("")).rstrip("/")


async def test_reporter_registers_with_start_flag_and_keeps_reporting(api: Api) -> None:
    calls = {"n": 0}

    def configurations() -> dict[str, Any]:
        calls["n"] += 1
        return {"routers": calls["n"]}

    async with ControlClient(base(api), "neutron", PASSWORD, "service") as client:
        task = asyncio.create_task(report_state_loop(
            client, AgentReport("L3 agent", "net-9", configurations), 0.05))
        try:
            for _ in range(200):  # wait for the third report (condition, not a fixed time)
                listed = (await api.ok("admin", "GET", "/v2.0/agents"))["agents"]
                if listed and listed[0]["configurations"]["routers"] >= 3:
                    break
                await asyncio.sleep(0.05)
            else:
                pytest.fail("no third report")
        finally:
            task.cancel()
    assert listed[0]["host"] == "net-9" and listed[0]["alive"] is True


async def test_reporter_survives_a_refused_report(api: Api) -> None:
    async with ControlClient(base(api), "alice", PASSWORD, "a") as client:
        assert await report_once(client, AgentReport("L3 agent", "h"), start_flag=True) is False
    async with ControlClient("http://127.0.0.1:1", "neutron", PASSWORD, "service",
                             timeout=2) as client:
        assert await report_once(client, AgentReport("L3 agent", "h"), start_flag=True) is False
