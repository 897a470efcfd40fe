"""ViewCache driven by plain records: which change drops which cached view, which load is kept.

No database and no event loop: loads are `(InstanceView, Deps)` values, changes are feed
records, the changed rows are `PortFacts`/`KeyFacts`, as store_queries.py would return them.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass

import pytest

from openimds.metadata.source import AddressMatch, PasswordResult
from openimds.metadata.view import InstanceView
from openimds.metadata.view_cache import Deps, DhcpServers, KeyFacts, PortFacts, ViewCache
from openimds.wire import DHCP_OWNER


@dataclass(frozen=True)
class Rec:
    """A change-feed record (the cache reads four fields, nothing else)."""

    resource: str
    resource_id: str
    op: str = "update"
    revision: int = 1


def view(uuid: str, hostname: str = "vm", password: str | None = None) -> InstanceView:
    return InstanceView(uuid=uuid, ec2_id=1, name=hostname, hostname=hostname, project_id="p",
                        password=password)


# Instance "a" sits on port pa (subnet sa, network na) with key pair (user u, name k);
# instance "b" on port pb (subnet sb, network nb), no key pair.
DEPS = {
    "a": lambda: Deps(ports={"pa"}, subnets={"sa"}, networks={"na"}, keypair=("u", "k")),
    "b": lambda: Deps(ports={"pb"}, subnets={"sb"}, networks={"nb"}),
}


def filled(prefetch: bool = True) -> ViewCache:
    cache = ViewCache(prefetch=prefetch)
    for uuid, deps in DEPS.items():
        cache.remember(view(uuid), deps())
    return cache


@pytest.mark.parametrize(
    ("changes", "ports", "keys", "dropped", "wanted"),
    [
        pytest.param([Rec("instance", "a")], [], [], {"a"}, ["a"], id="instance-update"),
        pytest.param([Rec("instance", "a", "delete")], [], [], {"a"}, [], id="instance-delete"),
        pytest.param([Rec("port", "pa")], [PortFacts("pa", "a", "compute:nova", "na")], [],
                     {"a"}, ["a"], id="own-port"),
        pytest.param([Rec("port", "pb")], [PortFacts("pb", "a", "compute:nova", "nb")], [],
                     {"a", "b"}, ["a"], id="port-moved-to-another-instance"),
        pytest.param([Rec("port", "px", "delete")], [], [], set(), [], id="unrelated-port-gone"),
        pytest.param([Rec("port", "px")], [PortFacts("px", "c", "network:router_interface")],
                     [], set(), [], id="router-port-no-prefetch"),
        pytest.param([Rec("port", "px")], [PortFacts("px", "c", None)], [], set(), ["c"],
                     id="port-given-a-device"),
        pytest.param([Rec("port", "pd")], [PortFacts("pd", "dhcp-x", DHCP_OWNER, "na")], [],
                     {"a"}, [], id="dhcp-port-on-network"),
        pytest.param([Rec("subnet", "sb")], [], [], {"b"}, [], id="subnet"),
        pytest.param([Rec("network", "na")], [], [], {"a"}, [], id="network"),
        pytest.param([Rec("keypair", "7")], [], [KeyFacts("7", "u", "k")], {"a"}, [],
                     id="keypair-by-name"),
        pytest.param([Rec("keypair", "7")], [], [KeyFacts("7", "u", "other")], set(), [],
                     id="another-keypair"),
        pytest.param([Rec("keypair", "7", "delete")], [], [KeyFacts("7")], {"a"}, [],
                     id="keypair-deleted-name-unknown"),
        pytest.param([Rec("project", "p"), Rec("router", "r"), Rec("user", "u")], [], [],
                     set(), [], id="nothing-rendered-depends"),
    ],
)
def test_apply_drops_exactly_the_views_a_change_can_affect(
    changes: list[Rec], ports: list[PortFacts], keys: list[KeyFacts], dropped: set[str],
    wanted: list[str],
) -> None:
    cache = filled()
    forgotten: list[str] = []
    cache.add_forget_listener(forgotten.append)
    cache.apply(changes, ports, keys)
    assert set(DEPS) - set(cache.views) == dropped
    assert dropped <= set(forgotten)
    assert list(cache.wanted) == wanted


def test_a_deleted_instance_leaves_no_last_view_and_no_queued_load() -> None:
    cache = filled()
    cache.apply([Rec("instance", "a")], [], [])
    assert "a" in cache.last and list(cache.wanted) == ["a"]
    cache.apply([Rec("instance", "a", "delete")], [], [])
    assert "a" not in cache.last and not cache.wanted


def test_no_prefetch_queues_nothing() -> None:
    cache = filled(prefetch=False)
    cache.apply([Rec("instance", "c")], [], [])
    assert not cache.wanted


def test_a_dropped_view_stays_the_last_view() -> None:
    cache = filled()
    cache.apply([Rec("subnet", "sa")], [], [])
    assert "a" not in cache.views and cache.last["a"].uuid == "a"


@pytest.mark.parametrize(
    ("during", "kept"),
    [
        pytest.param([], True, id="nothing-changed"),
        pytest.param([Rec("instance", "a")], False, id="the-instance"),
        pytest.param([Rec("subnet", "s-any")], False, id="any-subnet"),
        pytest.param([Rec("network", "n-any")], False, id="any-network"),
        pytest.param([Rec("keypair", "9")], False, id="any-keypair"),
        pytest.param([Rec("port", "pa")], False, id="a-port-it-read"),
        pytest.param([Rec("port", "p-other")], True, id="another-instances-port"),
        pytest.param([Rec("instance", "b")], True, id="another-instance"),
    ],
)
def test_a_load_is_kept_only_if_nothing_it_read_changed_meanwhile(
    during: list[Rec], kept: bool
) -> None:
    cache = ViewCache(prefetch=False)
    ticket = cache.begin_load("a")
    cache.apply(during, [], [KeyFacts("9")] if any(r.resource == "keypair" for r in during)
                else [])
    got = cache.finish_load(ticket, (view("a", "fresh"), DEPS["a"]()))
    assert got is not None and got.hostname == "fresh"  # the caller gets it either way
    assert ("a" in cache.views) is kept
    assert ("a" in cache.last) is kept


def test_a_load_of_a_missing_instance_drops_its_last_view() -> None:
    cache = filled()
    cache.apply([Rec("instance", "a")], [], [])
    assert cache.finish_load(cache.begin_load("a"), None) is None
    assert "a" not in cache.last and "a" not in cache.views


def test_dhcp_servers_read_by_a_load_are_known_until_their_network_changes() -> None:
    cache = ViewCache()
    servers = DhcpServers({"sa": "10.0.0.2"}, frozenset({"pd"}))
    deps = DEPS["a"]()
    deps.dhcp = {"na": servers}
    cache.finish_load(cache.begin_load("a"), (view("a"), deps))
    assert cache.dhcp_known() == {"na": servers}
    # The DHCP port itself changing (known by id only now, e.g. deleted) drops its network.
    cache.apply([Rec("port", "pd", "delete")], [], [])
    assert cache.dhcp_known() == {} and "a" not in cache.views


def test_dhcp_servers_read_across_a_dhcp_change_are_not_kept() -> None:
    cache = ViewCache()
    ticket = cache.begin_load("a")
    cache.apply([Rec("network", "na")], [], [])
    deps = DEPS["a"]()
    deps.dhcp = {"na": DhcpServers({"sa": "10.0.0.2"}, frozenset({"pd"}))}
    cache.finish_load(ticket, (view("a"), deps))
    assert cache.dhcp_known() == {}


def test_drop_all_forgets_views_addresses_and_voids_loads_in_flight() -> None:
    cache = filled()
    match = [AddressMatch("pa", "na", "a", "p")]
    cache.keep_address(cache.address_epoch, "10.0.0.5", match, {"pa"})
    ticket = cache.begin_load("b")
    cache.drop_all()
    assert not cache.views and cache.address("10.0.0.5") is None
    cache.finish_load(ticket, (view("b"), DEPS["b"]()))
    assert "b" not in cache.views


@pytest.mark.parametrize(
    ("change", "facts", "kept"),
    [
        pytest.param(Rec("port", "pa"), [], False, id="a-port-holding-it"),
        pytest.param(Rec("port", "pz"), [PortFacts("pz", addresses=("10.0.0.5",))], False,
                     id="a-port-now-holding-it"),
        pytest.param(Rec("port", "pz"), [PortFacts("pz", addresses=("10.0.0.9",))], True,
                     id="a-port-elsewhere"),
        pytest.param(Rec("instance", "a"), [], True, id="an-instance"),
    ],
)
def test_address_matches_are_dropped_per_port(
    change: Rec, facts: list[PortFacts], kept: bool
) -> None:
    cache = ViewCache()
    match = [AddressMatch("pa", "na", "a", "p")]
    cache.keep_address(cache.address_epoch, "10.0.0.5", match, {"pa"})
    cache.apply([change], facts, [])
    assert (cache.address("10.0.0.5") == match) is kept


def test_an_address_lookup_overtaken_by_a_port_change_is_not_cached() -> None:
    cache = ViewCache()
    epoch = cache.address_epoch
    cache.apply([Rec("port", "pz")], [], [])
    cache.keep_address(epoch, "10.0.0.5", [], {"pz"})
    assert cache.address("10.0.0.5") is None


@pytest.mark.parametrize(
    ("cached", "result", "served", "last"),
    [
        pytest.param(True, PasswordResult.SET, "s3cret", "s3cret", id="set-cached"),
        pytest.param(False, PasswordResult.SET, None, "s3cret", id="set-dropped-keeps-last"),
        pytest.param(True, PasswordResult.ALREADY_SET, None, None, id="already-set"),
        pytest.param(True, PasswordResult.NOT_FOUND, None, None, id="not-found"),
    ],
)
def test_a_password_write_is_seen_at_once(
    cached: bool, result: PasswordResult, served: str | None, last: str | None
) -> None:
    cache = filled()
    if not cached:
        cache.apply([Rec("instance", "a")], [], [])
    cache.password_written("a", "s3cret", result)
    got = cache.views.get("a")
    assert (got.password if got is not None else None) == served
    assert cache.last["a"].password == last


def test_the_cache_imports_no_sqlalchemy() -> None:
    """The state machine stays free of the database layer (only store_queries.py has it)."""
    code = ("import sys, openimds.metadata.view_cache; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'sqlalchemy'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"
