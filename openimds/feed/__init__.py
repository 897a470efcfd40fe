"""The change feed: how every part that keeps a copy of the inventory reads it.

    kinds.py     `Kind`, the resource kinds of the feed (one per tracked inventory model)
    records.py   `ChangeRecord`, `ChangeBatch`, `Listing`/`ListSpec` and the `ChangeFeed`
                 protocol (listing, fetch, find, changes)
    errors.py    `FeedError` > `FeedUnavailable` (back off, retry) | `FeedGap` (resync)
    backoff.py   `Backoff`, `exponential_delay`: the one retry rule
    control.py   `ControlFeed`: the ChangeFeed over the control-plane API; the client's
                 errors are translated there, once
    memory.py    `MemoryFeed`: the ChangeFeed in memory, for tests and demos

Consumers: the metadata agent's port index (`openimds.agent.feed.IndexSync`), the network
agents' reconcile loop (`openimds.reconcile.InventoryAgent`), and the metadata API's cache,
which reads the store in-process but shares `ChangeRecord` and `Kind`.
"""

from openimds.feed.backoff import Backoff, exponential_delay
from openimds.feed.control import ControlFeed, api_errors
from openimds.feed.errors import FeedError, FeedGap, FeedUnavailable
from openimds.feed.kinds import NETWORK_KINDS, Kind
from openimds.feed.memory import MemoryFeed
from openimds.feed.records import ChangeBatch, ChangeFeed, ChangeRecord, Listing, ListSpec

__all__ = [
    "NETWORK_KINDS",
    "Backoff",
    "ChangeBatch",
    "ChangeFeed",
    "ChangeRecord",
    "ControlFeed",
    "FeedError",
    "FeedGap",
    "FeedUnavailable",
    "Kind",
    "ListSpec",
    "Listing",
    "MemoryFeed",
    "api_errors",
    "exponential_delay",
]
