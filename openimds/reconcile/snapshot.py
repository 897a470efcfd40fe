"""The network agents' view of the inventory: `Snapshot`, and how a feed batch advances it.

A snapshot holds Neutron-shaped rows of networks, subnets, ports and routers (compacted,
`openimds.rows`) as of one revision, each table by id in list order. `read_snapshot` lists
them from a `ChangeFeed`; after a batch of changes `advance_snapshot` (pure) replaces only
the rows the batch names, so one port change costs one small GET, not a relisting of the
inventory, and only the groups (`Snapshot.grouped`) those rows are in are made again: a port
change at 100k ports regroups its own network's rows, not the cloud's (issue 14, item 3).
"""

from __future__ import annotations

from collections.abc import Iterable, KeysView, Mapping
from typing import Any

from openimds.feed import NETWORK_KINDS, ChangeFeed, ChangeRecord, Kind, ListSpec
from openimds.rows import compact_row

__all__ = [
    "SNAPSHOT_LISTING",
    "SNAPSHOT_TABLES",
    "Where",
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

Row = Mapping[str, Any]
# A grouping's filter: only rows whose attribute (first) has one of the values (second),
# e.g. ("device_owner", frozenset of the router interface owners).
Where = tuple[str, frozenset[Any]]
_GroupKey = tuple[str, str, Where | None]


def _group_value(row: Row, key: str, where: Where | None) -> str | None:
    if where is not None and row.get(where[0]) not in where[1]:
        return None
    value = row.get(key)
    return str(value) if value else None


def _group(rows: Iterable[Row], key: str, where: Where | None) -> dict[str, tuple[Row, ...]]:
    lists: dict[str, list[Row]] = {}
    for d in rows:
        value = _group_value(d, key, where)
        if value is not None:
            lists.setdefault(value, []).append(d)
    return {k: tuple(v) for k, v in lists.items()}


class Snapshot:
    """Neutron-shaped rows of the whole inventory as of `revision`: each table by id, in list
    order. Read-only once made (advance_snapshot makes a new one and leaves this one as it
    was: the agent compares the two)."""

    __slots__ = ("revision", "_rows", "_lists", "_groups")

    def __init__(self, revision: int, networks: Iterable[Row] = (), subnets: Iterable[Row] = (),
                 ports: Iterable[Row] = (), routers: Iterable[Row] = ()) -> None:
        self.revision = revision
        self._rows: dict[str, dict[str, Row]] = {
            name: {r["id"]: r for r in rows}
            for name, rows in zip(SNAPSHOT_TABLES, (networks, subnets, ports, routers),
                                  strict=True)}
        # Tuples of a table's rows and groupings, made on first use and kept with the
        # snapshot (it never changes once made).
        self._lists: dict[str, tuple[Row, ...]] = {}
        self._groups: dict[_GroupKey, dict[str, tuple[Row, ...]]] = {}

    def _list(self, resource: str) -> tuple[Row, ...]:
        found = self._lists.get(resource)
        if found is None:
            found = self._lists[resource] = tuple(self._rows[resource].values())
        return found

    # The tables as tuples, in list order. Each is made on first use: a pass over a table,
    # which the DHCP agent's per-change path never needs (it reads `grouped` and `find`).
    @property
    def networks(self) -> tuple[Row, ...]:
        return self._list("networks")

    @property
    def subnets(self) -> tuple[Row, ...]:
        return self._list("subnets")

    @property
    def ports(self) -> tuple[Row, ...]:
        return self._list("ports")

    @property
    def routers(self) -> tuple[Row, ...]:
        return self._list("routers")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Snapshot):
            return NotImplemented
        return self.revision == other.revision and all(
            tuple(self._rows[t].values()) == tuple(other._rows[t].values())
            for t in SNAPSHOT_TABLES)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        sizes = ", ".join(f"{t}={len(self._rows[t])}" for t in SNAPSHOT_TABLES)
        return f"Snapshot(revision={self.revision}, {sizes})"

    def ids(self, resource: str) -> set[str]:
        return set(self._rows[resource])

    def row_ids(self, resource: str) -> KeysView[str]:
        """The ids of a table, as a view (no set of 100k ids made)."""
        return self._rows[resource].keys()

    def count(self, resource: str) -> int:
        return len(self._rows[resource])

    def grouped(self, resource: str, key: str,
                where: Where | None = None) -> Mapping[str, tuple[Row, ...]]:
        """The rows of `resource` by their `key` value (e.g. ports by network_id), in list
        order; rows without it, or (with `where`) whose `where[0]` is not in `where[1]`, are
        left out. Made once per snapshot, then carried over by `advance_snapshot`, which
        remakes only the groups its rows are in."""
        gkey = (resource, key, where)
        found = self._groups.get(gkey)
        if found is None:
            found = self._groups[gkey] = _group(self._rows[resource].values(), key, where)
        return found

    def find(self, resource: str, rid: str) -> Row | None:
        return self._rows[resource].get(rid)


def changed_rows(changes: Iterable[ChangeRecord]) -> dict[tuple[str, str], str]:
    """(plural resource, id) -> last op, for the rows of a batch that snapshots hold."""
    rows: dict[tuple[str, str], str] = {}
    for c in changes:
        if c.resource in NETWORK_KINDS:
            rows[(Kind(c.resource).collection, c.resource_id)] = c.op
    return rows


def subnet_networks(old: Snapshot, rows: Mapping[tuple[str, str], Row | None]) -> set[str]:
    """Networks whose row embeds a changed subnet (before or after the change)."""
    found: set[str] = set()
    for (resource, rid), row in rows.items():
        if resource != Kind.SUBNET.collection:
            continue
        for version in (old.find(Kind.SUBNET.collection, rid), row):
            if version is not None and version.get("network_id"):
                found.add(str(version["network_id"]))
    return found


def advance_snapshot(old: Snapshot, rows: Mapping[tuple[str, str], Row | None],
                     revision: int) -> Snapshot:
    """`old` with each (resource, id) replaced by its new row (None = deleted). Updated rows
    keep their place and new ones go last, as the API lists by creation, so a plan that
    follows list order reads the same as after a full listing.

    Tables and groupings the batch does not touch are shared with `old`. A touched table's
    id map is copied (one C-level dict copy), and in each grouping `old` had made only the
    groups holding a changed row (before or after) are made again; a row whose group key
    changed (not a new row) is placed by one scan of its table, to keep list order."""
    fresh: dict[str, dict[str, Row | None]] = {}
    for (resource, rid), row in rows.items():
        fresh.setdefault(resource, {})[rid] = row
    new = Snapshot.__new__(Snapshot)
    new.revision = max(revision, old.revision)
    new._rows = dict(old._rows)
    new._lists = {t: v for t, v in old._lists.items() if t not in fresh}
    new._groups = {}
    for resource, changed in fresh.items():
        table = dict(old._rows[resource])
        for rid, row in changed.items():
            if row is None:
                table.pop(rid, None)
            else:
                table[rid] = row
        new._rows[resource] = table
    for gkey, groups in old._groups.items():
        changed_here = fresh.get(gkey[0])
        new._groups[gkey] = groups if not changed_here else _regroup(
            groups, gkey, old._rows[gkey[0]], changed_here, new._rows[gkey[0]])
    return new


def _regroup(groups: Mapping[str, tuple[Row, ...]], gkey: _GroupKey, before_rows: Mapping[str, Row],
             changed: Mapping[str, Row | None],
             after_rows: Mapping[str, Row]) -> dict[str, tuple[Row, ...]]:
    _, key, where = gkey
    out = dict(groups)
    rescan: set[str] = set()
    for rid, row in changed.items():
        before = before_rows.get(rid)
        was = _group_value(before, key, where) if before is not None else None
        now = _group_value(row, key, where) if row is not None else None
        if was is not None and was == now:
            out[was] = tuple(row if r is before else r for r in out[was])  # type: ignore[misc]
            continue
        if was is not None:
            rest = tuple(r for r in out[was] if r is not before)
            if rest:
                out[was] = rest
            else:
                del out[was]
        if now is not None:
            if before is None and rid in after_rows:
                out[now] = (*out.get(now, ()), row)  # type: ignore[arg-type]  # new: last
            else:
                rescan.add(now)  # an existing row moved here: its place is its table's
    if rescan:
        for value, rows in _group(after_rows.values(), key, where).items():
            if value in rescan:
                out[value] = rows
    return out


async def read_snapshot(feed: ChangeFeed,
                        listing: Mapping[Kind, ListSpec] | None = None) -> Snapshot:
    """A full listing of what the network agents read (`listing`: which kinds and fields,
    and how each row is kept), as a Snapshot."""
    got = await feed.listing(SNAPSHOT_LISTING if listing is None else listing)
    return Snapshot(got.revision, *(got.of(kind) for kind in NETWORK_KINDS))


def ids_by_key(rows: Iterable[Row], key: str) -> dict[str, str]:
    """id -> row[key] for rows that have it (e.g. port id -> network id)."""
    return {r["id"]: r[key] for r in rows if r.get(key)}
