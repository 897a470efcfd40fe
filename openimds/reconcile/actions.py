"""Typed actions that appliers compute (pure diff); `executor.Executor` performs them.

The DHCP, L3 and L2 appliers observe a namespace, compare with their plan in a pure function
that returns a list of these values, then hand the list to `Executor.run`. Every action names
an idempotent verb of the linux layer, so re-running a list after a crash half-way is safe,
and a test can assert on the list without touching the kernel (STYLE items 6 and 10).

The proxy actions carry an opaque spec for an object with `ensure(spec, netns)` and
`stop(resource_id)` (the haproxy supervisor); this module does not import the proxy package.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = [
    "Action",
    "DeleteLink",
    "DeleteNamespace",
    "EnsureAddresses",
    "EnsureKeepalived",
    "EnsureNamespace",
    "EnsurePortLink",
    "EnsureProxy",
    "ReloadDnsmasq",
    "RemoveTree",
    "RestoreIptables",
    "SetSysctl",
    "StartDnsmasq",
    "StopDnsmasq",
    "StopKeepalived",
    "StopProxy",
    "SyncAddresses",
    "WriteFile",
]

@dataclass(frozen=True)
class EnsureNamespace:
    name: str


@dataclass(frozen=True)
class DeleteNamespace:
    name: str


@dataclass(frozen=True)
class SetSysctl:
    netns: str
    key: str
    value: str


@dataclass(frozen=True)
class EnsurePortLink:
    """Bridge of `network_id` in `fabric`, veth tap<port> there, far end `ifname` in `netns`."""

    fabric: str
    network_id: str
    port_id: str
    netns: str
    ifname: str
    mac: str
    mtu: int


@dataclass(frozen=True)
class DeleteLink:
    netns: str
    name: str


@dataclass(frozen=True)
class SyncAddresses:
    netns: str
    dev: str
    cidrs: tuple[str, ...]


@dataclass(frozen=True)
class EnsureAddresses:
    """`cidrs` present on `dev`, other addresses left alone (keepalived's, on an HA router's
    ha- device)."""

    netns: str
    dev: str
    cidrs: tuple[str, ...]


@dataclass(frozen=True)
class EnsureKeepalived:
    """keepalived of an HA router running in `netns` with exactly `text` as its config."""

    router_id: str
    text: str
    netns: str


@dataclass(frozen=True)
class StopKeepalived:
    router_id: str


@dataclass(frozen=True)
class WriteFile:
    path: str
    text: str
    mode: int = 0o644


@dataclass(frozen=True)
class RemoveTree:
    path: str


@dataclass(frozen=True)
class StartDnsmasq:
    """Start dnsmasq, then record "<pid> <digest of the files it read>" in `marker`."""

    netns: str
    argv: tuple[str, ...]
    marker: str
    digest: str


@dataclass(frozen=True)
class StopDnsmasq:
    pid: int
    pidfile: str


@dataclass(frozen=True)
class ReloadDnsmasq:
    """SIGHUP, then record "<pid> <digest>" in `marker`, so a crash between the file writes
    and the signal is seen (and the signal re-sent) on the next pass."""

    pidfile: str
    marker: str
    digest: str


@dataclass(frozen=True)
class RestoreIptables:
    netns: str
    text: str
    ipv6: bool = False


@dataclass(frozen=True)
class EnsureProxy:
    spec: Any  # openimds.proxy.ProxySpec
    netns: str


@dataclass(frozen=True)
class StopProxy:
    resource_id: str


Action = (
    EnsureNamespace
    | DeleteNamespace
    | SetSysctl
    | EnsurePortLink
    | DeleteLink
    | SyncAddresses
    | WriteFile
    | RemoveTree
    | StartDnsmasq
    | StopDnsmasq
    | ReloadDnsmasq
    | RestoreIptables
    | EnsureProxy
    | StopProxy
    | EnsureAddresses
    | EnsureKeepalived
    | StopKeepalived
)
