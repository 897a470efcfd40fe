"""openimds.rows: compact snapshot rows keep the value of the dicts they replace (issue 14:
agent RSS at 100k ports)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from openimds import rows
from openimds.rows import Row, compact_row

PORT = (
    '{"id": "p1", "name": "", "tenant_id": "t1", "project_id": "t1", "network_id": "n1",'
    ' "mac_address": "fa:16:3e:00:00:01", "fixed_ips": [{"subnet_id": "s1",'
    ' "ip_address": "10.0.0.5"}], "device_id": "vm1", "device_owner": "compute:nova",'
    ' "admin_state_up": true, "status": "ACTIVE", "description": "", "tags": [],'
    ' "port_security_enabled": true, "allowed_address_pairs": [{"ip_address": "10.0.0.9"}],'
    ' "binding:vif_details": {"connectivity": "l2", "port_filter": false},'
    ' "binding:profile": {}, "mtu": 1450, "extra": null, "nested": {"a": [1, 2]}}'
)


def _port(**changes: Any) -> dict[str, Any]:
    return {**json.loads(PORT), **changes}


def test_a_row_reads_and_compares_like_its_dict() -> None:
    plain = _port()
    row = compact_row(plain)
    assert isinstance(row, Row)
    assert row == plain and plain == row and dict(row) == plain
    assert row != _port(name="other") and _port(name="other") != row
    assert list(row) == list(plain) and len(row) == len(plain)
    assert row["network_id"] == "n1" and row.get("mtu") == 1450 and row.get("extra") is None
    assert row.get("missing") is None and row.get("missing", 7) == 7
    assert "tags" in row and "missing" not in row
    with pytest.raises(KeyError):
        row["missing"]
    assert {**row} == plain
    assert row["fixed_ips"][0]["ip_address"] == "10.0.0.5"
    assert row["binding:vif_details"] == {"connectivity": "l2", "port_filter": False}
    assert row["nested"] == {"a": [1, 2]}
    assert json.loads(json.dumps(dict(row), default=dict)) == plain
    assert repr(row).startswith("Row({'id': 'p1'")


def test_rows_share_repeated_values_but_not_unequal_ones() -> None:
    a = compact_row(json.loads(PORT))
    b = compact_row(_port(id="p2", mac_address="fa:16:3e:00:00:02"))
    # Strings from two separate JSON documents are one object once compacted.
    assert a["network_id"] is b["network_id"] and a["tenant_id"] is b["tenant_id"]
    assert a["tags"] is b["tags"] and a["binding:vif_details"] is b["binding:vif_details"]
    assert a._index is b._index  # one key layout for both
    # True and 1 compare equal: they must still not share one container.
    one = compact_row({"id": "x", "profile": {"flag": 1}})
    true = compact_row({"id": "y", "profile": {"flag": True}})
    assert one["profile"]["flag"] is not True and true["profile"]["flag"] is True


def test_the_shared_table_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rows, "_SHARED", {})
    monkeypatch.setattr(rows, "_SHARED_MAX", 3)
    made = [compact_row({"id": str(i), "tags": [f"t{i}"]}) for i in range(10)]
    assert len(rows._SHARED) == 3
    assert [r["tags"] for r in made] == [[f"t{i}"] for i in range(10)]
