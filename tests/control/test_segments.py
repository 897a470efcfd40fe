"""Segment parsing, validation and allocation as pure functions (control/segments.py)."""

from __future__ import annotations

from collections.abc import Iterable

import pytest

from openimds.control.errors import ApiError
from openimds.control.segments import (
    ConfigInvalid,
    Segment,
    SegmentConfig,
    allocate,
    first_free,
    in_use,
    parse_vlan_ranges,
    parse_vni_ranges,
    requested_segment,
    segment_config,
    validate_provider,
)

CONFIG = SegmentConfig(tenant_network_types=("vxlan", "vlan"), vni_ranges=((1000, 1002),),
                       vlan_ranges={"physnet1": ((100, 101),), "physnet2": ()},
                       flat_networks=("physnet1", "ext"))


def used_from(taken: dict[tuple[str, str | None], list[int]]):  # type: ignore[no-untyped-def]
    def used(t: str, physnet: str | None) -> Iterable[int]:
        if physnet is None:
            return [i for (tt, _), ids in taken.items() if tt == t for i in ids]
        return taken.get((t, physnet), [])

    return used


@pytest.mark.parametrize(("ranges", "used", "expected"), [
    (((1, 3),), [], 1),
    (((1, 3),), [1, 2], 3),
    (((1, 3),), [1, 2, 3], None),
    (((1, 2), (10, 11)), [1, 2, 10], 11),
    ((), [], None),
])
def test_first_free(ranges: tuple[tuple[int, int], ...], used: list[int],
                    expected: int | None) -> None:
    assert first_free(ranges, used) == expected


def test_parse_ranges() -> None:
    assert parse_vni_ranges(["1:1000", " 5000:5001 ", ""]) == ((1, 1000), (5000, 5001))
    assert parse_vlan_ranges(["physnet1:100:199", "physnet2", "physnet1:300:300"]) == {
        "physnet1": ((100, 199), (300, 300)), "physnet2": ()}


@pytest.mark.parametrize(("kind", "values", "fragment"), [
    ("vni", ["0:10"], "1 <= min"),
    ("vni", ["10:5"], "min <= max"),
    ("vni", ["abc"], "not <min>:<max>"),
    ("vni", ["1:16777216"], "16777215"),
    ("vlan", ["physnet1:0:10"], "network_vlan_ranges"),
    ("vlan", ["physnet1:100"], "not <min>:<max>"),
    ("vlan", [":100:200"], "no physical network"),
])
def test_bad_ranges_name_the_option_and_value(kind: str, values: list[str],
                                              fragment: str) -> None:
    parse = parse_vni_ranges if kind == "vni" else parse_vlan_ranges
    with pytest.raises(ConfigInvalid, match=fragment) as info:
        parse(values)
    assert values[0] in str(info.value)


def test_segment_config_refuses_unknown_and_flat_tenant_types() -> None:
    with pytest.raises(ConfigInvalid, match="gre"):
        segment_config(["gre"], [], [])
    with pytest.raises(ConfigInvalid, match="provider-only"):
        segment_config(["flat"], [], [])
    assert segment_config([], [], []).tenant_network_types == ("local",)


@pytest.mark.parametrize(("body", "expected"), [
    ({"name": "x"}, None),
    ({"provider:network_type": "vxlan"}, Segment("vxlan")),
    ({"provider:network_type": "vlan", "provider:physical_network": "physnet1",
      "provider:segmentation_id": "120"}, Segment("vlan", "physnet1", 120)),
    ({"provider:network_type": "flat", "provider:physical_network": "ext"},
     Segment("flat", "ext")),
])
def test_requested_segment(body: dict[str, object], expected: Segment | None) -> None:
    assert requested_segment(body) == expected


@pytest.mark.parametrize(("body", "fragment"), [
    ({"provider:segmentation_id": 5}, "provider:network_type required"),
    ({"provider:network_type": "gre"}, "'gre' not supported"),
    ({"provider:network_type": "vlan", "provider:segmentation_id": True}, "not an integer"),
    ({"provider:network_type": "flat", "provider:physical_network": ""}, "non-empty"),
])
def test_requested_segment_rejects(body: dict[str, object], fragment: str) -> None:
    with pytest.raises(ApiError, match=fragment) as info:
        requested_segment(body)
    assert info.value.status == 400 and info.value.type == "InvalidInput"


@pytest.mark.parametrize(("seg", "fragment"), [
    (Segment("local", "physnet1"), "prohibited for local"),
    (Segment("flat"), "physical_network required for flat"),
    (Segment("flat", "physnet1", 3), "segmentation_id prohibited for flat"),
    (Segment("flat", "physnet9"), "'physnet9' unknown for flat"),
    (Segment("vlan", None, 100), "requires provider:physical_network"),
    (Segment("vlan", "physnet9", 100), "'physnet9' unknown for VLAN"),
    (Segment("vlan", "physnet1", 4095), "4095 out of range (1 through 4094)"),
    (Segment("vlan", "physnet1", 0), "0 out of range"),
    (Segment("vxlan", "physnet1", 5), "physical_network prohibited for vxlan"),
    (Segment("vxlan", None, 2**24), "16777216 out of range"),
])
def test_invalid_provider_segments_say_which_value_and_why(seg: Segment, fragment: str) -> None:
    with pytest.raises(ApiError) as info:
        validate_provider(seg, CONFIG)
    assert info.value.status == 400 and info.value.type == "InvalidInput"
    assert fragment in info.value.message


@pytest.mark.parametrize(("seg", "type_", "fragment"), [
    (Segment("vlan", "physnet1", 100), "VlanIdInUse", "VLAN 100 on physical network physnet1"),
    (Segment("vxlan", None, 7), "TunnelIdInUse", "tunnel ID 7"),
    (Segment("flat", "ext"), "FlatNetworkInUse", "Physical network ext"),
])
def test_in_use_errors(seg: Segment, type_: str, fragment: str) -> None:
    err = in_use(seg)
    assert (err.status, err.type) == (409, type_) and fragment in err.message


@pytest.mark.parametrize(("requested", "taken", "expected"), [
    # tenants: first tenant type with a free id
    (None, {}, Segment("vxlan", None, 1000)),
    (None, {("vxlan", None): [1000, 1001]}, Segment("vxlan", None, 1002)),
    (None, {("vxlan", None): [1000, 1001, 1002]}, Segment("vlan", "physnet1", 100)),
    (None, {("vxlan", None): [1000, 1001, 1002], ("vlan", "physnet1"): [100]},
     Segment("vlan", "physnet1", 101)),
    # admin, partial: lowest free id of that type (and physnet)
    (Segment("vxlan"), {("vxlan", None): [1000]}, Segment("vxlan", None, 1001)),
    (Segment("vlan", "physnet1"), {}, Segment("vlan", "physnet1", 100)),
    # admin, full: itself (admins may go outside the tenant ranges, as in Neutron)
    (Segment("vxlan", None, 99), {}, Segment("vxlan", None, 99)),
    (Segment("vlan", "physnet2", 7), {}, Segment("vlan", "physnet2", 7)),
    (Segment("flat", "ext"), {}, Segment("flat", "ext")),
    (Segment("local"), {}, Segment()),
])
def test_allocate(requested: Segment | None, taken: dict[tuple[str, str | None], list[int]],
                  expected: Segment) -> None:
    assert allocate(requested, CONFIG, used_from(taken)) == expected


@pytest.mark.parametrize(("requested", "taken"), [
    (None, {("vxlan", None): [1000, 1001, 1002], ("vlan", "physnet1"): [100, 101]}),
    (Segment("vxlan"), {("vxlan", None): [1000, 1001, 1002]}),
    (Segment("vlan", "physnet2"), {}),  # physnet2 has no tenant range
])
def test_exhausted_is_503_no_network_available(
        requested: Segment | None, taken: dict[tuple[str, str | None], list[int]]) -> None:
    with pytest.raises(ApiError) as info:
        allocate(requested, CONFIG, used_from(taken))
    assert (info.value.status, info.value.type) == (503, "NoNetworkAvailable")


def test_default_config_keeps_round_one_local_networks() -> None:
    assert allocate(None, SegmentConfig(), used_from({})) == Segment()
    assert Segment().key is None
    assert Segment("vlan", "p", 5).key == "vlan:p:5"
