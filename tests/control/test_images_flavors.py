"""Images (Glance v2 shapes under /image/v2), flavors (/v2.1/flavors, seeded m1.*), servers
resolving both by name or id, and the token catalog naming every service where it listens."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from openimds.control.call import Settings
from openimds.inventory.models import Instance
from openimds.inventory.store import Store

from .conftest import Api


async def test_seeded_flavors_list_detail_show(api: Api) -> None:
    brief = (await api.ok("alice", "GET", "/v2.1/flavors"))["flavors"]
    assert [f["name"] for f in brief] == ["m1.tiny", "m1.small", "m1.medium", "m1.large",
                                          "m1.xlarge"]
    assert [f["id"] for f in brief] == ["1", "2", "3", "4", "5"]
    detail = (await api.ok("alice", "GET", "/v2.1/flavors/detail",
                           params={"minRam": "4096"}))["flavors"]
    assert [(f["name"], f["vcpus"], f["ram"], f["disk"]) for f in detail] == [
        ("m1.medium", 2, 4096, 40), ("m1.large", 4, 8192, 80), ("m1.xlarge", 8, 16384, 160)]
    tiny = (await api.ok("alice", "GET", "/v2.1/flavors/1"))["flavor"]
    assert tiny["os-flavor-access:is_public"] is True and tiny["swap"] == ""
    assert (await api.ok("alice", "GET", "/v2.1/flavors/1/os-extra_specs")) == {
        "extra_specs": {}}
    status, body = await api.call("alice", "GET", "/v2.1/flavors/nope")
    assert status == 404 and "itemNotFound" in body


async def test_flavor_create_and_delete_are_admin_only(api: Api) -> None:
    flavor = {"flavor": {"name": "c1.big", "ram": 1024, "vcpus": 2, "disk": 10,
                         "id": "c1", "os-flavor-access:is_public": False}}
    status, _ = await api.call("alice", "POST", "/v2.1/flavors", flavor)
    assert status == 403
    made = (await api.ok("admin", "POST", "/v2.1/flavors", flavor, status=200))["flavor"]
    assert made["id"] == "c1" and made["os-flavor-access:is_public"] is False
    status, _ = await api.call("admin", "POST", "/v2.1/flavors", flavor)
    assert status == 409
    # Private: admins see it, members do not.
    assert "c1.big" in [f["name"] for f in (await api.ok("admin", "GET",
                                                         "/v2.1/flavors"))["flavors"]]
    assert "c1.big" not in [f["name"] for f in (await api.ok("alice", "GET",
                                                             "/v2.1/flavors"))["flavors"]]
    status, _ = await api.call("alice", "DELETE", "/v2.1/flavors/c1")
    assert status == 403
    await api.ok("admin", "DELETE", "/v2.1/flavors/c1", status=202)
    status, _ = await api.call("admin", "GET", "/v2.1/flavors/c1")
    assert status == 404
    status, _ = await api.call("admin", "POST", "/v2.1/flavors", {"flavor": {
        "name": "bad", "ram": 0, "vcpus": 1, "disk": 1}})
    assert status == 400


async def test_images_glance_shapes_and_visibility(api: Api) -> None:
    status, body = await api.call("alice", "POST", "/image/v2/images", {
        "name": "cirros", "disk_format": "qcow2", "container_format": "bare",
        "visibility": "public"})
    assert status == 403  # only admins publish
    public = await api.ok("admin", "POST", "/image/v2/images", {
        "name": "cirros", "disk_format": "qcow2", "container_format": "bare",
        "visibility": "public", "os_distro": "cirros"})
    assert public["status"] == "active" and public["os_distro"] == "cirros"
    assert len(public["id"]) == 36 and public["self"] == f"/v2/images/{public['id']}"
    mine = await api.ok("alice", "POST", "/image/v2/images", {"name": "alice-img"})
    assert mine["visibility"] == "shared" and mine["disk_format"] is None
    names = {i["name"] for i in (await api.ok("bob", "GET", "/image/v2/images"))["images"]}
    assert names == {"cirros"}
    status, _ = await api.call("bob", "GET", f"/image/v2/images/{mine['id']}")
    assert status == 404
    shown = await api.ok("alice", "GET", f"/image/v2/images/{mine['id']}")
    assert shown["name"] == "alice-img"
    listed = await api.ok("alice", "GET", "/image/v2/images", params={"name": "cirros"})
    assert [i["id"] for i in listed["images"]] == [public["id"]]
    status, _ = await api.call("alice", "POST", "/image/v2/images", {"name": "cirros"})
    assert status == 409
    status, _ = await api.call("alice", "POST", "/image/v2/images", {"name": "x",
                                                                      "disk_format": "exe"})
    assert status == 400
    status, _ = await api.call("bob", "DELETE", f"/image/v2/images/{public['id']}")
    assert status == 403
    await api.ok("alice", "DELETE", f"/image/v2/images/{mine['id']}")


async def test_server_resolves_image_and_flavor_by_name_or_id(api: Api, store: Store) -> None:
    image = await api.ok("admin", "POST", "/image/v2/images", {
        "name": "cirros-0.6", "disk_format": "qcow2", "container_format": "bare",
        "visibility": "public"})
    for image_ref, flavor_ref in ((image["id"], "1"), ("cirros-0.6", "m1.tiny")):
        body = await api.ok("alice", "POST", "/v2.1/servers", {"server": {
            "name": "vm", "imageRef": image_ref, "flavorRef": flavor_ref}}, status=202)
        srv = body["server"]
        assert srv["image"]["id"] == image["id"]
        assert srv["flavor"]["id"] == "1"
        with store.read() as s:
            inst = s.scalars(select(Instance).where(Instance.uuid == srv["id"])).one()
            assert (inst.flavor, inst.flavor_id) == ("m1.tiny", "1")
            assert inst.image is not None and inst.image.uuid == image["id"]
    # From microversion 2.47 the flavor is embedded.
    resp = await api.client.get(f"/v2.1/servers/{srv['id']}", headers={
        "X-Auth-Token": api.tokens["alice"], "OpenStack-API-Version": "compute 2.47"})
    flavor = (await resp.json())["server"]["flavor"]
    assert flavor == {"original_name": "m1.tiny", "vcpus": 1, "ram": 512, "disk": 1,
                      "ephemeral": 0, "swap": 0, "extra_specs": {}}
    status, body = await api.call("alice", "POST", "/v2.1/servers", {"server": {
        "name": "vm", "flavorRef": "m9.huge"}})
    assert status == 400 and "m9.huge" in body["badRequest"]["message"]
    status, body = await api.call("alice", "POST", "/v2.1/servers", {"server": {
        "name": "vm", "imageRef": "00000000-0000-4000-8000-000000000000"}})
    assert status == 400
    # The image cannot go while a server uses it.
    status, _ = await api.call("admin", "DELETE", f"/image/v2/images/{image['id']}")
    assert status == 409


def _catalog(body: dict[str, Any]) -> dict[str, str]:
    return {svc["type"]: next(e["url"] for e in svc["endpoints"] if e["interface"] == "public")
            for svc in body["token"]["catalog"]}


async def test_catalog_names_every_service(api: Api) -> None:
    from .conftest import PASSWORD, v3_body

    resp = await api.client.post("/v3/auth/tokens", json=v3_body("alice", PASSWORD, "a"))
    catalog = _catalog(await resp.json())
    base = str(api.client.make_url("")).rstrip("/")
    assert catalog == {"identity": f"{base}/v3", "network": base, "compute": f"{base}/v2.1",
                       "image": f"{base}/image", "metadata": "http://127.0.0.1:8775"}


def test_catalog_follows_the_effective_options(tmp_path: Any) -> None:
    from openimds.config import load_config
    from openimds.control.settings import settings_from_conf

    conf_file = tmp_path / "c.conf"
    conf_file.write_text("[DEFAULT]\nbind_host = 127.0.0.2\nbind_port = 19999\n"
                         "metadata_listen = 127.0.0.3\nmetadata_listen_port = 18999\n"
                         "region_name = RegionTwo\n")
    settings = settings_from_conf(load_config("control-api", [str(conf_file)], []))
    assert settings == Settings(bind_host="127.0.0.2", bind_port=19999, region="RegionTwo",
                                public_url="http://127.0.0.2:19999",
                                metadata_url="http://127.0.0.3:18999", metadata_port=18999)
    wildcard = tmp_path / "w.conf"
    wildcard.write_text("[DEFAULT]\nbind_host = 0.0.0.0\nmetadata_listen_port = 18775\n")
    settings = settings_from_conf(load_config("control-api", [str(wildcard)], []))
    assert (settings.public_url, settings.metadata_url, settings.metadata_port) == (
        None, None, 18775)


async def test_image_upload_is_measured(api: Api) -> None:
    import hashlib

    image = await api.ok("alice", "POST", "/image/v2/images", {"name": "up"})
    resp = await api.client.put(f"/image/v2/images/{image['id']}/file", data=b"\x00disk",
                                headers={"X-Auth-Token": api.tokens["alice"],
                                         "Content-Type": "application/octet-stream"})
    assert resp.status == 204
    shown = await api.ok("alice", "GET", f"/image/v2/images/{image['id']}")
    assert shown["size"] == 5
    assert shown["checksum"] == hashlib.md5(b"\x00disk").hexdigest()
    assert shown["os_hash_algo"] == "sha512"
    resp = await api.client.put(f"/image/v2/images/{image['id']}/file", data=b"again",
                                headers={"X-Auth-Token": api.tokens["alice"]})
    assert resp.status == 409


async def test_server_boots_from_the_block_device_mapping_image(api: Api) -> None:
    image = await api.ok("admin", "POST", "/image/v2/images", {"name": "bdm",
                                                               "visibility": "public"})
    bdm = [{"uuid": image["id"], "boot_index": 0, "source_type": "image",
            "destination_type": "local", "delete_on_termination": True}]
    body = await api.ok("alice", "POST", "/v2.1/servers", {"server": {
        "name": "vm", "imageRef": image["id"], "block_device_mapping_v2": bdm}}, status=202)
    assert body["server"]["image"]["id"] == image["id"]
    status, _ = await api.call("alice", "POST", "/v2.1/servers", {"server": {
        "name": "vm", "block_device_mapping_v2": [{"source_type": "volume", "uuid": "x",
                                                   "destination_type": "volume"}]}})
    assert status == 400
