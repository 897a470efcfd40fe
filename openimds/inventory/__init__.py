"""The inventory: models, the Store (transactions + change feed) and migrations."""

from openimds.inventory.errors import ChangesPruned
from openimds.inventory.retention import Retention
from openimds.inventory.store import ChangeRecord, Store

__all__ = ["ChangeRecord", "ChangesPruned", "Retention", "Store"]
