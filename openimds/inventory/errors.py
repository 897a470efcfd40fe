"""Typed inventory errors. The control-plane API maps each family to one HTTP status:

    InventoryError
    ├── NotFound            -> 404  (a referenced or requested row does not exist)
    ├── InvalidValue        -> 400  (malformed or out-of-range value, e.g. IP outside its subnet)
    ├── Conflict            -> 409
    │   ├── IpAddressInUse
    │   ├── MacAddressInUse
    │   ├── SubnetOverlap
    │   ├── InUse           (a row still referenced, e.g. a network with ports)
    │   └── SegmentInUse    (a concurrent writer took the same VNI / VLAN / flat physnet)
    ├── StoreUnavailable    -> 503  (the database cannot be reached)
    └── ChangesPruned       -> 410  (the change feed no longer holds the asked-for history)
"""

from __future__ import annotations


class InventoryError(Exception):
    """Base class; `message` is safe to show to an API client."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(InventoryError):
    pass


class InvalidValue(InventoryError):
    pass


class Conflict(InventoryError):
    pass


class IpAddressInUse(Conflict):
    pass


class MacAddressInUse(Conflict):
    pass


class SubnetOverlap(Conflict):
    pass


class InUse(Conflict):
    pass


class SegmentInUse(Conflict):
    pass


class StoreUnavailable(InventoryError):
    pass


class ChangesPruned(InventoryError):
    """The change feed was pruned past the caller's revision: it must resynchronise from a
    full listing and watch from the revision that listing was taken at."""

    def __init__(self, since: int, floor: int) -> None:
        super().__init__(
            f"the change feed no longer holds revision {since + 1} (history before "
            f"{floor + 1} was pruned): list the resources again and watch from the current "
            "revision"
        )
        self.since = since
        self.floor = floor
