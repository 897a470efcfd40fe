"""Pins the public surface of openimds.feed, and that openimds.reconcile's old names for the
feed's parts are those parts (one class each), not copies."""

from __future__ import annotations

import openimds.feed as feed
import openimds.reconcile as reconcile


def test_feed_exports() -> None:
    assert sorted(feed.__all__) == sorted([
        "NETWORK_KINDS", "Backoff", "ChangeBatch", "ChangeFeed", "ChangeRecord", "ControlFeed",
        "FeedError", "FeedGap", "FeedUnavailable", "Kind", "ListSpec", "Listing", "MemoryFeed",
        "api_errors", "exponential_delay"])
    missing = [name for name in feed.__all__ if not hasattr(feed, name)]
    assert missing == []


def test_reconcile_keeps_its_names_as_the_feeds_own_classes() -> None:
    assert {"Change", "ControlInventory", "HistoryPruned", "InventoryAgent", "InventoryReader",
            "InventoryUnavailable", "MemoryInventory", "Owners", "RESOURCES", "Snapshot",
            "TerminalError", "WorkQueue"} <= set(reconcile.__all__)
    missing = [name for name in reconcile.__all__ if not hasattr(reconcile, name)]
    assert missing == []
    assert reconcile.Change is feed.ChangeRecord
    assert reconcile.MemoryInventory is feed.MemoryFeed
    assert reconcile.ControlInventory is feed.ControlFeed
    assert reconcile.InventoryReader is feed.ChangeFeed
    assert reconcile.HistoryPruned is feed.FeedGap
    assert reconcile.InventoryUnavailable is feed.FeedUnavailable


def test_one_record_type_across_store_agent_and_feed() -> None:
    from openimds.agent import ChangeRecord as agent_record
    from openimds.inventory import ChangeRecord as store_record

    assert agent_record is store_record is feed.ChangeRecord
