"""Keeps the change feed bounded: the control-plane API prunes it every `change_prune_interval`.

Several API workers or replicas may prune at once; deleting an already-deleted prefix is a no-op,
so no coordination is needed. A failed prune (database away) is one WARNING and waits for the
next interval: nothing depends on it finishing.
"""

from __future__ import annotations

import asyncio
import logging

from openimds.inventory.errors import InventoryError
from openimds.inventory.retention import Retention
from openimds.inventory.store import Store

LOG = logging.getLogger(__name__)


async def prune_forever(store: Store, retention: Retention, interval: float) -> None:
    """Prune now, then every `interval` seconds, until cancelled."""
    while True:
        try:
            removed = await asyncio.to_thread(store.prune_changes, retention)
        except InventoryError as exc:
            LOG.warning("change feed not pruned (%s); retrying in %.0f s", exc.message, interval)
        else:
            if removed:
                LOG.info("change feed pruned: %d old records removed", removed)
        await asyncio.sleep(interval)
