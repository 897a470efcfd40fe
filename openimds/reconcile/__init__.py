"""Reconciliation by key for the network agents (DHCP, L3, L2), and what their appliers share.

    agent.py      `InventoryAgent`: feed watcher + work queue + one worker running
                  `reconcile_key` (plan → observe → diff → apply) in a thread; `TerminalError`
    queue.py      `WorkQueue`: dedupe queue with per-key timers and failure backoff
    snapshot.py   `Snapshot` of networks, subnets, ports and routers; `advance_snapshot`
    actions.py    the typed actions an applier's pure diff returns
    executor.py   `Executor`: performs actions through the linux layer's verbs
    converge.py   `execute_pass`: claim, execute, release for one key
    claims.py     `Claims`: which keys this agent owns on a shared host

The inventory is read through `openimds.feed`; its names are re-exported here under the names
this package has always used (`Change`, `InventoryReader`, `MemoryInventory`, ...): they are
the feed's own classes, not copies.
"""

from openimds.feed import ChangeFeed as InventoryReader
from openimds.feed import ChangeRecord as Change
from openimds.feed import ControlFeed as ControlInventory
from openimds.feed import FeedGap as HistoryPruned
from openimds.feed import FeedUnavailable as InventoryUnavailable
from openimds.feed import MemoryFeed as MemoryInventory
from openimds.reconcile.agent import MEMO_RETENTION, Counters, InventoryAgent, Owners, TerminalError
from openimds.reconcile.claims import Claims
from openimds.reconcile.converge import execute_pass
from openimds.reconcile.executor import Executor
from openimds.reconcile.queue import WorkQueue
from openimds.reconcile.snapshot import (
    SNAPSHOT_TABLES,
    Snapshot,
    advance_snapshot,
    changed_rows,
    ids_by_key,
    read_snapshot,
    subnet_networks,
)

# The name this package exported before SNAPSHOT_TABLES (kept for importers).
RESOURCES = SNAPSHOT_TABLES

__all__ = [
    "MEMO_RETENTION",
    "RESOURCES",
    "SNAPSHOT_TABLES",
    "Change",
    "Claims",
    "ControlInventory",
    "Counters",
    "Executor",
    "HistoryPruned",
    "InventoryAgent",
    "InventoryReader",
    "InventoryUnavailable",
    "MemoryInventory",
    "Owners",
    "Snapshot",
    "TerminalError",
    "WorkQueue",
    "advance_snapshot",
    "changed_rows",
    "execute_pass",
    "ids_by_key",
    "read_snapshot",
    "subnet_networks",
]
