"""The inventory: models, the Store (transactions + change feed) and migrations."""

from openimds.feed.records import ChangeRecord
from openimds.inventory.errors import ChangesPruned
from openimds.inventory.retention import Retention
from openimds.inventory.store import Store

__all__ = ["ChangeRecord", "ChangesPruned", "Retention", "Store"]
