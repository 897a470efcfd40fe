"""Port binding (binding:host_id, vif_type, profile) and server placement: forced host
(`host`, `availability_zone` zone:host) or the least-loaded alive compute host."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from openimds.cli.network_agents_cmd import wrong_host
from openimds.inventory.models import Agent, utcnow
from openimds.inventory.store import Store

from .conftest import Api, make_network


async def register(api: Api, host: str, agent_type: str = "Linux bridge agent") -> str:
    body = await api.ok("neutron", "POST", "/v2.0/agents", {"agent": {
        "agent_type": agent_type, "host": host}}, status=None)
    return str(body["agent"]["id"])


async def boot(api: Api, user: str, net_id: str, **extra: Any) -> tuple[int, Any]:
    return await api.call(user, "POST", "/v2.1/servers", {"server": {
        "name": "vm", "networks": [{"uuid": net_id}], **extra}})


async def port_of(api: Api, server_id: str) -> dict[str, Any]:
    ports = (await api.ok("admin", "GET", "/v2.0/ports", params={"device_id": server_id}))[
        "ports"]
    assert len(ports) == 1
    return dict(ports[0])


async def test_port_binding_attributes(api: Api) -> None:
    net, _ = await make_network(api, "alice", "n", "10.1.0.0/24")
    port = (await api.ok("alice", "POST", "/v2.0/ports", {"port": {
        "network_id": net["id"]}}))["port"]
    assert "binding:host_id" not in port  # tenants do not see bindings
    admin = (await api.ok("admin", "GET", f"/v2.0/ports/{port['id']}"))["port"]
    assert (admin["binding:host_id"], admin["binding:vif_type"], admin["binding:profile"],
            admin["binding:vnic_type"]) == ("", "unbound", {}, "normal")
    bound = (await api.ok("neutron", "PUT", f"/v2.0/ports/{port['id']}", {"port": {
        "binding:host_id": "cmp-1", "binding:profile": {"k": "v"}}}))["port"]
    assert (bound["binding:host_id"], bound["binding:vif_type"], bound["binding:profile"]) == (
        "cmp-1", "bridge", {"k": "v"})
    listed = (await api.ok("neutron", "GET", "/v2.0/ports",
                           params={"binding:host_id": "cmp-1"}))["ports"]
    assert [p["id"] for p in listed] == [port["id"]]
    status, body = await api.call("alice", "PUT", f"/v2.0/ports/{port['id']}", {"port": {
        "binding:host_id": "cmp-2"}})
    assert status == 403, body
    status, body = await api.call("admin", "PUT", f"/v2.0/ports/{port['id']}", {"port": {
        "binding:vnic_type": "direct"}})
    assert status == 400 and "direct" in body["NeutronError"]["message"]


async def test_one_host_cloud_leaves_ports_unbound(api: Api) -> None:
    net, _ = await make_network(api, "alice", "n", "10.2.0.0/24")
    status, body = await boot(api, "alice", net["id"])
    assert status == 202, body
    assert (await port_of(api, body["server"]["id"]))["binding:host_id"] == ""


async def test_scheduler_spreads_by_ports_and_skips_dead_and_disabled(
        api: Api, store: Store) -> None:
    net, _ = await make_network(api, "alice", "n", "10.3.0.0/24")
    await register(api, "cmp-b")
    await register(api, "cmp-a")
    dead = await register(api, "cmp-0")
    with store.session() as s:
        row = s.get(Agent, dead)
        assert row is not None
        row.heartbeat_timestamp = utcnow() - timedelta(seconds=1000)
    hosts = []
    for _ in range(4):
        status, body = await boot(api, "alice", net["id"])
        assert status == 202, body
        hosts.append((await port_of(api, body["server"]["id"]))["binding:host_id"])
    assert hosts == ["cmp-a", "cmp-b", "cmp-a", "cmp-b"]
    shown = (await api.ok("admin", "GET", f"/v2.1/servers/{body['server']['id']}"))["server"]
    assert shown["OS-EXT-SRV-ATTR:host"] == "cmp-b"
    for host in ("cmp-a", "cmp-b"):
        agent = (await api.ok("admin", "GET", "/v2.0/agents", params={"host": host}))["agents"]
        await api.ok("admin", "PUT", f"/v2.0/agents/{agent[0]['id']}",
                     {"agent": {"admin_state_up": False}})
    status, body = await boot(api, "alice", net["id"])
    assert status == 409 and "No valid host" in body["conflictingRequest"]["message"]


@pytest.mark.parametrize("placement", [{"host": "cmp-2"},
                                       {"availability_zone": "nova:cmp-2"}])
async def test_forced_host(api: Api, placement: dict[str, str]) -> None:
    net, _ = await make_network(api, "admin", "n", "10.4.0.0/24")
    await register(api, "cmp-1")
    await register(api, "cmp-2")
    status, body = await boot(api, "admin", net["id"], **placement)
    assert status == 202, body
    assert (await port_of(api, body["server"]["id"]))["binding:host_id"] == "cmp-2"
    assert body["server"]["OS-EXT-AZ:availability_zone"] == "nova"


@pytest.mark.parametrize(("user", "placement", "status", "fragment"), [
    ("alice", {"host": "cmp-1"}, 403, "Only an admin"),
    ("admin", {"host": "nowhere"}, 400, "Compute host nowhere could not be found"),
    ("admin", {"host": "cmp-1", "availability_zone": "nova:cmp-2"}, 400, "contradicts"),
])
async def test_forced_host_errors(api: Api, user: str, placement: dict[str, str], status: int,
                                  fragment: str) -> None:
    net, _ = await make_network(api, user, "n", "10.5.0.0/24")
    await register(api, "cmp-1")
    got, body = await boot(api, user, net["id"], **placement)
    assert got == status and fragment in str(body), body
    ports = (await api.ok("admin", "GET", "/v2.0/ports",
                          params={"device_owner": "compute:nova"}))["ports"]
    assert ports == []  # nothing written


@pytest.mark.parametrize(("bound", "host", "refused"), [
    ("", "cmp-1", False),
    ("cmp-1", "cmp-1", False),
    ("cmp-2", "cmp-1", True),
])
def test_port_plug_refuses_another_hosts_port(bound: str, host: str, refused: bool) -> None:
    reason = wrong_host({"id": "p1", "binding:host_id": bound}, host)
    assert (reason is not None) is refused
    if reason:
        assert "'cmp-2'" in reason and "run port plug on that host" in reason
