"""Map mode (`metadata_proxy_identity = haproxy_map`): what each namespace proxy's identity map
holds, as pure functions of the port index.

    map_target(config text) -> MapTarget | None     which proxy, which scope, which files
    desired_map(index, kind, scope_id, secret)       {source address: "instance|project|sig"}
    diff_map(actual, desired) -> [MapEdit]            the runtime-API edits, in order
    map_file_text(entries)                          the map file, byte-stable

The keys are exactly what the agent would resolve in that namespace: every candidate address
of every port on the scope's networks (fixed IPs, and the EUI-64 link-local address of its MAC,
which the agent maps back to that MAC) is passed through `resolve()` itself, with the same
network or router id the proxy would have stamped, and kept only when it resolves. So an
address held by two ports, a DHCP or router port, or a router without interfaces is absent
here exactly as it is a 404 from the agent; tenants' overlapping addresses live in different
namespaces and so in different maps.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from openimds.agent.errors import AgentError
from openimds.agent.index import PortEntry, PortIndex
from openimds.agent.resolve import AgentRequest, resolve
from openimds.proxy.haproxy import MAP_VALUE_SEPARATOR, ResourceKind
from openimds.proxy.runtime_api import MapEdit
from openimds.wire import sign_instance_id

__all__ = [
    "MapTarget",
    "desired_map",
    "diff_map",
    "link_local_from_mac",
    "map_file_text",
    "map_target",
    "scope_networks",
]

_IDENTITY_LINE = re.compile(r"^# identity-map: (network|router) (\S+) (\S+)$", re.MULTILINE)
_OWNER_LINE = re.compile(r"^# owner: (?:network|router) (\S+)$", re.MULTILINE)
_STATS_LINE = re.compile(r"^\s*stats socket\s+(\S+)", re.MULTILINE)
# A value travels as one token of a runtime-API command (space- and ';'-separated) and one
# line of the map file: ids with anything else are left out (the agent would refuse to
# forward a control character too).
_SAFE_VALUE = re.compile(r"[A-Za-z0-9._:@+=-]+")


@dataclass(frozen=True)
class MapTarget:
    """One proxy in map mode, read back from its rendered config."""

    owner_id: str  # the namespace's network/router id (its files)
    kind: ResourceKind  # the identity it resolves for (a metadata network: its router)
    scope_id: str
    map_file: str
    admin_socket: str


def map_target(text: str) -> MapTarget | None:
    """The map-mode facts of a rendered config (proxy/haproxy.py writes them), or None for a
    proxy of the agent's path or one without an admin socket."""
    ident = _IDENTITY_LINE.search(text)
    owner = _OWNER_LINE.search(text)
    stats = _STATS_LINE.search(text)
    if ident is None or owner is None or stats is None:
        return None
    kind: ResourceKind = "network" if ident.group(1) == "network" else "router"
    return MapTarget(owner_id=owner.group(1), kind=kind, scope_id=ident.group(2),
                     map_file=ident.group(3), admin_socket=stats.group(1))


def link_local_from_mac(mac: str) -> str | None:
    """fe80:: with the modified EUI-64 interface id of `mac` (the inverse of
    resolve.mac_from_link_local); None when `mac` is not six octets."""
    try:
        octets = bytes(int(x, 16) for x in mac.split(":"))
    except ValueError:
        return None
    if len(octets) != 6:
        return None
    iid = bytes((octets[0] ^ 0x02, octets[1], octets[2], 0xFF, 0xFE, octets[3], octets[4],
                 octets[5]))
    return str(ipaddress.IPv6Address(b"\xfe\x80" + bytes(6) + iid))


def scope_networks(index: PortIndex, kind: ResourceKind, scope_id: str) -> tuple[str, ...]:
    """The networks whose ports a proxy of that identity can see (as resolve() searches)."""
    return (scope_id,) if kind == "network" else index.router_networks(scope_id)


def _candidates(port: PortEntry) -> Iterable[str]:
    yield from port.ips
    if port.mac_address:
        ll = link_local_from_mac(port.mac_address)
        if ll is not None:
            yield ll


def desired_map(index: PortIndex, kind: ResourceKind, scope_id: str,
                secret: str) -> dict[str, str]:
    """{guest source address: "instance|project|signature"} for the proxy stamping
    (kind, scope_id): every address the agent resolves there, and nothing else."""
    # The headers that proxy would have sent the agent for a guest at `addr`.
    stamped = {"network_ids": (scope_id,)} if kind == "network" else {"router_ids": (scope_id,)}
    signatures: dict[str, str] = {}
    out: dict[str, str] = {}
    for network_id in scope_networks(index, kind, scope_id):
        for port in index.ports_on_network(network_id):
            if not port.is_instance_port:
                continue  # resolve() would refuse every address of it
            for addr in _candidates(port):
                try:
                    res = resolve(AgentRequest(forwarded_for=(addr,), **stamped), index)
                except AgentError:
                    continue
                if not (_SAFE_VALUE.fullmatch(res.instance_id)
                        and _SAFE_VALUE.fullmatch(res.project_id)):
                    continue
                sig = signatures.get(res.instance_id)
                if sig is None:
                    sig = signatures[res.instance_id] = sign_instance_id(secret, res.instance_id)
                out[res.address] = MAP_VALUE_SEPARATOR.join((res.instance_id, res.project_id,
                                                              sig))
    return out


def diff_map(actual: Sequence[tuple[str, str]], desired: Mapping[str, str]) -> list[MapEdit]:
    """Edits that make the running map (`show map` entries, in order; a key may repeat)
    equal `desired`: deletions first, then changed values, then additions."""
    seen: dict[str, list[str]] = {}
    for key, value in actual:
        seen.setdefault(key, []).append(value)
    ops: list[MapEdit] = []
    for key in sorted(seen):
        values = seen[key]
        want = desired.get(key)
        if want is None:
            ops.append(MapEdit("del", key))
        elif len(values) > 1:
            # `set map` would set every copy; one clean entry instead.
            ops += [MapEdit("del", key), MapEdit("add", key, want)]
        elif values[0] != want:
            ops.append(MapEdit("set", key, want))
    ops += [MapEdit("add", key, desired[key]) for key in sorted(desired) if key not in seen]
    return ops


def map_file_text(entries: Mapping[str, str]) -> str:
    """The map file haproxy loads at start: one "address value" line per entry, sorted."""
    return "".join(f"{key} {entries[key]}\n" for key in sorted(entries))
