"""Compact read-only rows for the agents' in-memory copies of the inventory.

An agent's snapshot holds every port of the cloud (issue 14: 100k ports, agent RSS <= 150 MB).
As the dicts the JSON decoder makes, 100k ports took ~250 MB; as `Row`s ~70 MB.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping
from typing import Any

__all__ = ["Row", "compact_row"]

# Keys whose values are (nearly) unique per row: interning those would only add table entries.
_UNIQUE_KEYS = frozenset({"id", "mac_address", "device_id", "ip_address"})
_SHARED: dict[Any, Any] = {}
_SHARED_MAX = 4096
_LAYOUTS: dict[tuple[str, ...], dict[str, int]] = {}


class Row(Mapping[str, Any]):
    """A read-only row of a snapshot: its values in a tuple, its keys in a layout shared by
    every row with the same keys. Equal to the dict it was made from (and compares equal to
    dicts), readable like one (`row["id"]`, `row.get(...)`, `dict(row)`), at about a third
    of a dict's size: a port's 26 keys took ~1.2 KB as a dict, ~0.25 KB here."""

    __slots__ = ("_index", "_values")

    def __init__(self, index: dict[str, int], values: tuple[Any, ...]) -> None:
        self._index = index
        self._values = values

    def __getitem__(self, key: str) -> Any:
        return self._values[self._index[key]]

    def get(self, key: str, default: Any = None) -> Any:
        at = self._index.get(key)
        return default if at is None else self._values[at]

    def __contains__(self, key: object) -> bool:
        return key in self._index

    def __iter__(self) -> Iterator[str]:
        return iter(self._index)

    def __len__(self) -> int:
        return len(self._values)

    def __eq__(self, other: object) -> bool:
        # Two rows of one layout compare by their value tuples, in C (a resync compares every
        # listed row with the one it may replace: issue 14, agent at 100k ports).
        if isinstance(other, Row) and other._index is self._index:
            return self._values == other._values
        return super().__eq__(other)

    __hash__ = None  # type: ignore[assignment]  # a mapping, like dict

    def __repr__(self) -> str:
        return f"Row({dict(self)!r})"


def compact_row(row: Mapping[str, Any]) -> Row:
    """`row` with the same value in less memory, for snapshots of 100k ports (issue 14: agent
    RSS at 100k ports): a `Row`, whose strings that repeat across rows (network, subnet and
    project ids, owners, host names, timestamps, statuses) are interned and whose small
    containers of plain values (`{}`, `[]`, `binding:vif_details`) are shared between rows.
    A port went from ~2.5 KB to well under 1 KB. Snapshot rows are read-only (Mapping): a
    shared container must never be changed in place."""
    keys = tuple(row)
    index = _LAYOUTS.get(keys)
    if index is None:
        index = _LAYOUTS.setdefault(tuple(sys.intern(k) for k in keys),
                                    {sys.intern(k): i for i, k in enumerate(keys)})
    return Row(index, tuple(_compact(v, k in _UNIQUE_KEYS) for k, v in row.items()))


def _compact(value: Any, unique: bool = False) -> Any:
    if isinstance(value, str):
        return value if unique or len(value) > 64 else sys.intern(value)
    if isinstance(value, list):
        if not value:
            return _shared((), mapping=False)
        if all(isinstance(x, dict) for x in value):  # fixed_ips, allowed_address_pairs
            return [compact_row(x) for x in value]
        if all(_plain(x) for x in value):
            return _shared(tuple(value), mapping=False)
        return value
    if isinstance(value, dict) and len(value) <= 8 and all(_plain(x) for x in value.values()):
        return _shared(tuple(value.items()), mapping=True)
    return value


def _plain(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float)  # bool is an int


def _shared(items: tuple[Any, ...], *, mapping: bool) -> Any:
    # Typed keys: {"a": True} and {"a": 1} compare equal but are not the same value.
    key = (mapping, tuple((k, type(v), v) for k, v in items) if mapping
           else tuple((type(v), v) for v in items))
    found = _SHARED.get(key)
    if found is None:
        found = dict(items) if mapping else list(items)
        if len(_SHARED) < _SHARED_MAX:  # bounded: rare values are not worth keeping
            found = _SHARED.setdefault(key, found)
    return found
