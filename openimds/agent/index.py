"""PortIndex: the agent's in-memory copy of the ports it needs, kept current by the change feed.

A pure data structure (no I/O, no clock): `replace` loads a full listing at a revision, `apply`
takes one resolved change (a port as it now is, or its absence), and the lookups answer in
O(1) without any call to the control plane:

    (network id, fixed IP)  -> ports        every port, whatever its owner (resolve.py decides)
    (network id, MAC)       -> ports        for IPv6 link-local callers (EUI-64 derived MAC)
    router id               -> network ids  from its interface ports (device_id = router id)

Router -> networks is derived from the interface ports themselves, so attaching or detaching an
interface (a port change) updates it with no separate bookkeeping; the router set is kept only to
tell "unknown router" from "router without interfaces" in the log.
"""

from __future__ import annotations

import ipaddress
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from openimds.wire import INSTANCE_OWNER_PREFIXES, ROUTER_INTERFACE_OWNERS

__all__ = [
    "INSTANCE_OWNER_PREFIXES",
    "ROUTER_INTERFACE_OWNERS",
    "IndexChange",
    "PortEntry",
    "PortIndex",
    "PortRemoved",
    "PortUpsert",
    "RouterRemoved",
    "RouterUpsert",
    "normalize_ip",
    "normalize_mac",
]



def normalize_ip(text: str) -> str:
    """Canonical text of an address, so IPv6 spellings compare equal (`FE80::0:1` ==
    `fe80::1`). ValueError if not an address."""
    return str(ipaddress.ip_address(text.strip()))


def normalize_mac(text: str) -> str:
    return text.strip().lower()


@dataclass(frozen=True, slots=True)
class PortEntry:
    id: str
    network_id: str
    mac_address: str
    ips: tuple[str, ...]
    device_id: str
    device_owner: str
    project_id: str
    host: str = ""  # binding:host_id

    @classmethod
    def from_api(cls, port: Mapping[str, Any]) -> PortEntry:
        """From a Neutron-shaped port dict (fixed_ips [{subnet_id, ip_address}], project_id or
        the older tenant_id). Unparseable addresses are skipped, never fatal."""
        ips: list[str] = []
        for fixed in port.get("fixed_ips") or ():
            try:
                ips.append(normalize_ip(str(fixed["ip_address"])))
            except (KeyError, TypeError, ValueError):
                continue
        # Values shared by many ports (network, owner, project, host) are interned: the JSON
        # decoder makes a new string for each, ~290 bytes a port at 100k ports (issue 14).
        intern = sys.intern
        return cls(
            id=str(port["id"]),
            network_id=intern(str(port.get("network_id") or "")),
            mac_address=normalize_mac(str(port.get("mac_address") or "")),
            ips=tuple(ips),
            device_id=str(port.get("device_id") or ""),
            device_owner=intern(str(port.get("device_owner") or "")),
            project_id=intern(str(port.get("project_id") or port.get("tenant_id") or "")),
            host=intern(str(port.get("binding:host_id") or "")),
        )

    @property
    def is_instance_port(self) -> bool:
        return bool(self.device_id) and self.device_owner.startswith(INSTANCE_OWNER_PREFIXES)

    @property
    def is_router_interface(self) -> bool:
        return bool(self.device_id) and self.device_owner in ROUTER_INTERFACE_OWNERS


@dataclass(frozen=True, slots=True)
class PortUpsert:
    port: PortEntry


@dataclass(frozen=True, slots=True)
class PortRemoved:
    port_id: str


@dataclass(frozen=True, slots=True)
class RouterUpsert:
    router_id: str


@dataclass(frozen=True, slots=True)
class RouterRemoved:
    router_id: str


IndexChange = PortUpsert | PortRemoved | RouterUpsert | RouterRemoved

# The multi-maps are network id -> address -> port id(s). Nearly every address has exactly
# one port: its value is then the port id itself (a str), and a tuple of ids only when
# several share it. A (network, address) tuple key per entry plus a 1-tuple value took
# ~140 bytes a port per map; one dict per network and the shared id ~35 (issue 14: the
# metadata agent at 100k ports).
_Ids = str | tuple[str, ...]
_Table = dict[str, dict[str, _Ids]]


def _ids(found: _Ids | None) -> tuple[str, ...]:
    if found is None:
        return ()
    return (found,) if isinstance(found, str) else found


def _add(table: _Table, network_id: str, key: str, port_id: str) -> None:
    inner = table.get(network_id)
    if inner is None:
        inner = table[network_id] = {}
    found = inner.get(key)
    if found is None:
        inner[key] = port_id
    elif port_id not in _ids(found):
        inner[key] = (*_ids(found), port_id)


def _discard(table: _Table, network_id: str, key: str, port_id: str) -> None:
    inner = table.get(network_id)
    found = inner.get(key) if inner is not None else None
    if inner is None or found is None:
        return
    rest = tuple(p for p in _ids(found) if p != port_id)
    if len(rest) > 1:
        inner[key] = rest
    elif rest:
        inner[key] = rest[0]
    else:
        del inner[key]
        if not inner:
            del table[network_id]


class PortIndex:
    """Ports by (network, IP), (network, MAC) and router interfaces, at a feed revision.

    `host` set (a compute host's agent in metadata_mode = distributed, `[DEFAULT]
    metadata_agent_scope = host`): only ports bound to that host are kept, so an address bound
    elsewhere resolves to nothing (404) and the index is the host's share of the cloud. A port
    that migrates away is dropped by the same upsert that records its new host.
    """

    __slots__ = ("revision", "host", "_ports", "_by_ip", "_by_mac", "_router_ports",
                 "_routers", "_by_network")

    def __init__(self, host: str | None = None) -> None:
        self.host = host
        self._reset()

    def _reset(self) -> None:
        self.revision = 0
        self._ports: dict[str, PortEntry] = {}
        self._by_ip: _Table = {}
        self._by_mac: _Table = {}
        self._router_ports: dict[str, tuple[str, ...]] = {}
        self._routers: set[str] = set()
        # Port ids per network: what a namespace's identity map is built from (agent/maps.py).
        self._by_network: dict[str, set[str]] = {}

    # -- loading ---------------------------------------------------------------------------
    def replace(self, revision: int, ports: Iterable[PortEntry], routers: Iterable[str]) -> None:
        """Swap in a full listing taken at `revision` (startup, reconnect, feed gap)."""
        self._reset()
        for port in ports:
            self._put(port)
        self._routers = set(routers)
        self.revision = revision

    def apply(self, change: IndexChange, revision: int | None = None) -> None:
        """Apply one change; idempotent (re-applying the same change is a no-op)."""
        match change:
            case PortUpsert(port=port):
                self._drop(port.id)
                self._put(port)
            case PortRemoved(port_id=port_id):
                self._drop(port_id)
            case RouterUpsert(router_id=router_id):
                self._routers.add(router_id)
            case RouterRemoved(router_id=router_id):
                self._routers.discard(router_id)
        if revision is not None:
            self.advance(revision)

    def advance(self, revision: int) -> None:
        """Record that every change up to `revision` has been applied."""
        if revision > self.revision:
            self.revision = revision

    def _put(self, port: PortEntry) -> None:
        if self.host is not None and port.host != self.host:
            return
        self._ports[port.id] = port
        self._by_network.setdefault(port.network_id, set()).add(port.id)
        for ip in port.ips:
            _add(self._by_ip, port.network_id, ip, port.id)
        if port.mac_address:
            _add(self._by_mac, port.network_id, port.mac_address, port.id)
        if port.is_router_interface:
            found = self._router_ports.get(port.device_id, ())
            self._router_ports[port.device_id] = (*found, port.id)

    def _drop(self, port_id: str) -> None:
        old = self._ports.pop(port_id, None)
        if old is None:
            return
        on_network = self._by_network.get(old.network_id)
        if on_network is not None:
            on_network.discard(old.id)
            if not on_network:
                del self._by_network[old.network_id]
        for ip in old.ips:
            _discard(self._by_ip, old.network_id, ip, old.id)
        if old.mac_address:
            _discard(self._by_mac, old.network_id, old.mac_address, old.id)
        if old.is_router_interface:
            rest = tuple(p for p in self._router_ports.get(old.device_id, ()) if p != old.id)
            if rest:
                self._router_ports[old.device_id] = rest
            else:
                self._router_ports.pop(old.device_id, None)

    # -- lookups ---------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._ports)

    def port(self, port_id: str) -> PortEntry | None:
        return self._ports.get(port_id)

    def ports(self) -> Iterable[PortEntry]:
        return self._ports.values()

    def ports_on_network(self, network_id: str) -> tuple[PortEntry, ...]:
        """Every port of `network_id` (any owner), in no particular order."""
        return tuple(self._ports[i] for i in self._by_network.get(network_id, ()))

    def ports_with_ip(self, network_id: str, ip: str) -> tuple[PortEntry, ...]:
        """`ip` must already be normalised (normalize_ip)."""
        ids = _ids(self._by_ip.get(network_id, {}).get(ip))
        return tuple(self._ports[i] for i in ids)

    def ports_with_mac(self, network_id: str, mac: str) -> tuple[PortEntry, ...]:
        ids = _ids(self._by_mac.get(network_id, {}).get(normalize_mac(mac)))
        return tuple(self._ports[i] for i in ids)

    def router_networks(self, router_id: str) -> tuple[str, ...]:
        """Networks the router has interfaces on, sorted and without duplicates."""
        ids = self._router_ports.get(router_id, ())
        return tuple(sorted({self._ports[i].network_id for i in ids}))

    def has_router(self, router_id: str) -> bool:
        return router_id in self._routers or router_id in self._router_ports

    def ports_of_device(self, device_id: str) -> list[PortEntry]:
        # Linear, used only on (rare) instance change records; not on the request path.
        return [p for p in self._ports.values() if p.device_id == device_id]
