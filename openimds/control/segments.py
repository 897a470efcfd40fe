"""Network segments in Neutron's provider-extension shapes: pure parsing, validation, allocation.

A network has one segment: `local` (round 1's one-host fabric, the default), `flat` (a
physical network, untagged), `vlan` (a physical network and a VLAN id) or `vxlan` (a VNI).
Admins may name the segment on create (`provider:network_type`, `provider:physical_network`,
`provider:segmentation_id`); everyone else gets the first `[ml2] tenant_network_types` entry
with a free id. Nothing here reads the database or the config: `SegmentConfig` is built from
the options once, and `allocate` takes the ids already in use.

Errors carry Neutron's types: InvalidInput (400), VlanIdInUse / TunnelIdInUse /
FlatNetworkInUse (409), NoNetworkAvailable (503).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from openimds.control.errors import BadRequest, Conflict, ServiceUnavailable

NETWORK_TYPES = ("local", "flat", "vlan", "vxlan")
VLAN_MIN, VLAN_MAX = 1, 4094
VNI_MIN, VNI_MAX = 1, 2**24 - 1

PROVIDER_KEYS = ("provider:network_type", "provider:physical_network",
                 "provider:segmentation_id")


class ConfigInvalid(ValueError):
    """A malformed ml2 option; the message names the option and the value."""


@dataclass(frozen=True)
class SegmentConfig:
    tenant_network_types: tuple[str, ...] = ("local",)
    vni_ranges: tuple[tuple[int, int], ...] = ()
    # physnet -> VLAN ranges tenants draw from (empty: provider networks only)
    vlan_ranges: Mapping[str, tuple[tuple[int, int], ...]] = field(default_factory=dict)
    flat_networks: tuple[str, ...] = ("*",)


@dataclass(frozen=True)
class Segment:
    network_type: str = "local"
    physical_network: str | None = None
    segmentation_id: int | None = None

    @property
    def key(self) -> str | None:
        """The unique allocation key (NULL for local: any number of local networks)."""
        if self.network_type == "vxlan":
            return f"vxlan:{self.segmentation_id}"
        if self.network_type == "vlan":
            return f"vlan:{self.physical_network}:{self.segmentation_id}"
        if self.network_type == "flat":
            return f"flat:{self.physical_network}"
        return None


# ---- configuration ----------------------------------------------------------------------------


def _range(text: str, lo: int, hi: int, option: str, entry: str = "") -> tuple[int, int]:
    entry = entry or text
    parts = text.split(":")
    try:
        start, end = int(parts[0]), int(parts[1])
    except (ValueError, IndexError):
        raise ConfigInvalid(f"{option}: {entry!r} is not <min>:<max>") from None
    if len(parts) != 2 or not lo <= start <= end <= hi:
        raise ConfigInvalid(f"{option}: {entry!r} must be <min>:<max> with "
                            f"{lo} <= min <= max <= {hi}")
    return start, end


def parse_vni_ranges(values: Iterable[str]) -> tuple[tuple[int, int], ...]:
    return tuple(_range(v.strip(), VNI_MIN, VNI_MAX, "[ml2_type_vxlan] vni_ranges")
                 for v in values if v.strip())


def parse_vlan_ranges(values: Iterable[str]) -> dict[str, tuple[tuple[int, int], ...]]:
    """`physnet1:100:199,physnet2` -> {"physnet1": ((100, 199),), "physnet2": ()}."""
    out: dict[str, list[tuple[int, int]]] = {}
    for raw in values:
        text = raw.strip()
        if not text:
            continue
        physnet, _, rest = text.partition(":")
        if not physnet:
            raise ConfigInvalid(f"[ml2_type_vlan] network_vlan_ranges: {text!r} has no "
                                "physical network name")
        ranges = out.setdefault(physnet, [])
        if rest:
            ranges.append(_range(rest, VLAN_MIN, VLAN_MAX,
                                 "[ml2_type_vlan] network_vlan_ranges", text))
    return {k: tuple(v) for k, v in out.items()}


def segment_config(tenant_network_types: Sequence[str], vni_ranges: Iterable[str],
                   network_vlan_ranges: Iterable[str],
                   flat_networks: Iterable[str] = ("*",)) -> SegmentConfig:
    types = tuple(t.strip() for t in tenant_network_types if t.strip())
    for t in types:
        if t not in NETWORK_TYPES:
            raise ConfigInvalid(f"[ml2] tenant_network_types: unknown type {t!r} (known: "
                                f"{', '.join(NETWORK_TYPES)})")
    if "flat" in types:
        raise ConfigInvalid("[ml2] tenant_network_types: flat networks are provider-only, "
                            "as in Neutron")
    return SegmentConfig(tenant_network_types=types or ("local",),
                         vni_ranges=parse_vni_ranges(vni_ranges),
                         vlan_ranges=parse_vlan_ranges(network_vlan_ranges),
                         flat_networks=tuple(f.strip() for f in flat_networks if f.strip()))


# ---- requests ---------------------------------------------------------------------------------


def _invalid(message: str) -> BadRequest:
    return BadRequest(f"Invalid input for operation: {message}", type="InvalidInput")


def requested_segment(obj: Mapping[str, Any]) -> Segment | None:
    """The provider attributes of a create body as a (possibly partial) Segment; None when the
    body names none of them. Only types and shapes are checked here."""
    if not any(k in obj for k in PROVIDER_KEYS):
        return None
    ntype = obj.get("provider:network_type")
    physnet = obj.get("provider:physical_network")
    seg_id = obj.get("provider:segmentation_id")
    if ntype is None:
        raise _invalid("provider:network_type required when provider:physical_network or "
                       "provider:segmentation_id is given.")
    if ntype not in NETWORK_TYPES:
        raise _invalid(f"network_type value '{ntype}' not supported (supported: "
                       f"{', '.join(NETWORK_TYPES)}).")
    if physnet is not None and (not isinstance(physnet, str) or not physnet
                                or len(physnet) > 64):
        raise _invalid(f"provider:physical_network '{physnet!r}' is not a non-empty string "
                       "of at most 64 characters.")
    if isinstance(seg_id, str) and seg_id.strip().isdigit():
        seg_id = int(seg_id)  # the neutron CLI sends it as text
    if seg_id is not None and (isinstance(seg_id, bool) or not isinstance(seg_id, int)):
        raise _invalid(f"provider:segmentation_id '{seg_id!r}' is not an integer.")
    return Segment(ntype, physnet, seg_id)


def validate_provider(seg: Segment, config: SegmentConfig) -> None:
    """Neutron's type drivers' `validate_provider_segment`: 400 with the value and the reason."""
    t = seg.network_type
    if t == "local":
        if seg.physical_network is not None or seg.segmentation_id is not None:
            raise _invalid("provider:physical_network and provider:segmentation_id are "
                           "prohibited for local provider network.")
    elif t == "flat":
        if seg.physical_network is None:
            raise _invalid("provider:physical_network required for flat provider network.")
        if seg.segmentation_id is not None:
            raise _invalid("provider:segmentation_id prohibited for flat provider network.")
        if "*" not in config.flat_networks and seg.physical_network not in config.flat_networks:
            raise _invalid(f"physical_network '{seg.physical_network}' unknown for flat "
                           "provider network (not in [ml2_type_flat] flat_networks).")
    elif t == "vlan":
        if seg.physical_network is None:
            if seg.segmentation_id is not None:
                raise _invalid("provider:segmentation_id requires provider:physical_network "
                               "for VLAN provider network.")
        elif seg.physical_network not in config.vlan_ranges:
            raise _invalid(f"physical_network '{seg.physical_network}' unknown for VLAN "
                           "provider network (not in [ml2_type_vlan] network_vlan_ranges).")
        if seg.segmentation_id is not None and not (
                VLAN_MIN <= seg.segmentation_id <= VLAN_MAX):
            raise _invalid(f"provider:segmentation_id {seg.segmentation_id} out of range "
                           f"({VLAN_MIN} through {VLAN_MAX}).")
    elif t == "vxlan":
        if seg.physical_network is not None:
            raise _invalid("provider:physical_network prohibited for vxlan provider network.")
        if seg.segmentation_id is not None and not (VNI_MIN <= seg.segmentation_id <= VNI_MAX):
            raise _invalid(f"provider:segmentation_id {seg.segmentation_id} out of range "
                           f"({VNI_MIN} through {VNI_MAX}).")


def in_use(seg: Segment) -> Conflict:
    """The 409 Neutron answers when a fully specified segment is taken."""
    if seg.network_type == "vlan":
        return Conflict(f"Unable to create the network. The VLAN {seg.segmentation_id} on "
                        f"physical network {seg.physical_network} is in use.",
                        type="VlanIdInUse")
    if seg.network_type == "vxlan":
        return Conflict(f"Unable to create the network. The tunnel ID {seg.segmentation_id} "
                        "is in use.", type="TunnelIdInUse")
    return Conflict(f"Unable to create the flat network. Physical network "
                    f"{seg.physical_network} is in use.", type="FlatNetworkInUse")


def no_network_available() -> ServiceUnavailable:
    return ServiceUnavailable("Unable to create the network. No tenant network is available "
                              "for allocation.", type="NoNetworkAvailable")


def first_free(ranges: Iterable[tuple[int, int]], used: Iterable[int]) -> int | None:
    """The lowest id inside `ranges` not in `used` (at most len(used)+1 steps per range)."""
    taken = set(used)
    for lo, hi in ranges:
        candidate = lo
        while candidate <= hi and candidate in taken:
            candidate += 1
        if candidate <= hi:
            return candidate
    return None


# used(network_type, physical_network) -> segmentation ids in use (physnet None for vxlan)
UsedIds = Callable[[str, str | None], Iterable[int]]


def _allocate_type(t: str, physnet: str | None, config: SegmentConfig,
                   used: UsedIds) -> Segment | None:
    if t == "local":
        return Segment()
    if t == "vxlan":
        vni = first_free(config.vni_ranges, used("vxlan", None))
        return None if vni is None else Segment("vxlan", None, vni)
    if t == "vlan":
        physnets = [physnet] if physnet is not None else sorted(config.vlan_ranges)
        for name in physnets:
            vid = first_free(config.vlan_ranges.get(name, ()), used("vlan", name))
            if vid is not None:
                return Segment("vlan", name, vid)
    return None


def allocate(requested: Segment | None, config: SegmentConfig, used: UsedIds) -> Segment:
    """The segment a new network gets.

    * None (no provider attributes): the first tenant network type with a free id;
    * a full segment (or flat): itself; whether its key is free is the caller's check
      (`in_use`), made against the unique `segment_key` so a concurrent writer cannot win;
    * a partial vlan/vxlan segment (no id): the lowest free id of its type (and physnet).
    503 NoNetworkAvailable when the ranges are exhausted.
    """
    if requested is None:
        for t in config.tenant_network_types:
            got = _allocate_type(t, None, config, used)
            if got is not None:
                return got
        raise no_network_available()
    validate_provider(requested, config)
    t = requested.network_type
    if t in ("vlan", "vxlan") and requested.segmentation_id is None:
        got = _allocate_type(t, requested.physical_network, config, used)
        if got is None:
            raise no_network_available()
        return got
    return requested


def provider_fields(network_type: str, physical_network: str | None,
                    segmentation_id: int | None) -> dict[str, Any]:
    return {"provider:network_type": network_type,
            "provider:physical_network": physical_network,
            "provider:segmentation_id": segmentation_id}
