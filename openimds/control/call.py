"""The socket-free request/response values every operation works on, and input validation.

An operation is a plain sync function ``op(call: Call) -> Reply``: it reads the parsed request,
does its database work in one Store transaction and returns the status and JSON body. The aiohttp
adapter in app.py builds the Call, runs the operation in a worker thread and writes the Reply, so
operations are testable without HTTP and the event loop never blocks on the database.
"""

from __future__ import annotations

import ipaddress
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from openimds.control.context import RequestContext
from openimds.control.errors import BadRequest
from openimds.control.segments import SegmentConfig
from openimds.inventory.retention import Retention
from openimds.inventory.store import Store
from openimds.metadata.options import MetadataOptions


@dataclass(frozen=True)
class Settings:
    """Plain values the control-plane API needs (built from config by cli/control_cmd.py)."""

    bind_host: str = "127.0.0.1"
    bind_port: int = 9696
    token_expiration: int = 3600
    region: str = "RegionOne"
    # Catalog base of this API (scheme://host:port); None = the address the request came to
    # (the listener is on a wildcard address, so its own address names no one host).
    public_url: str | None = None
    # Catalog entry for the metadata API; None = this API's host name on `metadata_port`.
    metadata_url: str | None = None
    metadata_port: int = 8775
    # Upper bound on a change-feed long poll, so proxies and clients never hold a request forever.
    max_changes_timeout: float = 60.0
    # How much of the change feed to keep, and how often to prune it (0 = never).
    change_retention: Retention = field(default_factory=Retention)
    change_prune_interval: float = 300.0
    # Several hosts: segment allocation ([ml2*]) and agent liveness ([DEFAULT] agent_down_time).
    segments: SegmentConfig = field(default_factory=SegmentConfig)
    agent_down_time: int = 75
    # Cloud-wide metadata options ([metadata]), shown under each server's own.
    metadata_defaults: MetadataOptions = field(default_factory=MetadataOptions)
    # Published at /v2.1/os-metadata-identity-certificate.
    identity_cert_file: str | None = None
    dhcp_agents_per_network: int = 1
    # Issue 11: move a dead agent's networks / routers to alive agents (control/failover.py).
    allow_automatic_dhcp_failover: bool = True
    allow_automatic_l3agent_failover: bool = True
    # [DEFAULT] metadata_mode: network_node | distributed (control/distributed_metadata.py).
    metadata_mode: str = "network_node"
    # [DEFAULT] dhcp_lease_duration: how long a retiring metadata port keeps serving.
    dhcp_lease_duration: int = 86400
    # HA routers (control/l3_ha.py): None = HA when at least 2 L3 agents are alive.
    l3_ha: bool | None = None
    max_l3_agents_per_router: int = 3
    min_l3_agents_per_router: int = 2
    l3_ha_net_cidr: str = "169.254.192.0/18"


@dataclass
class Call:
    store: Store
    settings: Settings
    ctx: RequestContext | None
    params: Mapping[str, str] = field(default_factory=dict)
    # Query string as (key, value) pairs in order; keys may repeat (Neutron list filters).
    query: Sequence[tuple[str, str]] = ()
    body: Any = None
    base_url: str = "http://127.0.0.1:9696"
    headers: Mapping[str, str] = field(default_factory=dict)
    # The compute microversion the request asked for (versions.py); 2.1 when it named none.
    microversion: tuple[int, int] = (2, 1)

    @property
    def context(self) -> RequestContext:
        assert self.ctx is not None, "operation registered without authentication"
        return self.ctx

    def query_values(self, key: str) -> list[str]:
        return [v for k, v in self.query if k == key]

    def query_one(self, key: str) -> str | None:
        values = self.query_values(key)
        return values[-1] if values else None


@dataclass
class Reply:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


Operation = Callable[[Call], Reply]

# ---- body validation --------------------------------------------------------------------------


def resource_body(body: Any, key: str, allowed: Iterable[str], *,
                  required: Iterable[str] = ()) -> dict[str, Any]:
    """``body[key]`` as a dict with only `allowed` attributes and every `required` one."""
    if not isinstance(body, dict) or not isinstance(body.get(key), dict):
        raise BadRequest(f'request body must be a JSON object {{"{key}": {{...}}}}')
    obj: dict[str, Any] = body[key]
    unknown = sorted(set(obj) - set(allowed))
    if unknown:
        raise BadRequest(f"Unrecognized attribute(s) '{', '.join(unknown)}'")
    missing = [k for k in required if k not in obj]
    if missing:
        raise BadRequest(f"Failed to parse request. Required attribute '{missing[0]}' not specified")
    return obj


def get_str(obj: Mapping[str, Any], key: str, default: str = "", *, max_len: int = 255,
            nullable: bool = False) -> str:
    value = obj.get(key, default)
    if value is None and nullable:
        return default
    if not isinstance(value, str):
        raise BadRequest(f"Invalid input for {key}: '{value!r}' is not a string")
    if len(value) > max_len:
        raise BadRequest(f"Invalid input for {key}: longer than {max_len} characters")
    if "\x00" in value:
        raise BadRequest(f"Invalid input for {key}: contains a NUL character")
    return value


def get_bool(obj: Mapping[str, Any], key: str, default: bool) -> bool:
    value = obj.get(key, default)
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise BadRequest(f"Invalid input for {key}: '{value!r}' is not a boolean")


def get_list(obj: Mapping[str, Any], key: str) -> list[Any]:
    value = obj.get(key, [])
    if value is None:
        return []
    if not isinstance(value, list):
        raise BadRequest(f"Invalid input for {key}: expected a list")
    return value


def parse_bool(text: str, key: str) -> bool:
    lowered = text.lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise BadRequest(f"Invalid filter {key}={text!r}: expected true or false")


def check_ip(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise BadRequest(f"Invalid input for {what}: '{value!r}' is not a valid IP address")
    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError:
        raise BadRequest(f"Invalid input for {what}: '{value}' is not a valid IP address") from None


def is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True
