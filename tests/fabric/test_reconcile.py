"""The reconcile loop without a kernel: dedupe queue, timers, backoff, change → key mapping."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from openimds.reconcile import (
    Change,
    InventoryAgent,
    MemoryInventory,
    Snapshot,
    TerminalError,
    WorkQueue,
)


async def test_queue_dedupes_and_reruns_a_key_added_while_active() -> None:
    q = WorkQueue()
    for k in ("a", "b", "a", "a"):
        q.add(k)
    assert await q.get() == "a"
    q.add("a")  # arrives while "a" runs: must run once more afterwards
    assert await q.get() == "b"
    q.done("b")
    q.done("a")
    assert await q.get() == "a"
    q.done("a")
    assert q.idle()


async def test_timers_keep_the_earliest_and_backoff_grows() -> None:
    q = WorkQueue(base_delay=0.01, max_delay=0.04)
    q.add_after("k", 10)
    q.add_after("k", 0.01)
    q.add_after("k", 5)
    assert 0 <= q.scheduled()["k"] <= 0.01
    assert await asyncio.wait_for(q.get(), 1) == "k"
    q.done("k")
    assert [q.add_rate_limited("x") for _ in range(4)] == [0.01, 0.02, 0.04, 0.04]
    q.forget("x")
    assert q.add_rate_limited("x") == 0.01
    q.close()


class FakeAgent(InventoryAgent):
    name = "fake"

    def __init__(self, reader: MemoryInventory, **kw: Any) -> None:
        super().__init__(reader, **kw)
        self.calls: list[tuple[str, bool]] = []  # (key, present in snapshot)
        self.fail: dict[str, int] = {}
        self.terminal: set[str] = set()
        self.next_at: dict[str, datetime] = {}
        self.host: set[str] = set()

    def keys(self, snap: Snapshot) -> set[str]:
        return snap.ids("networks")

    def owners(self, snap: Snapshot) -> dict[tuple[str, str], set[str]]:
        out: dict[tuple[str, str], set[str]] = {("network", n["id"]): {n["id"]}
                                                for n in snap.networks}
        for p in snap.ports:
            out[("port", p["id"])] = {p["network_id"]}
        return out

    def orphan_keys(self) -> set[str]:
        return set(self.host)

    def reconcile_key(self, key: str, snap: Snapshot, now: datetime,
                      log: logging.LoggerAdapter[Any]) -> datetime | None:
        self.calls.append((key, key in snap.ids("networks")))
        if self.fail.get(key, 0) > 0:
            self.fail[key] -= 1
            raise RuntimeError("boom")
        if key in self.terminal:
            raise TerminalError("bad input")
        return self.next_at.pop(key, None)


async def test_agent_maps_changes_to_keys_including_deleted_ports() -> None:
    inv = MemoryInventory()
    inv.put("network", {"id": "n1"})
    inv.put("network", {"id": "n2"})
    inv.put("port", {"id": "p1", "network_id": "n1"})
    agent = FakeAgent(inv, watch_timeout=0.2)
    agent.host = {"orphan"}
    task = asyncio.create_task(agent.run())
    try:
        await agent.wait_synced(inv.revision)
        # Startup: every network plus the orphan found on the host (absent -> converge to none).
        assert sorted(agent.calls) == [("n1", True), ("n2", True), ("orphan", False)]
        agent.calls.clear()
        # A deleted port is gone from the new snapshot; the old one / memo still maps it.
        rev = inv.delete("port", "p1")
        await agent.wait_synced(rev)
        assert agent.calls == [("n1", True)]
        agent.calls.clear()
        rev = inv.delete("network", "n2")
        await agent.wait_synced(rev)
        assert agent.calls == [("n2", False)]
    finally:
        agent.stop()
        await task


async def test_errors_are_retried_terminal_ones_are_not_and_timers_requeue() -> None:
    inv = MemoryInventory()
    for n in ("bad", "dead", "timed"):
        inv.put("network", {"id": n})
    agent = FakeAgent(inv, watch_timeout=0.2, queue=WorkQueue(base_delay=0.05))
    agent.fail["bad"] = 2
    agent.terminal.add("dead")
    agent.next_at["timed"] = datetime.now(UTC) + timedelta(seconds=0.2)
    task = asyncio.create_task(agent.run())
    try:
        for _ in range(100):
            if [c for c in agent.calls if c[0] == "bad"] == [("bad", True)] * 3 and \
                    agent.calls.count(("timed", True)) == 2:
                break
            await asyncio.sleep(0.05)
        assert agent.calls.count(("bad", True)) == 3  # two failures, then success
        assert agent.calls.count(("timed", True)) == 2  # startup, then its timer
        assert agent.calls.count(("dead", True)) == 1
        assert agent.counters.by_outcome == {"ok": 3, "error": 2, "terminal": 1}
    finally:
        agent.stop()
        await task


def test_an_older_snapshot_never_replaces_a_newer_one() -> None:
    """The periodic resync and the watcher take snapshots concurrently; a resync whose
    snapshot was read before the watcher's must not roll the agent back."""
    agent = FakeAgent(MemoryInventory())
    newer = Snapshot(revision=7, networks=({"id": "n-new"},))
    older = Snapshot(revision=5, networks=({"id": "n-old"},))
    agent._take(newer)
    agent._take(older)
    assert agent.snapshot is newer
    agent._take(Snapshot(revision=8))
    assert agent.snapshot is not None and agent.snapshot.revision == 8


def test_memo_forgets_rows_gone_for_longer_than_the_retention(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import openimds.reconcile.agent as reconcile

    agent = FakeAgent(MemoryInventory())
    clock = [1000.0]
    monkeypatch.setattr(reconcile.time, "monotonic", lambda: clock[0])
    agent._take(Snapshot(revision=1, networks=({"id": "n1"},),
                         ports=({"id": "p1", "network_id": "n1"},)))
    agent._take(Snapshot(revision=2, networks=({"id": "n1"},)))  # p1 deleted
    assert agent._memo[("port", "p1")] == {"n1"}  # a late change to p1 still maps to n1
    clock[0] += reconcile.MEMO_RETENTION + 1
    agent._take(Snapshot(revision=3, networks=({"id": "n1"},)))
    assert ("port", "p1") not in agent._memo
    assert agent._memo[("network", "n1")] == {"n1"}


class GatedInventory(MemoryInventory):
    """A MemoryInventory whose feed readers wait at a gate, so a test can prune history
    while the agent is between two polls (as when it was away longer than the retention)."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.gate.set()
        self.hold_from = 0  # polls from this revision on wait while the gate is closed

    async def changes(self, since: int, timeout: float) -> Any:
        if since >= self.hold_from:
            await self.gate.wait()
        return await super().changes(since, timeout)


async def test_a_pruned_feed_resynchronises_from_a_full_listing(
        caplog: pytest.LogCaptureFixture) -> None:
    inv = GatedInventory()
    inv.put("network", {"id": "n1"})
    agent = FakeAgent(inv, watch_timeout=0.2)
    task = asyncio.create_task(agent.run())
    try:
        await agent.wait_synced(inv.revision)
        inv.hold_from = inv.revision + 1  # n2's revision: polls that deliver it pass
        inv.gate.clear()
        await agent.wait_synced(inv.put("network", {"id": "n2"}))
        agent.calls.clear()
        inv.put("network", {"id": "n3"})
        inv.prune(inv.revision)  # the agent's next `since` is now behind the history
        with caplog.at_level(logging.WARNING):
            inv.gate.set()
            await agent.wait_synced(inv.revision)
        assert ("n3", True) in agent.calls
        assert any("resynchronising from a full listing" in r.getMessage()
                   for r in caplog.records)
        assert not any(r.exc_info for r in caplog.records)
        # Afterwards the watch follows the feed again, from the snapshot's revision.
        agent.calls.clear()
        await agent.wait_synced(inv.delete("network", "n1"))
        assert agent.calls == [("n1", False)]
    finally:
        agent.stop()
        await task


def test_advance_snapshot_replaces_in_place_appends_new_and_drops_deleted() -> None:
    from openimds.reconcile import Change, advance_snapshot, changed_rows, subnet_networks

    old = Snapshot(7, networks=({"id": "n1", "subnets": ["s1"]},),
                   subnets=({"id": "s1", "network_id": "n1"},),
                   ports=({"id": "p1", "v": 1}, {"id": "p2", "v": 1}, {"id": "p3", "v": 1}))
    batch = [Change(8, "port", "p2", "update"), Change(9, "port", "p4", "create"),
             Change(10, "port", "p1", "delete"), Change(11, "instance", "i1", "update"),
             Change(12, "subnet", "s2", "create"), Change(13, "port", "p2", "update")]
    rows = changed_rows(batch)
    # Only rows snapshots hold, each once, with its last operation.
    assert rows == {("ports", "p2"): "update", ("ports", "p4"): "create",
                    ("ports", "p1"): "delete", ("subnets", "s2"): "create"}
    fetched = {("ports", "p2"): {"id": "p2", "v": 2}, ("ports", "p4"): {"id": "p4", "v": 1},
               ("ports", "p1"): None, ("subnets", "s2"): {"id": "s2", "network_id": "n1"}}
    assert subnet_networks(old, fetched) == {"n1"}
    fetched[("networks", "n1")] = {"id": "n1", "subnets": ["s1", "s2"]}
    new = advance_snapshot(old, fetched, 13)
    assert new.revision == 13
    assert [p["id"] for p in new.ports] == ["p2", "p3", "p4"]
    assert new.find("ports", "p2") == {"id": "p2", "v": 2}
    assert [s["id"] for s in new.subnets] == ["s1", "s2"]
    assert new.networks == ({"id": "n1", "subnets": ["s1", "s2"]},)
    assert new.routers == old.routers
    # The old snapshot is untouched (the agent diffs old against new).
    assert [p["id"] for p in old.ports] == ["p1", "p2", "p3"]
    # A snapshot newer than the batch keeps its revision.
    assert advance_snapshot(Snapshot(20), {}, 13).revision == 20


async def test_a_small_batch_fetches_its_rows_instead_of_relisting() -> None:
    inv = MemoryInventory()
    inv.put("network", {"id": "n1"})
    inv.put("port", {"id": "p1", "network_id": "n1"})
    agent = FakeAgent(inv, watch_timeout=0.2, resync_interval=3600, incremental_limit=3)
    task = asyncio.create_task(agent.run())
    try:
        await agent.wait_synced(inv.revision)
        listings = inv.snapshots
        agent.calls.clear()
        inv.put("network", {"id": "n2"})
        await agent.wait_synced(inv.put("port", {"id": "p2", "network_id": "n2"}))
        assert inv.snapshots == listings  # no relisting for two rows
        assert agent.snapshot is not None and agent.snapshot.find("ports", "p2") is not None
        assert ("n2", True) in agent.calls
        agent.calls.clear()
        await agent.wait_synced(inv.delete("port", "p1"))
        assert agent.calls == [("n1", True)]
        assert agent.snapshot.find("ports", "p1") is None
        assert inv.snapshots == listings
        # A burst over `incremental_limit` rows is cheaper as one listing.
        for i in range(5):
            rev = inv.put("network", {"id": f"b{i}"})
        await agent.wait_synced(rev)
        assert inv.snapshots > listings
        assert {f"b{i}" for i in range(5)} <= agent.snapshot.ids("networks")
    finally:
        agent.stop()
        await task


async def test_synced_revision_is_reported_only_once_a_pass_is_done() -> None:
    inv = MemoryInventory()
    inv.put("network", {"id": "n1"})
    agent = FakeAgent(inv, watch_timeout=0.2)
    assert agent.synced_revision() is None  # nothing seen yet
    agent.fail["n2"] = 1  # n2's first attempt fails: not synced until its retry succeeds
    task = asyncio.create_task(agent.run())
    try:
        await agent.wait_synced(inv.revision)
        assert agent.synced_revision() == inv.revision
        rev = inv.put("network", {"id": "n2"})
        await agent.wait_synced(rev)
        assert agent.synced_revision() == rev
        assert ("n2", True) in agent.calls and agent.fail["n2"] == 0
    finally:
        agent.stop()
        await task


def test_grouped_keeps_list_order_skips_rows_without_the_key_and_is_made_once() -> None:
    from openimds.reconcile import advance_snapshot

    ports = ({"id": "p1", "network_id": "n1"}, {"id": "p2", "network_id": "n2"},
             {"id": "p3"}, {"id": "p4", "network_id": "n1"}, {"id": "p5", "network_id": ""})
    snap = Snapshot(1, ports=ports)
    groups = snap.grouped("ports", "network_id")
    assert {k: [p["id"] for p in v] for k, v in groups.items()} == {
        "n1": ["p1", "p4"], "n2": ["p2"]}
    assert snap.grouped("ports", "network_id") is groups  # kept with the snapshot
    assert snap == Snapshot(1, ports=ports)  # and no part of its value
    # A snapshot advanced from it groups its own rows (nothing carried over).
    new = advance_snapshot(snap, {("ports", "p2"): {"id": "p2", "network_id": "n1"},
                                  ("ports", "p4"): None,
                                  ("ports", "p6"): {"id": "p6", "network_id": "n2"}}, 2)
    assert {k: [p["id"] for p in v] for k, v in new.grouped("ports", "network_id").items()} \
        == {"n1": ["p1", "p2"], "n2": ["p6"]}
    assert {k: [p["id"] for p in v] for k, v in snap.grouped("ports", "network_id").items()} \
        == {"n1": ["p1", "p4"], "n2": ["p2"]}


def test_the_memo_keeps_every_owner_without_changing_the_owners_maps() -> None:
    """The memo holds the owners maps' own (shared) sets; a row seen under two owners gets
    a new set for the union, and no owners map is changed by it."""
    agent = FakeAgent(MemoryInventory())
    first = Snapshot(1, networks=({"id": "n1"}, {"id": "n2"}),
                     ports=({"id": "p1", "network_id": "n1"},))
    agent._take(first)
    owners_first = agent._owners_of(first)
    assert agent._memo[("port", "p1")] is owners_first[("port", "p1")]
    moved = Snapshot(2, networks=first.networks, ports=({"id": "p1", "network_id": "n2"},))
    agent._take(moved)
    assert agent._memo[("port", "p1")] == {"n1", "n2"}
    assert owners_first[("port", "p1")] == {"n1"}
    assert agent._owners_of(moved)[("port", "p1")] == {"n2"}
    # A change of p1 reaches both networks: its old one through the memo.
    change = Change(3, "port", "p1", "update")
    assert agent.keys_for(change, None, moved) == {"n1", "n2"}


def test_dhcp_owners_share_one_set_per_network() -> None:
    from openimds.dhcp.agent import DhcpAgent

    snap = Snapshot(
        1, networks=({"id": "n1"}, {"id": "n2"}),
        subnets=({"id": "s1", "network_id": "n1"}, {"id": "s0"}),
        ports=({"id": "p1", "network_id": "n1"}, {"id": "p2", "network_id": "n1"},
               {"id": "r1", "network_id": "n2", "device_id": "R",
                "device_owner": "network:router_interface"},
               {"id": "r2", "network_id": "n1", "device_id": "R",
                "device_owner": "network:router_interface"}),
        routers=({"id": "R"}, {"id": "lonely"}))
    owners = DhcpAgent.owners(DhcpAgent.__new__(DhcpAgent), snap)
    assert {k: set(v) for k, v in owners.items()} == {
        ("network", "n1"): {"n1"}, ("network", "n2"): {"n2"},
        ("subnet", "s1"): {"n1"}, ("subnet", "s0"): set(),
        ("port", "p1"): {"n1"}, ("port", "p2"): {"n1"}, ("port", "r1"): {"n2"},
        ("port", "r2"): {"n1"}, ("router", "R"): {"n1", "n2"}, ("router", "lonely"): set()}
    assert owners[("port", "p1")] is owners[("port", "p2")] is owners[("network", "n1")]
