"""StoreSource against a real inventory (SQLite, and PostgreSQL when configured).

Every change is made through `Store.session()` exactly as the control plane makes it, and the
assertion is what the next request answers once the feed has applied that revision.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import event, select
from sqlalchemy.exc import OperationalError

from openimds.inventory.migrate import open_store
from openimds.inventory.models import (
    FixedIP,
    Image,
    Instance,
    KeyPair,
    Network,
    Port,
    Project,
    Subnet,
    User,
)
from openimds.inventory.store import Store
from openimds.metadata.identify import IdentifySettings
from openimds.metadata.respond import Responder, RespondSettings
from openimds.metadata.store_source import StoreSource
from openimds.wire import ROUTER_INTERFACE_OWNERS
from tests.metadata.fixtures import KEY, SECRET
from tests.metadata.helpers import call, signed_headers, wait_until

INSTANCE = "6f0c8a52-3c1b-4d53-9a3e-0a8d6c3f4e21"


def seed(store: Store) -> dict[str, Any]:
    with store.session() as s:
        project = Project(name="demo")
        s.add(project)
        s.flush()
        user = User(name="alice", project_id=project.id, password_hash="x")
        image = Image(name="cirros")
        s.add_all([user, image])
        s.flush()
        net = Network(project_id=project.id, name="net1", mtu=1450)
        s.add(net)
        s.flush()
        sub = Subnet(
            network_id=net.id,
            project_id=project.id,
            ip_version=4,
            cidr="10.0.0.0/24",
            gateway_ip="10.0.0.1",
            enable_dhcp=False,
            host_routes=[{"destination": "172.16.0.0/16", "nexthop": "10.0.0.254"}],
            dns_nameservers=["8.8.8.8"],
        )
        s.add(sub)
        s.flush()
        s.add(KeyPair(name="key", user_id=user.id, project_id=project.id, public_key=KEY))
        inst = Instance(
            uuid=INSTANCE,
            name="web-1",
            hostname="web-1",
            project_id=project.id,
            user_id=user.id,
            availability_zone="nova",
            image_id=image.id,
            key_name="key",
            key_data=KEY,
            user_data=b"#cloud-config\n",
            properties={"role": "web"},
            reservation_id="r-00000001",
        )
        s.add(inst)
        s.flush()
        port = Port(
            network_id=net.id,
            project_id=project.id,
            mac_address="fa:16:3e:00:00:05",
            device_id=INSTANCE,
            device_owner="compute:nova",
            fixed_ips=[FixedIP(subnet_id=sub.id, ip_address="10.0.0.5")],
        )
        s.add(port)
        s.flush()
        return {
            "project": project.id,
            "user": user.id,
            "network": net.id,
            "subnet": sub.id,
            "port": port.id,
            "ec2": inst.id,
            "image": image.id,
        }


class Harness:
    def __init__(self, store: Store, source: StoreSource, ids: dict[str, Any]) -> None:
        self.store = store
        self.source = source
        self.ids = ids
        self.responder = Responder(source, RespondSettings(identify=IdentifySettings(True, SECRET)))
        self.headers = signed_headers(INSTANCE, ids["project"], SECRET)

    async def get(self, path: str, **kw: Any) -> Any:
        return await call(self.responder, path, headers=self.headers, **kw)

    async def settle(self) -> None:
        await self.source.wait_for_revision(self.store.current_revision())


@pytest.fixture
async def harness(db_url: str) -> AsyncIterator[Harness]:
    store = open_store(db_url)
    ids = seed(store)
    source = StoreSource(store, feed_timeout=1.0)
    await source.start()
    try:
        yield Harness(store, source, ids)
    finally:
        await source.stop()
        store.dispose()


async def test_view_from_inventory(harness: Harness) -> None:
    view = await harness.source.view_for_instance(INSTANCE)
    assert view is not None
    assert view.ec2_id == harness.ids["ec2"] and view.image_ec2_id == harness.ids["image"]
    assert view.keypair is not None and view.keypair.public_key == KEY
    assert view.first_ipv4() == "10.0.0.5"
    ec2 = await harness.get("/latest/meta-data/instance-id")
    assert ec2.body == f"i-{harness.ids['ec2']:08x}".encode()
    md = json.loads((await harness.get("/openstack/latest/meta_data.json")).body)
    assert md["uuid"] == INSTANCE and md["public_keys"] == {"key": KEY}
    assert md["meta"] == {"role": "web"} and md["project_id"] == harness.ids["project"]
    nd = json.loads((await harness.get("/openstack/latest/network_data.json")).body)
    assert nd["links"][0]["mtu"] == 1450
    assert nd["networks"][0]["type"] == "ipv4"
    assert nd["networks"][0]["routes"][1] == {
        "network": "172.16.0.0",
        "netmask": "255.255.0.0",
        "gateway": "10.0.0.254",
    }
    assert (await harness.get("/latest/user-data")).body == b"#cloud-config\n"


async def test_unknown_and_wrong_tenant(harness: Harness) -> None:
    other = signed_headers("00000000-0000-0000-0000-000000000000", harness.ids["project"], SECRET)
    assert (await call(harness.responder, "/openstack", headers=other)).status == 404
    wrong = signed_headers(INSTANCE, "someone-else", SECRET)
    assert (await call(harness.responder, "/openstack", headers=wrong)).status == 404


async def test_cache_hit_runs_no_query(harness: Harness) -> None:
    statements: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        # The feed's own long-poll reads `changes`; anything else is a lookup.
        if "changes" not in statement and "revision_counter" not in statement:
            statements.append(statement)

    assert (await harness.get("/openstack/latest/meta_data.json")).status == 200
    engine = harness.store._read_engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        for path in ("/openstack/latest/meta_data.json", "/latest/meta-data/hostname"):
            assert (await harness.get(path)).status == 200
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert statements == []


async def _mutate(harness: Harness, fn: Any) -> None:
    with harness.store.session() as s:
        fn(s)
    await harness.settle()


async def test_changes_are_visible_after_their_revision(harness: Harness) -> None:
    ids = harness.ids
    assert (await harness.get("/latest/meta-data/hostname")).body == b"web-1.novalocal"

    def rename(s: Any) -> None:
        s.scalar(select(Instance).where(Instance.uuid == INSTANCE)).hostname = "renamed"

    await _mutate(harness, rename)
    assert (await harness.get("/latest/meta-data/hostname")).body == b"renamed.novalocal"

    def mtu(s: Any) -> None:
        s.get(Network, ids["network"]).mtu = 1400

    await _mutate(harness, mtu)
    nd = json.loads((await harness.get("/openstack/latest/network_data.json")).body)
    assert nd["links"][0]["mtu"] == 1400

    def dns(s: Any) -> None:
        s.get(Subnet, ids["subnet"]).dns_nameservers = ["9.9.9.9"]

    await _mutate(harness, dns)
    nd = json.loads((await harness.get("/openstack/latest/network_data.json")).body)
    assert nd["services"] == [{"type": "dns", "address": "9.9.9.9"}]

    def dhcp_port(s: Any) -> None:
        s.add(
            Port(
                network_id=ids["network"],
                project_id=ids["project"],
                mac_address="fa:16:3e:00:00:02",
                device_id="dhcp-agent",
                device_owner="network:dhcp",
                fixed_ips=[FixedIP(subnet_id=ids["subnet"], ip_address="10.0.0.2")],
            )
        )

    await _mutate(harness, dhcp_port)
    nd = json.loads((await harness.get("/openstack/latest/network_data.json")).body)
    # A DHCP server on the subnet: DHCP form and no MTU, as nova does.
    assert nd["links"][0]["mtu"] is None
    assert nd["networks"][0]["type"] == "ipv4_dhcp"

    def drop_dhcp_port(s: Any) -> None:
        s.delete(s.scalars(select(Port).where(Port.device_owner == "network:dhcp")).one())

    await _mutate(harness, drop_dhcp_port)
    nd = json.loads((await harness.get("/openstack/latest/network_data.json")).body)
    assert nd["links"][0]["mtu"] == 1400
    assert nd["networks"][0]["type"] == "ipv4"

    def second_ip(s: Any) -> None:
        port = s.get(Port, ids["port"])
        port.fixed_ips.append(FixedIP(subnet_id=ids["subnet"], ip_address="10.0.0.50"))

    await _mutate(harness, second_ip)
    view = await harness.source.view_for_instance(INSTANCE)
    assert [f.ip_address for f in view.ports[0].fixed_ips] == ["10.0.0.5", "10.0.0.50"]  # type: ignore[union-attr]

    def drop_key(s: Any) -> None:
        s.delete(s.scalars(select(KeyPair)).one())

    await _mutate(harness, drop_key)
    md = json.loads((await harness.get("/openstack/latest/meta_data.json")).body)
    assert "public_keys" not in md
    # EC2 keeps the instance's own copy of the key.
    assert (await harness.get("/latest/meta-data/public-keys/0/openssh-key")).body == KEY.encode()

    def delete_instance(s: Any) -> None:
        s.delete(s.get(Port, ids["port"]))
        s.delete(s.scalar(select(Instance).where(Instance.uuid == INSTANCE)))

    await _mutate(harness, delete_instance)
    assert (await harness.get("/openstack")).status == 404


async def test_direct_mode_lookup_follows_port_changes(harness: Harness) -> None:
    responder = Responder(harness.source, RespondSettings(identify=IdentifySettings(False)))
    resp = await call(responder, "/latest/meta-data/instance-id", peer="10.0.0.5")
    assert resp.status == 200
    assert (await call(responder, "/latest/meta-data/instance-id", peer="10.0.0.9")).status == 404

    def move(s: Any) -> None:
        # As the control plane does a fixed_ips update: the list is replaced.
        port = s.get(Port, harness.ids["port"])
        port.fixed_ips = [FixedIP(subnet_id=harness.ids["subnet"], ip_address="10.0.0.9")]

    await _mutate(harness, move)
    assert (await call(responder, "/latest/meta-data/instance-id", peer="10.0.0.5")).status == 404
    assert (await call(responder, "/latest/meta-data/instance-id", peer="10.0.0.9")).status == 200


async def test_password_is_stored_once_in_the_inventory(harness: Harness) -> None:
    url = "/openstack/latest/password"
    assert (await harness.get(url, method="POST", body=b"c2VjcmV0")).status == 200
    assert (await harness.get(url)).body == b"c2VjcmV0"
    assert (await harness.get(url, method="POST", body=b"again")).status == 409
    with harness.store.read() as s:
        stored = s.scalar(select(Instance.password).where(Instance.uuid == INSTANCE))
    assert stored == "c2VjcmV0"
    # A second process (another worker) sees it through the feed.
    other = StoreSource(harness.store, feed_timeout=1.0)
    await other.start()
    try:
        responder = Responder(other, RespondSettings(identify=IdentifySettings(True, SECRET)))
        resp = await call(responder, url, method="POST", headers=harness.headers, body=b"x")
        assert resp.status == 409
    finally:
        await other.stop()


async def test_cached_documents_are_served_while_the_database_is_away(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database outage must not turn cache hits into errors; the feed catches up after."""
    assert (await harness.get("/latest/meta-data/hostname")).body == b"web-1.novalocal"
    real_changes, real_read = harness.store.changes_since, harness.store.read
    down = True

    def refused() -> OperationalError:
        return OperationalError("SELECT", {}, Exception("connection refused"))

    def changes(revision: int, timeout: float = 0.0, limit: int = 1000) -> Any:
        if down:
            raise refused()
        return real_changes(revision, timeout, limit)

    def read() -> Any:
        if down:
            raise refused()
        return real_read()

    monkeypatch.setattr(harness.store, "changes_since", changes)
    monkeypatch.setattr(harness.store, "read", read)
    await asyncio.sleep(2.5)  # several failed feed reads
    assert (await harness.get("/latest/meta-data/hostname")).body == b"web-1.novalocal"
    down = False

    def rename(s: Any) -> None:
        s.scalar(select(Instance).where(Instance.uuid == INSTANCE)).hostname = "after"

    await _mutate(harness, rename)
    assert (await harness.get("/latest/meta-data/hostname")).body == b"after.novalocal"


async def test_a_pruned_feed_drops_every_cached_document(
    harness: Harness, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Behind the feed's retention, nothing cached can be trusted: all of it goes, once."""
    import threading

    from openimds.inventory.retention import Retention

    real_changes = harness.store.changes_since
    gate = threading.Event()
    gate.set()
    hold_from = harness.store.current_revision() + 1  # the revision "gap-1" will get

    def gated(revision: int, timeout: float = 0.0, limit: int = 1000) -> Any:
        # Polls that would deliver "gap-1" pass; the watcher's next poll waits at the gate.
        if revision >= hold_from:
            gate.wait(30)
        return real_changes(revision, timeout, limit)

    def rename(name: str) -> Any:
        def fn(s: Any) -> None:
            s.scalar(select(Instance).where(Instance.uuid == INSTANCE)).hostname = name
        return fn

    monkeypatch.setattr(harness.store, "changes_since", gated)
    try:
        gate.clear()
        await _mutate(harness, rename("gap-1"))
        assert (await harness.get("/latest/meta-data/hostname")).body == b"gap-1.novalocal"
        for name in ("gap-2", "gap-3"):
            with harness.store.session() as s:
                rename(name)(s)
        harness.store.prune_changes(Retention(max_age_seconds=0, max_count=1))
        with caplog.at_level("WARNING"):
            gate.set()
            await harness.settle()
        assert (await harness.get("/latest/meta-data/hostname")).body == b"gap-3.novalocal"
        assert any("pruned" in r.getMessage() for r in caplog.records)
        assert not any(r.exc_info for r in caplog.records)
    finally:
        gate.set()


async def test_the_feed_outlives_a_failure_to_apply_a_batch(
    harness: Harness, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An exception while invalidating drops the cache and the watcher goes on; it never
    leaves guests with views that no later change can refresh."""
    real_apply = harness.source.apply
    calls = 0

    def failing_once(*args: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("invalidation bug")
        real_apply(*args)

    def rename(name: str) -> Any:
        def fn(s: Any) -> None:
            s.scalar(select(Instance).where(Instance.uuid == INSTANCE)).hostname = name
        return fn

    assert (await harness.get("/latest/meta-data/hostname")).body == b"web-1.novalocal"
    monkeypatch.setattr(harness.source, "apply", failing_once)
    with caplog.at_level("ERROR"):
        await _mutate(harness, rename("after-bug"))
    assert calls == 1 and any("invalidation bug" in str(r.exc_info) for r in caplog.records)
    assert (await harness.get("/latest/meta-data/hostname")).body == b"after-bug.novalocal"
    await _mutate(harness, rename("still-watched"))
    assert calls == 2
    assert (await harness.get("/latest/meta-data/hostname")).body == b"still-watched.novalocal"
    assert harness.source.ready()


async def test_a_watcher_that_dies_is_restarted_and_unready_meanwhile(
    harness: Harness, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A failure outside the watcher's own guards (here: dropping the cache after a failed
    apply fails too) ends the watcher task: it is logged, the source reports not ready (the
    healthcheck's 503) and the watcher is started again with backoff, resuming at the
    revision it had applied, so the change it died on still invalidates its views."""
    source = harness.source
    broken = True
    real_apply, real_drop_all = source.apply, source.drop_all

    def failing_apply(*args: Any) -> None:
        if broken:
            raise RuntimeError("invalidation bug")
        real_apply(*args)

    def failing_drop_all() -> None:
        if broken:
            raise RuntimeError("drop bug")
        real_drop_all()

    def rename(s: Any) -> None:
        s.scalar(select(Instance).where(Instance.uuid == INSTANCE)).hostname = "after-crash"

    assert (await harness.get("/latest/meta-data/hostname")).body == b"web-1.novalocal"
    assert source.ready()
    monkeypatch.setattr(source, "apply", failing_apply)
    monkeypatch.setattr(source, "drop_all", failing_drop_all)
    with caplog.at_level("ERROR"):
        with harness.store.session() as s:
            rename(s)
        await wait_until(lambda: not source.ready())
        assert any("drop bug" in str(r.exc_info) for r in caplog.records)
        broken = False
        await harness.settle()
    assert source.ready()
    assert (await harness.get("/latest/meta-data/hostname")).body == b"after-crash.novalocal"


async def test_metadata_options_follow_the_feed(harness: Harness) -> None:
    assert (await harness.get("/latest/meta-data/instance-id")).status == 200

    def require_tokens(s: Any) -> None:
        inst = s.scalar(select(Instance).where(Instance.uuid == INSTANCE))
        inst.metadata_options = {"http_tokens": "required"}

    await _mutate(harness, require_tokens)
    resp = await harness.get("/openstack/latest/meta_data.json")
    assert resp.status == 401 and resp.outcome == "token-required"

    def disable(s: Any) -> None:
        inst = s.scalar(select(Instance).where(Instance.uuid == INSTANCE))
        inst.metadata_options = {"http_endpoint": "disabled"}

    await _mutate(harness, disable)
    assert (await harness.get("/latest/meta-data/instance-id")).status == 403


async def test_security_group_ids_come_from_the_projects_group_records(harness: Harness) -> None:
    from openimds.inventory.models import SecurityGroup

    with harness.store.session() as s:
        stranger = Project(name="stranger")
        s.add(stranger)
        s.flush()
        # Another project's group of the same name must never be named.
        s.add(SecurityGroup(project_id=stranger.id, name="web"))
        web = SecurityGroup(project_id=harness.ids["project"], name="web")
        s.add(web)
        s.flush()
        web_id = web.id
        s.scalar(select(Instance).where(Instance.uuid == INSTANCE)).security_groups = [
            "web", "missing"]
    await harness.settle()
    view = await harness.source.view_for_instance(INSTANCE)
    assert view is not None
    assert view.security_groups == ("web", "missing")
    assert view.security_group_ids == (web_id,)  # a name without a record has no id


class GatedLoads:
    """Counts the source's loads and holds them at a gate (the real load runs once let
    through): what a reload storm, or a slow database, looks like to the request path."""

    def __init__(self, source: StoreSource, monkeypatch: pytest.MonkeyPatch, *,
                 after: bool = False) -> None:
        self.calls = 0
        self.gate = threading.Event()
        real = source._load

        def gated(*args: Any) -> Any:
            self.calls += 1
            if after:  # the load has read everything; its result is held back
                got = real(*args)
                self.gate.wait(30)
                return got
            self.gate.wait(30)
            return real(*args)

        monkeypatch.setattr(source, "_load", gated)


async def test_a_dropped_view_is_reloaded_once_in_the_background(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A change drops the view and queues its reload at once (no request needed); requests
    that come meanwhile join that one load and see the change, never the view from before."""
    source = StoreSource(harness.store, feed_timeout=1.0)
    await source.start()
    try:
        first = await source.view_for_instance(INSTANCE)
        assert first is not None and first.hostname == "web-1"
        loads = GatedLoads(source, monkeypatch)
        with harness.store.session() as s:
            s.scalar(select(Instance).where(Instance.uuid == INSTANCE)).hostname = "renamed"
        await source.wait_for_revision(harness.store.current_revision())
        await wait_until(lambda: loads.calls == 1)  # the background reload, held at the gate

        waiting = [asyncio.ensure_future(source.view_for_instance(INSTANCE)) for _ in range(50)]
        done, _ = await asyncio.wait(waiting, timeout=0.3)
        assert not done  # not answered from before the change
        loads.gate.set()
        views = await asyncio.gather(*waiting)
        assert {v.hostname for v in views if v is not None} == {"renamed"} and None not in views
        assert loads.calls == 1
        assert INSTANCE in source.cache.views  # cached: the next request runs no load
        await source.view_for_instance(INSTANCE)
        assert loads.calls == 1
    finally:
        await source.stop()


async def test_a_request_that_gives_up_does_not_cancel_the_load(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = StoreSource(harness.store, feed_timeout=1.0, prefetch=False)
    await source.start()
    try:
        # The load is held at a gate, so the request surely gives up while it runs (a fast
        # load could otherwise finish before the test sees it in flight).
        loads = GatedLoads(source, monkeypatch)
        asked = asyncio.ensure_future(source.view_for_instance(INSTANCE))
        await wait_until(lambda: loads.calls == 1 and INSTANCE in source._loading)
        asked.cancel()  # the guest disconnected
        with contextlib.suppress(asyncio.CancelledError):
            await asked
        loads.gate.set()
        await wait_until(lambda: INSTANCE in source.cache.views)
        assert loads.calls == 1
    finally:
        await source.stop()


async def test_an_instance_never_loaded_waits_for_its_one_load(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = StoreSource(harness.store, feed_timeout=1.0)
    await source.start()
    try:
        loads = GatedLoads(source, monkeypatch)
        waiting = [asyncio.ensure_future(source.view_for_instance(INSTANCE)) for _ in range(20)]
        await wait_until(lambda: loads.calls == 1)
        done, _ = await asyncio.wait(waiting, timeout=0.3)
        assert not done
        loads.gate.set()
        views = await asyncio.gather(*waiting)
        assert {v.hostname for v in views if v is not None} == {"web-1"} and None not in views
        assert loads.calls == 1
    finally:
        await source.stop()


async def test_the_last_view_is_served_when_its_reload_meets_a_database_outage(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Degraded mode: a dropped view whose reload fails on the database is answered from the
    last one (not 503, never 500); an instance with no view at all gets 503."""
    assert (await harness.get("/latest/meta-data/hostname")).body == b"web-1.novalocal"
    with harness.store.session() as s:
        s.scalar(select(Instance).where(Instance.uuid == INSTANCE)).properties = {"k": "v"}
    await harness.settle()
    assert INSTANCE not in harness.source.cache.views

    def refused(*args: Any) -> Any:
        raise OperationalError("SELECT", {}, Exception("connection refused"))

    monkeypatch.setattr(harness.store, "read", refused)
    assert (await harness.get("/latest/meta-data/hostname")).body == b"web-1.novalocal"
    harness.source.cache.last.clear()
    reply = await harness.get("/latest/meta-data/hostname")
    assert reply.status == 503


async def test_a_created_instance_is_loaded_before_its_first_request(harness: Harness) -> None:
    """The feed's create (and its port's attach) queue a background load: the boot's first
    request is a cache hit, and it shows the port attached after the instance was created."""
    events: list[tuple[str, bool]] = []
    source = StoreSource(harness.store, feed_timeout=1.0,
                         on_cache=lambda kind, hit: events.append((kind, hit)))
    await source.start()
    try:
        ids, uuid = harness.ids, "0b7e6c1e-2f43-4c8a-8d1e-5a4b3c2d1e0f"
        with harness.store.session() as s:
            s.add(Instance(uuid=uuid, name="new-1", hostname="new-1", project_id=ids["project"],
                           user_id=ids["user"], availability_zone="nova",
                           image_id=ids["image"], reservation_id="r-00000002"))
        with harness.store.session() as s:
            s.add(Port(network_id=ids["network"], project_id=ids["project"],
                       mac_address="fa:16:3e:00:00:06", device_id=uuid,
                       device_owner="compute:nova",
                       fixed_ips=[FixedIP(subnet_id=ids["subnet"], ip_address="10.0.0.6")]))
        await source.wait_for_revision(harness.store.current_revision())
        await wait_until(lambda: uuid in source.cache.views and not source._loading)
        view = await source.view_for_instance(uuid)
        assert view is not None and view.hostname == "new-1"
        assert [f.ip_address for f in view.ports[0].fixed_ips] == ["10.0.0.6"]
        assert events == [("view", True)]  # no request ever waited for a load
    finally:
        await source.stop()


async def test_a_load_is_kept_unless_a_port_it_read_changed_meanwhile(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another instance's port created during a load does not void it (a boot storm creates
    ports every few ms: with any port change voiding every load in flight, views of new
    instances were rarely kept); the instance's own port moving away does."""
    source = StoreSource(harness.store, feed_timeout=1.0, prefetch=False)
    await source.start()
    ids = harness.ids
    try:
        loads = GatedLoads(source, monkeypatch, after=True)
        asked = asyncio.ensure_future(source.view_for_instance(INSTANCE))
        await wait_until(lambda: loads.calls == 1)
        with harness.store.session() as s:
            s.add(Port(network_id=ids["network"], project_id=ids["project"],
                       mac_address="fa:16:3e:00:00:07", device_id="someone-else",
                       device_owner="compute:nova",
                       fixed_ips=[FixedIP(subnet_id=ids["subnet"], ip_address="10.0.0.7")]))
        await source.wait_for_revision(harness.store.current_revision())
        loads.gate.set()
        assert (await asked) is not None
        assert INSTANCE in source.cache.views

        source.cache.forget(INSTANCE)
        loads.gate.clear()
        asked = asyncio.ensure_future(source.view_for_instance(INSTANCE))
        await wait_until(lambda: loads.calls == 2)
        with harness.store.session() as s:
            s.get(Port, ids["port"]).device_id = "someone-else"
        await source.wait_for_revision(harness.store.current_revision())
        loads.gate.set()
        held = await asked
        assert held is not None and len(held.ports) == 1  # read before the port moved
        assert INSTANCE not in source.cache.views  # ... so not kept
        fresh = await source.view_for_instance(INSTANCE)
        assert fresh is not None and fresh.ports == ()
        assert loads.calls == 3
    finally:
        await source.stop()


@pytest.mark.parametrize("owner", list(ROUTER_INTERFACE_OWNERS))
async def test_a_provider_is_a_router_through_every_interface_owner(harness: Harness,
                                                                   owner: str) -> None:
    """Provider mode names a router: its networks are those of its interface ports, whatever
    the router kind (HA routers' interfaces are network:ha_router_replicated_interface)."""
    router = "5c1f8e44-7b0a-4f5e-9d51-2e3f4a5b6c7d"
    assert await harness.source.ports_for_provider(router, "10.0.0.5") is None

    def attach(s: Any) -> None:
        s.add(Port(network_id=harness.ids["network"], project_id=harness.ids["project"],
                   mac_address="fa:16:3e:00:00:01", device_id=router, device_owner=owner,
                   fixed_ips=[FixedIP(subnet_id=harness.ids["subnet"], ip_address="10.0.0.1")]))

    await _mutate(harness, attach)
    matches = await harness.source.ports_for_provider(router, "10.0.0.5")
    assert matches is not None
    assert [(m.port_id, m.device_id) for m in matches] == [(harness.ids["port"], INSTANCE)]
