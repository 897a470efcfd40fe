"""Per-instance metadata options (AWS `InstanceMetadataOptions`), pure.

An instance stores only the options set on it (`Instance.metadata_options`, a JSON object);
every other option comes from the cloud-wide defaults in config. `validate_options` checks
what an operator sends (control plane), `effective_options` merges for the metadata API.

    http_tokens                  optional | required
    http_put_response_hop_limit  1..64 (IP TTL / hop limit of the token PUT's response)
    http_endpoint                enabled | disabled (disabled: every request → 403)
    instance_metadata_tags       enabled | disabled (meta-data/tags/instance/<key>)
    http_protocol_ipv6           enabled | disabled (answer on fe80::a9fe:a9fe / fd00:ec2::254)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from oslo_config.cfg import ConfigOpts

__all__ = [
    "MAX_HOP_LIMIT",
    "OPTION_CHOICES",
    "InvalidOptions",
    "MetadataOptions",
    "defaults_from_conf",
    "OPTION_NAMES",
    "effective_options",
    "validate_options",
]

MAX_HOP_LIMIT = 64
OPTION_CHOICES: dict[str, tuple[str, ...]] = {
    "http_tokens": ("optional", "required"),
    "http_endpoint": ("enabled", "disabled"),
    "instance_metadata_tags": ("enabled", "disabled"),
    "http_protocol_ipv6": ("enabled", "disabled"),
}


class InvalidOptions(ValueError):
    """An option name or value is not accepted; the message names it and the allowed values."""


@dataclass(frozen=True, slots=True)
class MetadataOptions:
    http_tokens: str = "optional"
    http_put_response_hop_limit: int = 1
    http_endpoint: str = "enabled"
    instance_metadata_tags: str = "disabled"
    http_protocol_ipv6: str = "enabled"

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


OPTION_NAMES = tuple(f.name for f in fields(MetadataOptions))


def validate_options(values: Any) -> dict[str, Any]:
    """The options an operator set, checked; `None` as a value means "back to the default"
    and is kept so the caller can drop the key."""
    if not isinstance(values, Mapping):
        raise InvalidOptions("metadata options must be a JSON object of option: value")
    out: dict[str, Any] = {}
    for name, value in values.items():
        if name not in OPTION_NAMES:
            raise InvalidOptions(
                f"unknown metadata option {name!r}; known: {', '.join(OPTION_NAMES)}"
            )
        if value is None:
            out[name] = None
        elif name == "http_put_response_hop_limit":
            if isinstance(value, str) and value.isascii() and value.isdigit():
                value = int(value)
            if isinstance(value, bool) or not isinstance(value, int) or not (
                1 <= value <= MAX_HOP_LIMIT
            ):
                raise InvalidOptions(
                    f"http_put_response_hop_limit must be an integer in 1..{MAX_HOP_LIMIT}, "
                    f"not {value!r}"
                )
            out[name] = value
        else:
            choices = OPTION_CHOICES[name]
            if value not in choices:
                raise InvalidOptions(f"{name} must be one of {', '.join(choices)}, not {value!r}")
            out[name] = value
    return out


def defaults_from_conf(conf: ConfigOpts) -> MetadataOptions:
    """The cloud-wide defaults from a loaded ConfigOpts' `[metadata]` group (wiring only)."""
    md = conf.metadata
    return MetadataOptions(
        http_tokens=str(md.http_tokens),
        http_put_response_hop_limit=int(md.http_put_response_hop_limit),
        http_endpoint=str(md.http_endpoint),
        instance_metadata_tags=str(md.instance_metadata_tags),
        http_protocol_ipv6=str(md.http_protocol_ipv6),
    )


def effective_options(overrides: Mapping[str, Any], defaults: MetadataOptions) -> MetadataOptions:
    """The defaults with the instance's own settings on top (unknown keys are ignored, so a
    row written by a newer release never breaks an older reader)."""
    if not overrides:
        return defaults
    known = {k: v for k, v in overrides.items() if k in OPTION_NAMES and v is not None}
    return replace(defaults, **known) if known else defaults
