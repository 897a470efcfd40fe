"""openimds.feed.kinds: one Kind per tracked inventory model, and back."""

from __future__ import annotations

from openimds.feed import NETWORK_KINDS, ChangeRecord, Kind
from openimds.inventory.models import TRACKED


def test_every_tracked_model_has_a_kind_and_every_kind_a_model() -> None:
    assert sorted(TRACKED.values()) == sorted(Kind)
    assert len(set(TRACKED.values())) == len(TRACKED)
    assert all(isinstance(kind, Kind) for kind in TRACKED.values())
    # The names on the wire, which the OpenStack-shaped change feed has always served.
    assert {m.__name__: str(k) for m, k in TRACKED.items()} == {
        "Project": "project", "Network": "network", "Subnet": "subnet", "Port": "port",
        "Router": "router", "Instance": "instance", "KeyPair": "keypair"}


def test_kinds_compare_and_hash_as_their_wire_strings() -> None:
    assert Kind.PORT == "port" and hash(Kind.PORT) == hash("port")
    assert {("port", "p1"): 1}[(Kind.PORT, "p1")] == 1
    assert Kind.of_collection("subnets") is Kind.SUBNET
    assert [k.collection for k in NETWORK_KINDS] == ["networks", "subnets", "ports", "routers"]


def test_records_round_trip_through_the_wire_shape() -> None:
    record = ChangeRecord(7, Kind.PORT, "p1", "update")
    wire = record.as_dict()
    assert wire == {"revision": 7, "resource": "port", "resource_id": "p1", "op": "update"}
    assert type(wire["resource"]) is str
    assert ChangeRecord.from_dict(wire) == record
    # A kind this version does not know stays a plain string (a newer control plane).
    assert ChangeRecord.from_dict({**wire, "resource": "widget"}).resource == "widget"
