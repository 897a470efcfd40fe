"""openimds.feed.memory: the in-memory ChangeFeed behaves as the control plane does."""

from __future__ import annotations

import asyncio

import pytest

from openimds.feed import FeedGap, FeedUnavailable, Kind, ListSpec, MemoryFeed


async def test_writes_record_create_update_delete_and_reads_see_the_current_rows() -> None:
    feed = MemoryFeed()
    assert feed.put(Kind.NETWORK, {"id": "n1"}) == 1
    assert feed.put("ports", {"id": "p1", "network_id": "n1", "device_id": "vm"}) == 2
    assert feed.put("port", {"id": "p1", "network_id": "n1", "device_id": "vm2"}) == 3
    assert feed.delete(Kind.NETWORK, "n1") == 4
    batch = await feed.changes(0, timeout=0)
    assert [(c.revision, c.resource, c.resource_id, c.op) for c in batch.records] == [
        (1, "network", "n1", "create"), (2, "port", "p1", "create"),
        (3, "port", "p1", "update"), (4, "network", "n1", "delete")]
    assert batch.revision == 4
    assert (await feed.changes(4, timeout=0)).records == [] and feed.revision == 4
    assert await feed.fetch(Kind.NETWORK, "n1") is None
    assert await feed.fetch(Kind.PORT, "p1") == {"id": "p1", "network_id": "n1",
                                                  "device_id": "vm2"}
    assert await feed.find(Kind.PORT, device_id="vm2") == [
        {"id": "p1", "network_id": "n1", "device_id": "vm2"}]
    assert await feed.find(Kind.PORT, device_id="vm") == []


async def test_a_listing_projects_fields_and_maps_each_row() -> None:
    feed = MemoryFeed()
    feed.put(Kind.PORT, {"id": "p1", "network_id": "n1", "name": "x"})
    feed.put(Kind.ROUTER, {"id": "r1"})
    listing = await feed.listing({Kind.PORT: ListSpec(fields=("id", "network_id"),
                                                      each=lambda r: tuple(sorted(r))),
                                  Kind.ROUTER: ListSpec()})
    assert listing.revision == 2
    assert list(listing.of(Kind.PORT)) == [("id", "network_id")]
    assert list(listing.of(Kind.ROUTER)) == [{"id": "r1"}]
    assert listing.of(Kind.NETWORK) == ()
    assert feed.snapshots == 1


async def test_a_poll_waits_for_the_next_change() -> None:
    feed = MemoryFeed()
    poll = asyncio.create_task(feed.changes(0, timeout=10))
    await asyncio.sleep(0)
    assert not poll.done()
    feed.put(Kind.ROUTER, {"id": "r1"})
    batch = await asyncio.wait_for(poll, 5)
    assert [c.resource_id for c in batch.records] == ["r1"]


async def test_pruned_history_is_a_gap() -> None:
    feed = MemoryFeed()
    for i in range(3):
        feed.put(Kind.NETWORK, {"id": f"n{i}"})
    feed.prune(2)
    with pytest.raises(FeedGap):
        await feed.changes(1, timeout=0)
    assert [c.revision for c in (await feed.changes(2, timeout=0)).records] == [3]


async def test_down_fails_every_call_and_wakes_a_waiting_poll() -> None:
    feed = MemoryFeed()
    poll = asyncio.create_task(feed.changes(0, timeout=10))
    await asyncio.sleep(0)
    feed.set_down(True)
    with pytest.raises(FeedUnavailable):
        await asyncio.wait_for(poll, 5)
    for call in (feed.listing({}), feed.fetch(Kind.PORT, "p"), feed.find(Kind.PORT),
                 feed.changes(0, timeout=0)):
        with pytest.raises(FeedUnavailable):
            await call
    feed.set_down(False)
    assert (await feed.changes(0, timeout=0)).records == []
