"""The inventory: models, the Store (transactions + change feed) and migrations."""

from openimds.inventory.store import ChangeRecord, Store

__all__ = ["ChangeRecord", "Store"]
