"""Servers and key pairs (Nova v2.1 shapes), the change feed, and the error edge."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import pytest
from sqlalchemy import select

from openimds.control.keypairs import fingerprint
from openimds.control.servers import sanitize_hostname
from openimds.inventory.models import Instance
from openimds.inventory.store import Store

from .conftest import Api, make_network

# A real ed25519 public key from ssh-keygen, and its `ssh-keygen -l -E md5` fingerprint.
ED25519 = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAG1MI0O4S9J1wP+2c0NLFBUzqG8KeAvTkrmjdXuGY9r "
           "test@example")
ED25519_MD5 = "f0:ae:f1:b7:ac:ba:f6:38:f6:1f:d5:71:b3:6b:b9:bc"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def server(api: Api, user: str, **body: Any) -> tuple[int, Any]:
    return await api.call(user, "POST", "/v2.1/servers", {"server": body})


async def test_create_show_list_delete_server(api: Api, store: Store) -> None:
    net, _ = await make_network(api, "alice", "private", "10.0.0.0/24")
    await api.ok("alice", "POST", "/v2.1/os-keypairs",
                 {"keypair": {"name": "k1", "public_key": ED25519}})
    status, body = await server(
        api, "alice", name="Web Server_1", networks=[{"uuid": net["id"],
                                                      "fixed_ip": "10.0.0.50"}],
        user_data=b64(b"#cloud-config\n"), metadata={"role": "web"}, key_name="k1",
        availability_zone="az1", flavorRef="m1.tiny", imageRef="cirros-0.6")
    assert status == 202, body
    srv = body["server"]
    assert srv["name"] == "Web Server_1" and srv["status"] == "ACTIVE"
    assert srv["metadata"] == {"role": "web"} and srv["key_name"] == "k1"
    assert srv["OS-EXT-AZ:availability_zone"] == "az1"
    assert srv["flavor"]["id"] == "1"  # microversion 2.1: a link to the flavor
    assert srv["image"]["name"] == "cirros-0.6" and len(srv["image"]["id"]) == 36
    assert srv["OS-EXT-SRV-ATTR:hostname"] == "web-server-1"
    assert srv["OS-EXT-SRV-ATTR:reservation_id"].startswith("r-")
    [addr] = srv["addresses"]["private"]
    assert addr["addr"] == "10.0.0.50" and addr["version"] == 4
    # Its port: compute:<az>, device_id = server uuid, holding the address.
    [port] = (await api.ok("alice", "GET", "/v2.0/ports",
                           params={"device_id": srv["id"]}))["ports"]
    assert port["device_owner"] == "compute:az1"
    assert port["mac_address"] == addr["OS-EXT-IPS-MAC:mac_addr"]
    # What the metadata API will read is in the inventory.
    with store.read() as s:
        inst = s.scalars(select(Instance).where(Instance.uuid == srv["id"])).one()
        assert inst.user_data == b"#cloud-config\n"
        assert inst.key_data == ED25519 and inst.properties == {"role": "web"}
    shown = (await api.ok("alice", "GET", f"/v2.1/servers/{srv['id']}"))["server"]
    assert shown["addresses"] == srv["addresses"]
    brief = (await api.ok("alice", "GET", "/v2.1/servers"))["servers"]
    assert [s["id"] for s in brief] == [srv["id"]] and set(brief[0]) == {"id", "name", "links"}
    detail = (await api.ok("alice", "GET", "/v2.1/servers/detail",
                           params={"name": "^Web"}))["servers"]
    assert [s["id"] for s in detail] == [srv["id"]]
    assert (await api.ok("bob", "GET", "/v2.1/servers/detail"))["servers"] == []
    status, body = await api.call("bob", "GET", f"/v2.1/servers/{srv['id']}")
    assert status == 404 and "itemNotFound" in body
    await api.ok("alice", "DELETE", f"/v2.1/servers/{srv['id']}")
    assert (await api.ok("alice", "GET", "/v2.0/ports",
                         params={"device_id": srv["id"]}))["ports"] == []
    # The address is free again.
    status, body = await server(api, "alice", name="again",
                                networks=[{"uuid": net["id"], "fixed_ip": "10.0.0.50"}])
    assert status == 202, body


async def test_server_on_existing_port(api: Api) -> None:
    net, _ = await make_network(api, "alice", "n", "10.0.0.0/24")
    port = (await api.ok("alice", "POST", "/v2.0/ports",
                         {"port": {"network_id": net["id"]}}))["port"]
    status, body = await server(api, "alice", name="vm", networks=[{"port": port["id"]}])
    assert status == 202, body
    shown = (await api.ok("alice", "GET", f"/v2.0/ports/{port['id']}"))["port"]
    assert shown["device_id"] == body["server"]["id"]
    status, _ = await server(api, "alice", name="vm2", networks=[{"port": port["id"]}])
    assert status == 409
    # Deleting the server unbinds the user's port (as Nova does) rather than deleting it.
    status, _ = await api.call("alice", "DELETE", f"/v2.1/servers/{body['server']['id']}")
    assert status == 204
    kept = (await api.ok("alice", "GET", f"/v2.0/ports/{port['id']}"))["port"]
    assert (kept["device_id"], kept["device_owner"]) == ("", "")
    assert kept["fixed_ips"] == port["fixed_ips"]


async def test_server_failures_leave_nothing_behind(api: Api) -> None:
    net, _ = await make_network(api, "alice", "n", "10.0.0.0/24")
    await api.ok("alice", "POST", "/v2.0/ports", {"port": {
        "network_id": net["id"], "fixed_ips": [{"ip_address": "10.0.0.9"}]}})
    # The second network entry clashes, after the first one got its port.
    status, body = await server(api, "alice", name="vm", networks=[
        {"uuid": net["id"]}, {"uuid": net["id"], "fixed_ip": "10.0.0.9"}])
    assert status == 409 and body["conflictingRequest"]["code"] == 409
    status, body = await server(api, "alice", name="vm", networks=[{"uuid": net["id"]}],
                                key_name="missing")
    assert status == 400 and "badRequest" in body
    assert (await api.ok("alice", "GET", "/v2.1/servers"))["servers"] == []
    ports = (await api.ok("alice", "GET", "/v2.0/ports"))["ports"]
    assert len(ports) == 2  # DHCP + the 10.0.0.9 port


async def test_user_data_limit_is_413_at_64_kib(api: Api) -> None:
    status, body = await server(api, "alice", name="big", user_data=b64(b"x" * (64 * 1024)))
    assert status == 202, body
    status, body = await server(api, "alice", name="big", user_data=b64(b"x" * (64 * 1024 + 1)))
    assert status == 413 and body["requestEntityTooLarge"]["code"] == 413
    status, body = await server(api, "alice", name="bad", user_data="!!!not base64")
    assert status == 400


@pytest.mark.parametrize("body", [
    {}, {"name": ""}, {"name": 3}, {"name": "x", "metadata": {"k": 1}},
    {"name": "x", "metadata": []}, {"name": "x", "networks": [{"uuid": "a", "port": "b"}]},
    {"name": "x", "networks": "auto"}, {"name": "x", "networks": [{"uuid": "a",
                                                                 "fixed_ip": "nope"}]},
    {"name": "x", "max_count": 3}, {"name": "x", "whatever": 1},
])
async def test_server_validation_is_400_nova_shaped(api: Api, body: dict[str, Any]) -> None:
    status, err = await server(api, "alice", **body)
    assert status == 400, err
    assert err["badRequest"]["message"]


@pytest.mark.parametrize("name,expected", [
    ("Web Server_1", "web-server-1"), ("my.host.name", "my-host-name"),
    ("--weird!!name--", "weirdname"), ("日本", "server-x"), ("a" * 80, "a" * 63),
])
def test_sanitize_hostname_follows_nova(name: str, expected: str) -> None:
    assert sanitize_hostname(name, "server-x") == expected


async def test_keypairs(api: Api) -> None:
    kp = (await api.ok("alice", "POST", "/v2.1/os-keypairs",
                       {"keypair": {"name": "mine", "public_key": ED25519}}))["keypair"]
    assert kp["fingerprint"] == fingerprint(ED25519) == ED25519_MD5
    status, _ = await api.call("alice", "POST", "/v2.1/os-keypairs",
                               {"keypair": {"name": "mine", "public_key": ED25519}})
    assert status == 409
    listed = (await api.ok("alice", "GET", "/v2.1/os-keypairs"))["keypairs"]
    assert [k["keypair"]["name"] for k in listed] == ["mine"]
    assert (await api.ok("bob", "GET", "/v2.1/os-keypairs"))["keypairs"] == []
    status, _ = await api.call("bob", "GET", "/v2.1/os-keypairs/mine")
    assert status == 404
    await api.ok("alice", "GET", "/v2.1/os-keypairs/mine")
    for bad in ("ssh-rsa", "ssh-ed25519 !!!", "foo AAAA", ED25519.replace("ssh-ed25519",
                                                                           "ssh-rsa")):
        status, _ = await api.call("alice", "POST", "/v2.1/os-keypairs",
                                   {"keypair": {"name": "bad", "public_key": bad}})
        assert status == 400, bad
    # Without a public key, one is generated (Nova before 2.92); see test_server_actions.py.
    generated = await api.ok("alice", "POST", "/v2.1/os-keypairs", {"keypair": {"name": "g"}})
    assert "private_key" in generated["keypair"]
    await api.ok("alice", "DELETE", "/v2.1/os-keypairs/g", status=202)
    await api.ok("alice", "DELETE", "/v2.1/os-keypairs/mine", status=202)
    assert (await api.ok("alice", "GET", "/v2.1/os-keypairs"))["keypairs"] == []


# ---- the change feed ----------------------------------------------------------------------


async def test_changes_since_and_long_poll(api: Api) -> None:
    first = await api.ok("neutron", "GET", "/v2.0/changes", params={"since": "0", "limit": "0"})
    assert first["changes"] == []
    start = first["current_revision"]
    poll = asyncio.create_task(api.call("neutron", "GET", "/v2.0/changes",
                                        params={"since": str(start), "timeout": "10"}))
    await asyncio.sleep(0.3)
    assert not poll.done()  # it is waiting
    net, _ = await make_network(api, "alice", "n")
    status, page = await asyncio.wait_for(poll, 5)
    assert status == 200
    assert page["changes"][0] == {"revision": start + 1, "resource": "network",
                                  "resource_id": net["id"], "op": "create"}
    assert page["revision"] == page["changes"][-1]["revision"]
    await api.ok("alice", "DELETE", f"/v2.0/networks/{net['id']}")
    later = await api.ok("admin", "GET", "/v2.0/changes", params={"since": page["revision"]})
    assert [(c["resource"], c["op"]) for c in later["changes"]] == [("network", "delete")]
    # An empty poll returns after its timeout with the cursor unchanged.
    empty = await api.ok("admin", "GET", "/v2.0/changes",
                         params={"since": later["revision"], "timeout": "0.2"})
    assert empty["changes"] == [] and empty["revision"] == later["revision"]
    for bad in ({"since": "x"}, {"since": "-1"}, {"timeout": "nan"}, {"since": str(2**70)}):
        status, _ = await api.call("admin", "GET", "/v2.0/changes", params=bad)
        assert status == 400, bad


async def test_a_pruned_change_feed_answers_410_and_the_head_still_works(
        api: Api, store: Store) -> None:
    from openimds.inventory.retention import Retention

    for name in ("a", "b", "c"):
        await make_network(api, "alice", name)
    head = await api.ok("admin", "GET", "/v2.0/changes", params={"since": "0", "limit": "0"})
    top = head["current_revision"]
    assert store.prune_changes(Retention(max_age_seconds=0, max_count=1)) == top - 1
    status, body = await api.call("admin", "GET", "/v2.0/changes", params={"since": "0"})
    assert status == 410
    assert body["NeutronError"]["type"] == "ChangesPruned"
    assert "list the resources again" in body["NeutronError"]["message"]
    # A watcher that re-lists starts from the head (limit=0 never fails) and goes on.
    again = await api.ok("admin", "GET", "/v2.0/changes", params={"since": "0", "limit": "0"})
    assert again["current_revision"] == top
    net, _ = await make_network(api, "alice", "d")
    page = await api.ok("admin", "GET", "/v2.0/changes", params={"since": str(top)})
    assert [c["resource_id"] for c in page["changes"]] == [net["id"]]


# ---- the error edge ------------------------------------------------------------------------


async def test_errors_are_json_never_tracebacks(api: Api) -> None:
    token = {"X-Auth-Token": api.tokens["alice"]}
    resp = await api.client.post("/v2.0/networks", data=b"{not json", headers=token)
    assert resp.status == 400
    assert (await resp.json())["NeutronError"]["type"] == "MalformedRequestBody"
    resp = await api.client.get("/v2.0/nothing-here", headers=token)
    assert resp.status == 404 and "NeutronError" in await resp.json()
    resp = await api.client.patch("/v2.0/networks", headers=token)
    assert resp.status == 405 and "NeutronError" in await resp.json()
    resp = await api.client.post("/v2.0/networks", data=b"x" * (2 * 1024 * 1024),
                                 headers=token)
    assert resp.status == 413
    assert "Traceback" not in await resp.text()
