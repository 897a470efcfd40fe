"""Inventory store: migrations, CRUD, every constraint, revisions and the change feed."""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import inspect, select

from openimds.inventory import errors
from openimds.inventory.migrate import open_store, upgrade
from openimds.inventory.models import (
    FixedIP,
    Image,
    Instance,
    KeyPair,
    Network,
    Port,
    Project,
    Router,
    Subnet,
    User,
)
from openimds.inventory.store import Store


@pytest.fixture
def store(db_url: str) -> Store:
    st = open_store(db_url)
    yield st
    st.dispose()


def _seed(store: Store) -> dict[str, str]:
    with store.session() as s:
        project = Project(name="demo")
        s.add(project)
        s.flush()
        net = Network(project_id=project.id, name="net1")
        s.add(net)
        s.flush()
        subnet = Subnet(
            network_id=net.id,
            project_id=project.id,
            ip_version=4,
            cidr="10.0.0.0/24",
            gateway_ip="10.0.0.1",
            allocation_pools=[{"start": "10.0.0.2", "end": "10.0.0.254"}],
        )
        s.add(subnet)
        s.flush()
        return {"project": project.id, "network": net.id, "subnet": subnet.id}


def _port(ids: dict[str, str], ip: str, mac: str = "fa:16:3e:00:00:05", **kw: str) -> Port:
    return Port(
        network_id=ids["network"],
        project_id=ids["project"],
        mac_address=mac,
        fixed_ips=[FixedIP(subnet_id=ids["subnet"], ip_address=ip)],
        **kw,
    )


def test_migration_creates_every_table(db_url: str) -> None:
    upgrade(db_url)
    upgrade(db_url)  # idempotent
    st = Store(db_url)
    try:
        names = set(inspect(st._read_engine).get_table_names())
    finally:
        st.dispose()
    assert {
        "projects", "users", "tokens", "networks", "subnets", "ports", "fixed_ips", "routers",
        "images", "keypairs", "instances", "changes", "revision_counter", "alembic_version",
    } <= names


def test_crud_round_trip_of_every_entity(store: Store) -> None:
    ids = _seed(store)
    with store.session() as s:
        user = User(name="alice", project_id=ids["project"], password_hash="x", roles=["member"])
        s.add(user)
        s.flush()
        image = Image(name="cirros")
        s.add(image)
        s.add(KeyPair(name="k1", user_id=user.id, project_id=ids["project"], public_key="ssh-rsa AAA"))
        s.add(Router(project_id=ids["project"], name="r1"))
        inst = Instance(
            name="vm1", hostname="vm1", project_id=ids["project"], user_id=user.id, image=image,
            user_data=b"#!/bin/sh\necho hi\n", properties={"role": "web"}, key_name="k1",
            key_data="ssh-rsa AAA",
        )
        s.add(inst)
        s.flush()
        s.add(_port(ids, "10.0.0.5", device_id=inst.uuid, device_owner="compute:nova"))
        uuid = inst.uuid
    with store.read() as s:
        inst = s.scalars(select(Instance).where(Instance.uuid == uuid)).one()
        assert inst.user_data == b"#!/bin/sh\necho hi\n"
        assert inst.properties == {"role": "web"}
        assert inst.security_groups == ["default"]
        assert inst.image is not None and inst.image.name == "cirros"
        port = s.scalars(select(Port).where(Port.device_id == uuid)).one()
        assert [f.ip_address for f in port.fixed_ips] == ["10.0.0.5"]
        assert port.fixed_ips[0].network_id == ids["network"]
    with store.session() as s:
        port = s.scalars(select(Port).where(Port.device_id == uuid)).one()
        s.delete(port)
    with store.read() as s:
        assert s.scalars(select(FixedIP)).all() == []


def test_ip_unique_per_subnet(store: Store) -> None:
    ids = _seed(store)
    with store.session() as s:
        s.add(_port(ids, "10.0.0.5"))
    with pytest.raises(errors.IpAddressInUse), store.session() as s:
        s.add(_port(ids, "10.0.0.5", mac="fa:16:3e:00:00:06"))


def test_same_ip_allowed_on_another_network(store: Store) -> None:
    ids = _seed(store)
    with store.session() as s:
        s.add(_port(ids, "10.0.0.5"))
        net2 = Network(project_id=ids["project"], name="net2")
        s.add(net2)
        s.flush()
        sub2 = Subnet(network_id=net2.id, project_id=ids["project"], ip_version=4, cidr="10.0.0.0/24")
        s.add(sub2)
        s.flush()
        s.add(
            Port(
                network_id=net2.id, project_id=ids["project"], mac_address="fa:16:3e:00:00:05",
                fixed_ips=[FixedIP(subnet_id=sub2.id, ip_address="10.0.0.5")],
            )
        )
    with store.read() as s:
        assert len(s.scalars(select(FixedIP).where(FixedIP.ip_address == "10.0.0.5")).all()) == 2


def test_mac_unique_per_network(store: Store) -> None:
    ids = _seed(store)
    with store.session() as s:
        s.add(_port(ids, "10.0.0.5"))
    with pytest.raises(errors.MacAddressInUse), store.session() as s:
        s.add(_port(ids, "10.0.0.6", mac="FA:16:3E:00:00:05"))


@pytest.mark.parametrize("ip", ["10.0.1.5", "192.168.0.1", "not-an-ip"])
def test_fixed_ip_must_be_inside_subnet(store: Store, ip: str) -> None:
    ids = _seed(store)
    with pytest.raises(errors.InvalidValue), store.session() as s:
        s.add(_port(ids, ip))


def test_subnet_overlap_rejected_on_same_network_only(store: Store) -> None:
    ids = _seed(store)
    with pytest.raises(errors.SubnetOverlap), store.session() as s:
        s.add(Subnet(network_id=ids["network"], project_id=ids["project"], ip_version=4,
                     cidr="10.0.0.128/25"))
    with store.session() as s:
        other = Network(project_id=ids["project"], name="other")
        s.add(other)
        s.flush()
        s.add(Subnet(network_id=other.id, project_id=ids["project"], ip_version=4, cidr="10.0.0.0/24"))


@pytest.mark.parametrize(
    "fields",
    [
        {"cidr": "10.0.0.1/24"},  # host bits set
        {"cidr": "10.9.0.0/24", "gateway_ip": "10.8.0.1"},
        {"cidr": "10.9.0.0/24", "ip_version": 6},
        {"cidr": "10.9.0.0/24", "allocation_pools": [{"start": "10.9.0.9", "end": "10.9.0.2"}]},
        {"cidr": "10.9.0.0/24", "dns_nameservers": ["dns.example"]},
    ],
)
def test_invalid_subnet_values(store: Store, fields: dict[str, object]) -> None:
    ids = _seed(store)
    values = {"ip_version": 4, **fields}
    with pytest.raises(errors.InvalidValue), store.session() as s:
        s.add(Subnet(network_id=ids["network"], project_id=ids["project"], **values))


def test_no_dangling_references(store: Store) -> None:
    ids = _seed(store)
    with store.session() as s:
        s.add(_port(ids, "10.0.0.5"))
    with pytest.raises(errors.InUse), store.session() as s:
        s.delete(s.get(Network, ids["network"]))
    with pytest.raises(errors.InvalidValue), store.session() as s:
        s.add(Network(project_id="no-such-project", name="x"))


def test_failed_transaction_writes_nothing(store: Store) -> None:
    ids = _seed(store)
    before = store.current_revision()
    with pytest.raises(errors.IpAddressInUse), store.session() as s:
        s.add(Network(project_id=ids["project"], name="half"))
        s.add(_port(ids, "10.0.0.9"))
        s.add(_port(ids, "10.0.0.9", mac="fa:16:3e:00:00:07"))
    with store.read() as s:
        assert s.scalars(select(Network).where(Network.name == "half")).all() == []
        assert s.scalars(select(Port)).all() == []
    assert store.current_revision() == before


def test_every_change_gets_its_own_increasing_revision(store: Store) -> None:
    ids = _seed(store)
    first = store.changes_since(0)
    assert [c.revision for c in first] == list(range(1, len(first) + 1))
    assert {(c.resource, c.op) for c in first} == {
        ("project", "create"), ("network", "create"), ("subnet", "create"),
    }
    rev = store.current_revision()
    with store.session() as s:
        s.add(_port(ids, "10.0.0.5"))
    with store.session() as s:
        port = s.scalars(select(Port)).one()
        port.fixed_ips.append(FixedIP(subnet_id=ids["subnet"], ip_address="10.0.0.6"))
    with store.session() as s:
        port = s.scalars(select(Port)).one()
        port.fixed_ips[0].ip_address = "10.0.0.7"  # an address changed in place
    with store.session() as s:
        s.delete(s.scalars(select(Port)).one())
    ops = [(c.resource, c.op) for c in store.changes_since(rev)]
    assert ops == [("port", "create"), ("port", "update"), ("port", "update"), ("port", "delete")]


def test_long_poll_returns_at_once_when_changes_exist(store: Store) -> None:
    _seed(store)
    start = time.monotonic()
    assert store.changes_since(0, timeout=5)
    assert time.monotonic() - start < 1


def test_long_poll_times_out_with_nothing(store: Store) -> None:
    _seed(store)
    rev = store.current_revision()
    start = time.monotonic()
    assert store.changes_since(rev, timeout=0.6) == []
    elapsed = time.monotonic() - start
    assert 0.55 <= elapsed < 3


def test_long_poll_wakes_on_commit_in_same_process(store: Store) -> None:
    ids = _seed(store)
    rev = store.current_revision()

    def later() -> None:
        time.sleep(0.3)
        with store.session() as s:
            s.get(Network, ids["network"]).name = "renamed"

    threading.Thread(target=later).start()
    start = time.monotonic()
    got = store.changes_since(rev, timeout=10)
    assert [(c.resource, c.op) for c in got] == [("network", "update")]
    assert time.monotonic() - start < 2


def test_migrations_match_the_models(db_url: str) -> None:
    """A model change without its migration would make SQLite and PostgreSQL drift apart."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from openimds.inventory.models import Base

    upgrade(db_url)
    st = Store(db_url)
    try:
        with st._read_engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    finally:
        st.dispose()
    assert diff == []


# ---- retention -------------------------------------------------------------------------------


def _rename_many(store: Store, network_id: str, times: int) -> None:
    for i in range(times):
        with store.session() as s:
            s.get(Network, network_id).name = f"n{i}"


def test_prune_by_count_keeps_the_newest_and_reports_the_gap(store: Store) -> None:
    from openimds.inventory.retention import Retention

    ids = _seed(store)
    _rename_many(store, ids["network"], 20)
    top = store.current_revision()
    removed = store.prune_changes(Retention(max_age_seconds=0, max_count=5), batch=4)
    assert removed == top - 5
    kept = store.changes_since(top - 5)
    assert [c.revision for c in kept] == list(range(top - 4, top + 1))
    # A consumer behind the retained history is told so instead of silently missing changes.
    with pytest.raises(errors.ChangesPruned) as info:
        store.changes_since(0)
    assert info.value.since == 0 and info.value.floor == top - 5
    # An up-to-date consumer is unaffected, and new changes keep flowing after the prune.
    assert store.changes_since(top) == []
    _rename_many(store, ids["network"], 1)
    assert [c.revision for c in store.changes_since(top)] == [top + 1]
    # Pruning again with the same bound removes only what the new change pushed out.
    assert store.prune_changes(Retention(max_age_seconds=0, max_count=5)) == 1


def test_prune_by_age_never_removes_the_newest(store: Store) -> None:
    from datetime import UTC, datetime, timedelta

    from openimds.inventory.retention import Retention

    ids = _seed(store)
    _rename_many(store, ids["network"], 3)
    top = store.current_revision()
    # Nothing is old yet.
    assert store.prune_changes(Retention(max_age_seconds=3600, max_count=0)) == 0
    # An hour later everything is old; the newest row still stays so `since=top` is valid.
    later = datetime.now(UTC) + timedelta(hours=2)
    assert store.prune_changes(Retention(3600, 0), now=later) == top - 1
    assert store.changes_since(top) == []
    assert [c.revision for c in store.changes_since(top - 1)] == [top]
    with pytest.raises(errors.ChangesPruned):
        store.changes_since(top - 2)
