"""The network agents' view of the inventory: `Snapshot`, and how a feed batch advances it.

A snapshot holds Neutron-shaped rows of networks, subnets, ports and routers (compacted,
`openimds.rows`) as of one revision. `read_snapshot` lists them from a `ChangeFeed`; after a
batch of changes `advance_snapshot` (pure) replaces only the rows the batch names, so one port
change costs one small GET, not a relisting of the inventory.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from openimds.feed import NETWORK_KINDS, ChangeFeed, ChangeRecord, Kind, ListSpec
from openimds.rows import compact_row

__all__ = [
    "SNAPSHOT_LISTING",
    "SNAPSHOT_TABLES",
    "Snapshot",
    "advance_snapshot",
    "changed_rows",
    "ids_by_key",
    "read_snapshot",
    "subnet_networks",
]

# The snapshot's tables, by collection name (its attribute names). Not the control client's
# RESOURCES (every collection it can address), hence the name.
SNAPSHOT_TABLES = tuple(k.collection for k in NETWORK_KINDS)

# Compacted page by page: 100k ports as plain dicts were ~250 MB at once.
SNAPSHOT_LISTING = {kind: ListSpec(each=compact_row) for kind in NETWORK_KINDS}


@dataclass(frozen=True)
class Snapshot:
    """Neutron-shaped dicts of the whole inventory as of `revision`."""

    revision: int
    networks: tuple[Mapping[str, Any], ...] = ()
    subnets: tuple[Mapping[str, Any], ...] = ()
    ports: tuple[Mapping[str, Any], ...] = ()
    routers: tuple[Mapping[str, Any], ...] = ()
    # Groupings made by `grouped`, kept with the snapshot (it never changes once made).
    _groups: dict[tuple[str, str], dict[str, tuple[Mapping[str, Any], ...]]] = field(
        default_factory=dict, init=False, compare=False, repr=False, hash=False)

    def ids(self, resource: str) -> set[str]:
        return {d["id"] for d in getattr(self, resource)}

    def grouped(self, resource: str, key: str) -> Mapping[str, tuple[Mapping[str, Any], ...]]:
        """The rows of `resource` by their `key` value (e.g. ports by network_id), in list
        order; rows without it are left out. Made once per snapshot: one pass over the rows
        instead of one per network (100k ports x 100 networks was seconds per change)."""
        found = self._groups.get((resource, key))
        if found is None:
            lists: dict[str, list[Mapping[str, Any]]] = {}
            for d in getattr(self, resource):
                value = d.get(key)
                if value:
                    lists.setdefault(str(value), []).append(d)
            found = {k: tuple(v) for k, v in lists.items()}
            self._groups[(resource, key)] = found
        return found

    def find(self, resource: str, rid: str) -> Mapping[str, Any] | None:
        return next((d for d in getattr(self, resource) if d["id"] == rid), None)


def changed_rows(changes: Iterable[ChangeRecord]) -> dict[tuple[str, str], str]:
    """(plural resource, id) -> last op, for the rows of a batch that snapshots hold."""
    rows: dict[tuple[str, str], str] = {}
    for c in changes:
        if c.resource in NETWORK_KINDS:
            rows[(Kind(c.resource).collection, c.resource_id)] = c.op
    return rows


def subnet_networks(old: Snapshot,
                    rows: Mapping[tuple[str, str], Mapping[str, Any] | None]) -> set[str]:
    """Networks whose row embeds a changed subnet (before or after the change)."""
    found: set[str] = set()
    for (resource, rid), row in rows.items():
        if resource != Kind.SUBNET.collection:
            continue
        for version in (old.find(Kind.SUBNET.collection, rid), row):
            if version is not None and version.get("network_id"):
                found.add(str(version["network_id"]))
    return found


def advance_snapshot(old: Snapshot, rows: Mapping[tuple[str, str], Mapping[str, Any] | None],
                     revision: int) -> Snapshot:
    """`old` with each (resource, id) replaced by its new row (None = deleted). Updated rows
    keep their place and new ones go last, as the API lists by creation, so a plan that
    follows list order reads the same as after a full listing."""
    tables: dict[str, tuple[Mapping[str, Any], ...]] = {}
    for resource in SNAPSHOT_TABLES:
        fresh = {rid: row for (res, rid), row in rows.items() if res == resource}
        current = getattr(old, resource)
        if not fresh:
            tables[resource] = current
            continue
        kept = [fresh.get(d["id"], d) for d in current]
        seen = {d["id"] for d in current}
        added = [row for rid, row in fresh.items() if rid not in seen and row is not None]
        tables[resource] = tuple(d for d in [*kept, *added] if d is not None)
    return Snapshot(max(revision, old.revision), **tables)


async def read_snapshot(feed: ChangeFeed) -> Snapshot:
    """A full listing of what the network agents read, as a Snapshot."""
    listing = await feed.listing(SNAPSHOT_LISTING)
    return Snapshot(listing.revision, *(tuple(listing.of(kind)) for kind in NETWORK_KINDS))


def ids_by_key(rows: Iterable[Mapping[str, Any]], key: str) -> dict[str, str]:
    """id -> row[key] for rows that have it (e.g. port id -> network id)."""
    return {r["id"]: r[key] for r in rows if r.get(key)}
