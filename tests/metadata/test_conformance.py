"""Table-driven conformance: the spec's paths, for a full and a minimal instance, in both modes.

Expected bodies are copied from the spec (nova-metadata-api.md), never produced by our code.
Direct mode needs an address, so there the minimal instance has one port on a bare DHCP subnet
(no gateway, no DNS); in proxy mode it has no port at all.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import date

import pytest

from openimds.metadata.identify import IdentifySettings
from openimds.metadata.respond import Responder, RespondSettings
from openimds.metadata.source import DictSource
from openimds.metadata.view import FixedIPView, InstanceView, PortView, SubnetView
from tests.metadata.fixtures import KEY, SECRET, full_view, minimal_view
from tests.metadata.helpers import call, signed_headers

TEXT = "text/plain; charset=UTF-8"
JSON = "application/json"
HTML = "text/html; charset=UTF-8"

EC2_LIST = (
    b"1.0\n2007-01-19\n2007-03-01\n2007-08-29\n2007-10-10\n2007-12-15\n2008-02-01\n"
    b"2008-09-01\n2009-04-04\nlatest"
)
OS_LIST = (
    b"2012-08-10\n2013-04-04\n2013-10-17\n2015-10-15\n2016-06-30\n2016-10-06\n2017-02-22\n"
    b"2018-08-27\n2020-10-14\n2025-04-04\nlatest"
)
MD_LATEST_FULL = (
    "ami-id ami-launch-index ami-manifest-path block-device-mapping/ hostname instance-action "
    "instance-id instance-type local-hostname local-ipv4 placement/ public-hostname public-ipv4 "
    "public-keys/ reservation-id security-groups"
)
MD_10_FULL = (
    "ami-id ami-launch-index ami-manifest-path hostname instance-id local-ipv4 public-keys/ "
    "reservation-id security-groups"
)
NETWORK_DATA_A = (
    '{"links": [{"id": "tapcd9f6d46-4a", "vif_id": "cd9f6d46-4a3a-43ab-a466-994af9db96fc", '
    '"type": "ovs", "mtu": 1450, "ethernet_mac_address": "fa:16:3e:9c:bf:3d"}], "networks": '
    '[{"id": "network0", "type": "ipv4", "link": "tapcd9f6d46-4a", "ip_address": "10.0.0.5", '
    '"netmask": "255.255.255.0", "routes": [{"network": "0.0.0.0", "netmask": "0.0.0.0", '
    '"gateway": "10.0.0.1"}, {"network": "172.16.0.0", "netmask": "255.255.0.0", "gateway": '
    '"10.0.0.254"}], "network_id": "99e88329-f20d-4741-9593-25bf07847b16", "services": '
    '[{"type": "dns", "address": "8.8.8.8"}]}, {"id": "network1", "type": "ipv6_slaac", "link": '
    '"tapcd9f6d46-4a", "ip_address": "2001:db8::5", "netmask": "ffff:ffff:ffff:ffff::", '
    '"routes": [{"network": "::", "netmask": "::", "gateway": "2001:db8::1"}], "network_id": '
    '"99e88329-f20d-4741-9593-25bf07847b16", "services": [{"type": "dns", "address": '
    '"2001:db8::53"}]}], "services": [{"type": "dns", "address": "8.8.8.8"}, {"type": "dns", '
    '"address": "2001:db8::53"}]}'
)
USER_DATA = b"#!/bin/sh\necho hi\n\x00\xff"


def words(s: str) -> bytes:
    return "\n".join(s.split()).encode()


@dataclass(frozen=True)
class Row:
    path: str
    status: int
    ctype: str | None = TEXT
    body: bytes | None = None
    method: str = "GET"


FULL_ROWS = [
    Row("/", 200, TEXT, EC2_LIST),
    Row("/ec2", 200, TEXT, EC2_LIST),
    Row("/ec2/", 200, TEXT, EC2_LIST),
    Row("/latest", 200, TEXT, b"meta-data/\nuser-data"),
    Row("/2009-04-04/", 200, TEXT, b"meta-data/\nuser-data"),
    Row("/latest/meta-data/", 200, TEXT, words(MD_LATEST_FULL)),
    Row("/ec2/latest/meta-data", 200, TEXT, words(MD_LATEST_FULL)),
    Row("/1.0/meta-data/", 200, TEXT, words(MD_10_FULL)),
    Row("/2009-04-04/meta-data/instance-id", 200, TEXT, b"i-00000001"),
    Row("/ec2/2009-04-04/meta-data/instance-id", 200, TEXT, b"i-00000001"),
    Row("/latest/meta-data/ami-id", 200, TEXT, b"ami-00000001"),
    Row("/latest/meta-data/ami-launch-index", 200, TEXT, b"1"),
    Row("/latest/meta-data/ami-manifest-path", 200, TEXT, b"FIXME"),
    Row("/latest/meta-data/hostname", 200, TEXT, b"test.novalocal"),
    Row("/latest/meta-data/local-hostname", 200, TEXT, b"test.novalocal"),
    Row("/latest/meta-data/public-hostname", 200, TEXT, b"test.novalocal"),
    Row("/latest/meta-data/local-ipv4", 200, TEXT, b"10.0.0.5"),
    Row("/latest/meta-data/public-ipv4", 200, TEXT, b""),
    Row("/latest/meta-data/instance-type", 200, TEXT, b"m1.small"),
    Row("/latest/meta-data/instance-action", 200, TEXT, b"none"),
    Row("/latest/meta-data/reservation-id", 200, TEXT, b"r-abcd1234"),
    Row("/latest/meta-data/security-groups", 200, TEXT, b"default\nweb"),
    Row("/latest/meta-data/placement/", 200, TEXT, b"availability-zone"),
    Row("/latest/meta-data/placement/availability-zone", 200, TEXT, b"fake-az"),
    Row("/latest/meta-data/placement/availability-zone/", 200, TEXT, b"fake-az"),
    Row("/latest/meta-data/public-keys", 200, TEXT, b"0=key"),
    Row("/latest/meta-data/public-keys/0", 200, TEXT, b"openssh-key"),
    Row("/latest/meta-data/public-keys/0/", 200, TEXT, b"openssh-key"),
    Row("/latest/meta-data/public-keys/0/openssh-key", 200, TEXT, KEY.encode()),
    Row("/latest/meta-data/public-keys/0/_name", 200, TEXT, b"0=key"),
    Row("/latest/meta-data/public-keys/0=key", 404, None),
    Row("/latest/meta-data/block-device-mapping/", 200, TEXT, b"ami\nephemeral0\nroot\nswap"),
    Row("/latest/meta-data/block-device-mapping/root", 200, TEXT, b"/dev/sda1"),
    Row("/latest/meta-data/block-device-mapping/ami", 200, TEXT, b"sda1"),
    Row("/latest/user-data", 200, TEXT, USER_DATA),
    Row("/latest/user-data/", 200, TEXT, USER_DATA),
    Row("/latest//meta-data//instance-id", 200, TEXT, b"i-00000001"),
    Row("/latest/meta-data/../user-data", 200, TEXT, USER_DATA),
    Row("/latest/./meta-data/instance-id", 200, TEXT, b"i-00000001"),
    Row("//latest/meta-data/instance-id", 200, TEXT, EC2_LIST),
    Row("///latest/meta-data/instance-id", 200, TEXT, b"i-00000001"),
    Row("/latest/meta-data/hostname", 200, TEXT, b"test.novalocal", method="DELETE"),
    # versions gate keys
    Row("/2007-01-19/meta-data/local-hostname", 200, TEXT, b"test.novalocal"),
    Row("/1.0/meta-data/local-hostname", 404, None),
    Row("/2007-03-01/meta-data/instance-type", 404, None),
    Row("/2007-08-29/meta-data/instance-type", 200, TEXT, b"m1.small"),
    Row("/2007-10-10/meta-data/block-device-mapping/", 404, None),
    Row("/2007-12-15/meta-data/placement/availability-zone", 404, None),
    Row("/2008-02-01/meta-data/placement/availability-zone", 200, TEXT, b"fake-az"),
    Row("/2008-02-01/meta-data/instance-action", 404, None),
    Row("/2008-09-01/meta-data/instance-action", 200, TEXT, b"none"),
    # not served at all
    Row("/9999-99-99", 404, None),
    Row("/2016-09-02/meta-data/instance-id", 404, None),
    Row("/latest/meta-data/network/interfaces/macs", 404, None),
    Row("/latest/meta-data/kernel-id", 404, None),
    Row("/latest/meta-data/iam/security-credentials/", 404, None),
    Row("/latest/api/token", 404, None, method="PUT"),
    Row("/latest/meta-data/hostname/foo", 404, None),  # nova: 500 (TypeError)
    Row("/latest/meta-data/security-groups/default", 404, None),  # nova: 500
    Row("/latest/meta-data/hostname/foo/bar", 404, None),
    # OpenStack tree
    Row("/openstack", 200, TEXT, OS_LIST),
    Row("/openstack/", 200, TEXT, OS_LIST),
    Row(
        "/openstack/latest",
        200,
        TEXT,
        b"meta_data.json\nuser_data\npassword\nvendor_data.json\nnetwork_data.json\nvendor_data2.json",
    ),
    Row("/openstack/2012-08-10/", 200, TEXT, b"meta_data.json\nuser_data"),
    Row("/openstack/2013-04-04", 200, TEXT, b"meta_data.json\nuser_data\npassword"),
    Row(
        "/openstack/2015-10-15",
        200,
        TEXT,
        b"meta_data.json\nuser_data\npassword\nvendor_data.json\nnetwork_data.json",
    ),
    Row("/openstack/latest/user_data", 200, TEXT, USER_DATA),
    Row("/openstack/latest/user_data/", 200, TEXT, USER_DATA),
    Row("/openstack/latest/network_data.json", 200, TEXT, NETWORK_DATA_A.encode()),
    Row("/openstack/2013-10-17/network_data.json", 200, TEXT, NETWORK_DATA_A.encode()),
    Row("/openstack/latest/vendor_data.json", 200, JSON, b"{}"),
    Row("/openstack/latest/vendor_data2.json", 200, JSON, b'{"static": {}}'),
    Row("/openstack/latest/password", 200, HTML, b""),
    Row("/openstack/2012-08-10/password", 404, None),
    Row("/openstack/2013-04-04/vendor_data.json", 404, None),
    Row("/openstack/2016-06-30/vendor_data2.json", 404, None),
    Row("/openstack/2011-01-01", 404, None),
    Row("/openstack/latest/meta_data.json/uuid", 404, None),
    Row("/openstack/latest/nothing", 404, None),
    Row("/openstack/content", 404, None),
    Row("/openstack/content/0000", 404, None),
    Row("/openstack/latest/password", 400, None, method="HEAD"),
    Row("/openstack/latest/password", 400, None, method="PUT"),
]

MIN_ROWS_COMMON = [
    Row("/latest", 200, TEXT, b"meta-data/"),
    Row("/latest/user-data", 404, None),
    Row("/latest/meta-data/public-keys", 404, None),
    Row("/latest/meta-data/public-keys/0/openssh-key", 404, None),
    Row("/latest/meta-data/placement/availability-zone", 200, TEXT, b"None"),
    Row("/latest/meta-data/ami-id", 200, TEXT, b"None"),
    Row("/latest/meta-data/instance-id", 200, TEXT, b"i-0000002a"),
    Row("/latest/meta-data/hostname", 200, TEXT, b"bare.novalocal"),
    Row("/latest/meta-data/security-groups", 200, TEXT, b""),
    Row(
        "/openstack/latest",
        200,
        TEXT,
        b"meta_data.json\npassword\nvendor_data.json\nnetwork_data.json\nvendor_data2.json",
    ),
    Row("/openstack/2012-08-10", 200, TEXT, b"meta_data.json"),
    Row("/openstack/latest/user_data", 404, None),
    Row("/openstack/latest/password", 200, HTML, b""),
    Row("/openstack/latest/vendor_data2.json", 200, JSON, b'{"static": {}}'),
]
MIN_LISTING = words(
    "ami-id ami-launch-index ami-manifest-path block-device-mapping/ hostname instance-action "
    "instance-id instance-type local-hostname local-ipv4 placement/ public-hostname public-ipv4 "
    "reservation-id security-groups"
)
MIN_ROWS_COMMON.append(Row("/latest/meta-data", 200, TEXT, MIN_LISTING))

DIRECT_MIN_ADDRESS = "10.1.0.9"
BARE_SUBNET = SubnetView(id="bare4", cidr="10.1.0.0/24", ip_version=4, enable_dhcp=True)
BARE_PORT = PortView(
    id="0b0e9f2c-1111-4222-8333-944455556666",
    mac_address="fa:16:3e:00:00:09",
    network_id="net-bare",
    mtu=1500,
    fixed_ips=(FixedIPView(DIRECT_MIN_ADDRESS, BARE_SUBNET),),
)


class Mode:
    """How a test caller identifies itself as `view`."""

    def __init__(self, name: str) -> None:
        self.name = name

    def settings(self) -> RespondSettings:
        return RespondSettings(
            identify=IdentifySettings(
                service_metadata_proxy=self.name == "proxy", shared_secret=SECRET
            ),
            # Nova's tree byte for byte: every vector here is Nova's answer.
            ec2_profile="nova",
        )

    def kwargs(self, view: InstanceView) -> dict[str, object]:
        if self.name == "proxy":
            return {"headers": signed_headers(view.uuid, view.project_id, SECRET)}
        return {"peer": view.first_ipv4()}


@pytest.fixture(params=["proxy", "direct"])
def mode(request: pytest.FixtureRequest) -> Mode:
    return Mode(request.param)


def _min_view(mode: Mode) -> InstanceView:
    return minimal_view(ports=(BARE_PORT,)) if mode.name == "direct" else minimal_view()


async def _check(responder: Responder, row: Row, **kw: object) -> None:
    resp = await call(responder, row.path, method=row.method, **kw)  # type: ignore[arg-type]
    assert resp.status == row.status, (row.path, resp.body)
    if row.ctype is not None:
        assert resp.content_type == row.ctype, row.path
    if row.body is not None:
        assert resp.body == row.body, row.path


@pytest.mark.parametrize("row", FULL_ROWS, ids=lambda r: f"{r.method} {r.path} {r.status}")
async def test_full_instance(mode: Mode, row: Row) -> None:
    view = full_view()
    responder = Responder(DictSource([view, _min_view(mode)]), mode.settings())
    await _check(responder, row, **mode.kwargs(view))


@pytest.mark.parametrize("row", MIN_ROWS_COMMON, ids=lambda r: f"{r.method} {r.path} {r.status}")
async def test_minimal_instance(mode: Mode, row: Row) -> None:
    view = _min_view(mode)
    responder = Responder(DictSource([full_view(), view]), mode.settings())
    await _check(responder, row, **mode.kwargs(view))


async def test_minimal_network_data_without_ports_is_empty_object() -> None:
    mode = Mode("proxy")
    view = minimal_view()
    resp = await call(
        Responder(DictSource([view]), mode.settings()),
        "/openstack/latest/network_data.json",
        **mode.kwargs(view),  # type: ignore[arg-type]
    )
    assert (resp.status, resp.body) == (200, b"{}")


async def test_minimal_network_data_dhcp_form() -> None:
    mode = Mode("direct")
    view = _min_view(mode)
    resp = await call(
        Responder(DictSource([view]), mode.settings()),
        "/openstack/latest/network_data.json",
        peer=DIRECT_MIN_ADDRESS,
    )
    assert json.loads(resp.body) == {
        "links": [
            {
                "id": "tap0b0e9f2c-11",
                "vif_id": BARE_PORT.id,
                "type": "phy",
                "mtu": 1500,
                "ethernet_mac_address": "fa:16:3e:00:00:09",
            }
        ],
        "networks": [
            {
                "id": "network0",
                "type": "ipv4_dhcp",
                "link": "tap0b0e9f2c-11",
                "network_id": "net-bare",
            }
        ],
        "services": [],
    }


@pytest.mark.parametrize(
    ("forwarded", "expected"),
    [(None, b"None"), ("10.9.9.9", b"10.9.9.9"), ("10.9.9.9, 10.0.0.1", b"10.9.9.9, 10.0.0.1")],
)
async def test_local_ipv4_falls_back_to_request_address(
    forwarded: str | None, expected: bytes
) -> None:
    mode = Mode("proxy")
    view = minimal_view()
    headers = signed_headers(view.uuid, view.project_id, SECRET)
    if forwarded:
        headers.append(("X-Forwarded-For", forwarded))
    resp = await call(
        Responder(DictSource([view]), mode.settings()),
        "/latest/meta-data/local-ipv4",
        headers=headers,
    )
    assert (resp.status, resp.body) == (200, expected)


OS_KEYS = {
    # version -> meta_data.json keys for the full instance, from the spec's table (section 7)
    "2012-08-10": [
        "uuid",
        "meta",
        "public_keys",
        "keys",
        "hostname",
        "name",
        "launch_index",
        "availability_zone",
    ],
}
_SEED = ["random_seed"]
OS_KEYS["2013-04-04"] = OS_KEYS["2012-08-10"] + _SEED
OS_KEYS["2013-10-17"] = OS_KEYS["2013-04-04"]
OS_KEYS["2015-10-15"] = OS_KEYS["2013-04-04"] + ["project_id"]
for _v in ("2016-06-30", "2016-10-06", "2017-02-22", "2018-08-27"):
    OS_KEYS[_v] = OS_KEYS["2015-10-15"] + ["devices"]
OS_KEYS["2020-10-14"] = OS_KEYS["2018-08-27"] + ["dedicated_cpus"]
OS_KEYS["2025-04-04"] = OS_KEYS["2020-10-14"]
OS_KEYS["latest"] = OS_KEYS["2025-04-04"]


@pytest.mark.parametrize("version", sorted(OS_KEYS))
async def test_meta_data_keys_per_version(mode: Mode, version: str) -> None:
    view = full_view()
    resp = await call(
        Responder(DictSource([view]), mode.settings()),
        f"/openstack/{version}/meta_data.json",
        **mode.kwargs(view),  # type: ignore[arg-type]
    )
    assert (resp.status, resp.content_type) == (200, JSON)
    doc = json.loads(resp.body)
    assert list(doc) == OS_KEYS[version]
    assert doc["uuid"] == view.uuid
    assert doc["meta"] == {"role": "web", "k\u00e9y": "v\u00e4l"}
    assert doc["public_keys"] == {"key": KEY}
    assert doc["keys"] == [{"name": "key", "type": "ssh", "data": KEY}]
    assert (doc["hostname"], doc["name"], doc["launch_index"]) == (
        "test.novalocal",
        "my_displayname",
        1,
    )
    assert doc["availability_zone"] == "fake-az"
    if "random_seed" in doc:
        assert len(doc["random_seed"]) == 684
        assert len(base64.b64decode(doc["random_seed"], validate=True)) == 512
    if "project_id" in doc:
        assert doc["project_id"] == "test"
    if "devices" in doc:
        assert doc["devices"] == []
    if "dedicated_cpus" in doc:
        assert doc["dedicated_cpus"] == []
    # Non-ASCII is escaped as json.dumps does by default.
    assert b"k\\u00e9y" in resp.body


async def test_meta_data_exact_bytes_of_spec_example() -> None:
    mode = Mode("proxy")
    view = full_view(metadata={})
    resp = await call(
        Responder(DictSource([view]), mode.settings()),
        "/openstack/2012-08-10/meta_data.json",
        **mode.kwargs(view),  # type: ignore[arg-type]
    )
    expected = (
        '{"uuid": "b65cee2f-8c69-4aeb-be2f-f79742548fc2", "public_keys": {"key": "ssh-rsa '
        'AAAAB3Nzai....N3NtHw== someuser@somehost"}, "keys": [{"name": "key", "type": "ssh", '
        '"data": "ssh-rsa AAAAB3Nzai....N3NtHw== someuser@somehost"}], "hostname": '
        '"test.novalocal", "name": "my_displayname", "launch_index": 1, "availability_zone": '
        '"fake-az"}'
    )
    assert resp.body == expected.encode()
    assert len(resp.body) == 333


async def test_minimal_meta_data(mode: Mode) -> None:
    view = _min_view(mode)
    resp = await call(
        Responder(DictSource([view]), mode.settings()),
        "/openstack/latest/meta_data.json",
        **mode.kwargs(view),  # type: ignore[arg-type]
    )
    doc = json.loads(resp.body)
    assert list(doc) == [
        "uuid",
        "hostname",
        "name",
        "launch_index",
        "availability_zone",
        "random_seed",
        "project_id",
        "devices",
        "dedicated_cpus",
    ]
    assert doc["availability_zone"] is None


async def test_random_seed_is_fresh_per_response_even_on_cache_hit() -> None:
    mode = Mode("proxy")
    view = full_view()
    responder = Responder(DictSource([view]), mode.settings())
    seeds = set()
    for _ in range(3):
        resp = await call(
            responder,
            "/openstack/latest/meta_data.json",
            **mode.kwargs(view),  # type: ignore[arg-type]
        )
        seeds.add(json.loads(resp.body)["random_seed"])
    assert len(seeds) == 3


async def test_keypair_deleted_keeps_ec2_key_but_drops_json_keys() -> None:
    mode = Mode("proxy")
    view = full_view(keypair=None)
    responder = Responder(DictSource([view]), mode.settings())
    kw = mode.kwargs(view)
    doc = json.loads((await call(responder, "/openstack/latest/meta_data.json", **kw)).body)  # type: ignore[arg-type]
    assert "public_keys" not in doc and "keys" not in doc
    resp = await call(responder, "/latest/meta-data/public-keys/0/openssh-key", **kw)  # type: ignore[arg-type]
    assert resp.body == KEY.encode()


async def test_kernel_and_ramdisk_ids_listed_from_2007_12_15() -> None:
    mode = Mode("proxy")
    view = full_view(kernel_ec2_id=2, ramdisk_ec2_id=3)
    responder = Responder(DictSource([view]), mode.settings())
    kw = mode.kwargs(view)
    listing = (await call(responder, "/latest/meta-data/", **kw)).body.split(b"\n")  # type: ignore[arg-type]
    assert b"kernel-id" in listing and b"ramdisk-id" in listing
    assert (await call(responder, "/latest/meta-data/kernel-id", **kw)).body == b"aki-00000002"  # type: ignore[arg-type]
    assert (await call(responder, "/latest/meta-data/ramdisk-id", **kw)).body == b"ari-00000003"  # type: ignore[arg-type]
    old = (await call(responder, "/2007-10-10/meta-data/", **kw)).body.split(b"\n")  # type: ignore[arg-type]
    assert b"kernel-id" not in old


async def test_openstack_listing_hides_future_versions_but_serves_them() -> None:
    mode = Mode("proxy")
    view = full_view()
    responder = Responder(DictSource([view]), mode.settings())
    kw = mode.kwargs(view)
    resp = await call(responder, "/openstack", today=date(2020, 1, 1), **kw)  # type: ignore[arg-type]
    assert resp.body.split(b"\n")[-2:] == [b"2018-08-27", b"latest"]
    hidden = await call(
        responder, "/openstack/2025-04-04/meta_data.json", today=date(2020, 1, 1), **kw
    )  # type: ignore[arg-type]
    assert hidden.status == 200
    latest = await call(responder, "/openstack/latest/meta_data.json", today=date(2020, 1, 1), **kw)  # type: ignore[arg-type]
    assert "dedicated_cpus" in json.loads(latest.body)


async def test_every_listed_ec2_entry_is_fetchable(mode: Mode) -> None:
    """cloud-init's crawler rule: a listed entry that 404s throws the whole crawl away."""
    for view in (full_view(kernel_ec2_id=9), _min_view(mode)):
        responder = Responder(DictSource([view]), mode.settings())
        kw = mode.kwargs(view)
        pending = ["/latest/meta-data/", "/1.0/meta-data/", "/2007-12-15/meta-data/"]
        seen = 0
        while pending:
            path = pending.pop()
            resp = await call(responder, path, **kw)  # type: ignore[arg-type]
            assert resp.status == 200, path
            seen += 1
            if not path.endswith("/"):
                continue
            for line in resp.body.decode().split("\n"):
                if not line:
                    continue
                if "=" in line:
                    pending.append(path + line.split("=")[0] + "/openssh-key")
                else:
                    pending.append(path + line)
        assert seen > 20
