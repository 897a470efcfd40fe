"""The kinds of resource the change feed names: one `Kind` per tracked inventory model.

`openimds.inventory.models.TRACKED` maps each tracked model class to its `Kind`, and
tests/feed/test_kinds.py pins that every `Kind` is some model's (and every model's a `Kind`),
so a new tracked model cannot appear in the feed under a name no consumer knows. The enum
lives here, free of SQLAlchemy, because the agents read the feed without the inventory.

`Kind` is a `StrEnum`: a member equals (and hashes as) its value, so records from the wire
(plain strings) and keys built from members compare alike.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["NETWORK_KINDS", "Kind"]


class Kind(StrEnum):
    PROJECT = "project"
    NETWORK = "network"
    SUBNET = "subnet"
    PORT = "port"
    ROUTER = "router"
    INSTANCE = "instance"
    KEYPAIR = "keypair"

    @property
    def collection(self) -> str:
        """The Neutron collection (and URL) name of a networking kind: networks, ports, ..."""
        return f"{self.value}s"

    @classmethod
    def of_collection(cls, collection: str) -> Kind:
        """`Kind.of_collection("ports") is Kind.PORT`."""
        return cls(collection.removesuffix("s"))


# The kinds the network agents' snapshots hold, in the order they are listed.
NETWORK_KINDS = (Kind.NETWORK, Kind.SUBNET, Kind.PORT, Kind.ROUTER)
