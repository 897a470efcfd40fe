"""A tenant cannot inject network configuration into another tenant's instance (issue 16, 1).

The attack: as a member of project b, make a subnet with a DNS server and a default route of
b's choosing, then a port on it whose device_id is a's server (device_owner compute:nova, the
server's MAC). Before the fix the port was accepted and a's network_data.json gained a link with
b's static address, b's default route and b's DNS server.
"""

from __future__ import annotations

import json
from typing import Any

from openimds.inventory.store import Store
from openimds.metadata.identify import IdentifySettings
from openimds.metadata.respond import Responder, RespondSettings
from openimds.metadata.store_source import StoreSource
from tests.metadata.helpers import call, signed_headers

from .conftest import Api, make_network

SECRET = "binding-secret"
EVIL_DNS = "203.0.113.53"


async def _alice_server(api: Api) -> dict[str, Any]:
    net, _ = await make_network(api, "alice", "a-net", "10.0.0.0/24")
    body = await api.ok("alice", "POST", "/v2.1/servers", {"server": {
        "name": "victim", "networks": [{"uuid": net["id"]}]}}, status=202)
    server = body["server"]
    [port] = (await api.ok("alice", "GET", "/v2.0/ports",
                           params={"device_id": server["id"]}))["ports"]
    server["port"] = port
    return server


async def _bob_network(api: Api) -> tuple[dict[str, Any], dict[str, Any]]:
    net, sub = await make_network(
        api, "bob", "b-net", "192.168.77.0/24", dns_nameservers=[EVIL_DNS],
        host_routes=[{"destination": "0.0.0.0/0", "nexthop": "192.168.77.254"}])
    assert sub is not None
    return net, sub


def _evil_port(net: dict[str, Any], server: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"port": {"network_id": net["id"], "device_id": server["id"],
                     "device_owner": "compute:nova",
                     "mac_address": server["port"]["mac_address"],
                     "fixed_ips": [{"ip_address": "192.168.77.5"}], **extra}}


async def _trees(store: Store, server: dict[str, Any], project: str) -> tuple[Any, bytes]:
    """(network_data.json, EC2 local-ipv4) as a's guest would read them."""
    source = StoreSource(store)
    await source.start()
    try:
        responder = Responder(source, RespondSettings(identify=IdentifySettings(True, SECRET)))
        headers = signed_headers(server["id"], project, SECRET)
        nd = await call(responder, "/openstack/latest/network_data.json", headers=headers)
        local_ipv4 = await call(responder, "/latest/meta-data/local-ipv4", headers=headers)
    finally:
        await source.stop()
    assert nd.status == 200 and local_ipv4.status == 200, (nd, local_ipv4)
    return json.loads(nd.body), local_ipv4.body


def _assert_only_own(nd: Any, local_ipv4: bytes, server: dict[str, Any]) -> None:
    [link] = nd["links"]
    assert link["ethernet_mac_address"] == server["port"]["mac_address"]
    assert [n["link"] for n in nd["networks"]] == [link["id"]]
    text = json.dumps(nd)
    assert EVIL_DNS not in text and "192.168.77." not in text
    assert local_ipv4 == server["port"]["fixed_ips"][0]["ip_address"].encode()


async def test_member_cannot_bind_a_port_to_another_projects_instance(
        api: Api, store: Store) -> None:
    server = await _alice_server(api)
    net, _ = await _bob_network(api)
    status, body = await api.call("bob", "POST", "/v2.0/ports", _evil_port(net, server))
    assert status == 409, body
    assert body["NeutronError"]["type"] == "DeviceIDNotOwnedByTenant"
    # Nothing was written.
    assert (await api.ok("admin", "GET", "/v2.0/ports",
                         params={"network_id": net["id"], "device_owner": "compute:nova"})
            )["ports"] == []
    alice = (await api.ok("alice", "GET", f"/v2.1/servers/{server['id']}"))["server"]
    nd, local_ipv4 = await _trees(store, server, alice["tenant_id"])
    _assert_only_own(nd, local_ipv4, server)


async def test_member_cannot_rebind_a_port_to_another_projects_instance(api: Api) -> None:
    server = await _alice_server(api)
    net, _ = await _bob_network(api)
    port = (await api.ok("bob", "POST", "/v2.0/ports",
                         {"port": {"network_id": net["id"]}}))["port"]
    # Owner first, then the device; or both at once: each ends in the same refusal.
    await api.ok("bob", "PUT", f"/v2.0/ports/{port['id']}",
                 {"port": {"device_owner": "compute:az1"}})
    for change in ({"device_id": server["id"]},
                   {"device_id": server["id"], "device_owner": "compute:nova"}):
        status, body = await api.call("bob", "PUT", f"/v2.0/ports/{port['id']}",
                                      {"port": change})
        assert status == 409 and body["NeutronError"]["type"] == "DeviceIDNotOwnedByTenant"
    shown = (await api.ok("bob", "GET", f"/v2.0/ports/{port['id']}"))["port"]
    assert shown["device_id"] == ""


async def test_binding_within_the_instances_project_and_by_admin_is_allowed(api: Api) -> None:
    server = await _alice_server(api)
    own, _ = await make_network(api, "alice", "a-second", "10.1.0.0/24")
    await api.ok("alice", "POST", "/v2.0/ports", {"port": {
        "network_id": own["id"], "device_id": server["id"], "device_owner": "compute:nova"}})
    # A device id that names no instance is Neutron's business, not ours to refuse.
    await api.ok("bob", "POST", "/v2.0/ports", {"port": {
        "network_id": (await _bob_network(api))[0]["id"], "device_id": "not-an-instance",
        "device_owner": "compute:nova"}})


async def test_metadata_trees_show_only_the_instances_own_project_ports(
        api: Api, store: Store) -> None:
    server = await _alice_server(api)
    net, _ = await _bob_network(api)
    bob_project = (await api.ok("bob", "GET", f"/v2.0/networks/{net['id']}")
                   )["network"]["tenant_id"]
    # An admin may make such a port (admins are trusted), but it still never reaches a's trees.
    await api.ok("admin", "POST", "/v2.0/ports", _evil_port(net, server, tenant_id=bob_project))
    alice = (await api.ok("alice", "GET", f"/v2.1/servers/{server['id']}"))["server"]
    nd, local_ipv4 = await _trees(store, server, alice["tenant_id"])
    _assert_only_own(nd, local_ipv4, server)


async def test_direct_mode_does_not_serve_an_instance_to_another_projects_address(
        api: Api, store: Store) -> None:
    server = await _alice_server(api)
    net, _ = await _bob_network(api)
    bob_project = (await api.ok("bob", "GET", f"/v2.0/networks/{net['id']}")
                   )["network"]["tenant_id"]
    await api.ok("admin", "POST", "/v2.0/ports", _evil_port(net, server, tenant_id=bob_project))
    source = StoreSource(store)
    await source.start()
    try:
        responder = Responder(source, RespondSettings(
            identify=IdentifySettings(service_metadata_proxy=False)))
        stolen = await call(responder, "/latest/meta-data/instance-id", peer="192.168.77.5")
        assert stolen.status == 404
        own_ip = server["port"]["fixed_ips"][0]["ip_address"]
        assert (await call(responder, "/latest/meta-data/hostname", peer=own_ip)).status == 200
    finally:
        await source.stop()
