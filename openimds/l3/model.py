"""Input values for the L3 plan, declared by their consumer (this package).

`router_from_neutron` builds a `RouterInfo` from the control-plane API's Neutron-shaped JSON
(`{"routers": [...]}`, `{"ports": [...]}`, `{"subnets": [...]}`), so that
`plan.desired_router_state` only ever sees frozen values.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from openimds.wire import HA_OWNER, ROUTER_INTERFACE_OWNERS

__all__ = [
    "HA_OWNER",
    "HaInfo",
    "ROUTER_INTERFACE_OWNERS",
    "RouterInfo",
    "RouterInterface",
    "router_from_neutron",
    "routers_from_neutron",
]




@dataclass(frozen=True)
class RouterInterface:
    """One router interface port: becomes a qr- device bridged onto `network_id`."""

    port_id: str
    network_id: str
    mac_address: str
    addresses: tuple[str, ...]  # "ip/prefixlen", in fixed_ips order
    mtu: int = 1500
    # (cidr, ipv6_ra_mode) of the IPv6 subnets on this port whose router advertisements
    # OpenStack sends (`ipv6_ra_mode` set): the router advertises them, as Neutron's radvd does.
    ipv6_ra: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class HaInfo:
    """What makes a router HA on this host: its VRRP id and this host's ha- port."""

    vr_id: int
    port: RouterInterface


@dataclass(frozen=True)
class RouterInfo:
    id: str
    name: str
    project_id: str
    interfaces: tuple[RouterInterface, ...]
    ha: HaInfo | None = None


def router_from_neutron(
    router: Mapping[str, Any],
    ports: Iterable[Mapping[str, Any]],
    subnets: Iterable[Mapping[str, Any]],
    networks: Iterable[Mapping[str, Any]] = (),
    host: str = "",
) -> RouterInfo:
    """The router plus its interface ports (device_id = router id, router-interface owner).

    Prefix lengths come from the subnets' CIDRs; a fixed IP on an unknown subnet is skipped
    rather than guessed. Interfaces are sorted by port id so the plan is order-independent.
    An HA router (`ha` true, with a `ha_vr_id`) also gets the ha- port bound to `host` (any
    host's when `host` is empty), or is built as a plain router when it has none here.
    """
    subnets = list(subnets)
    prefix = {s["id"]: ipaddress.ip_network(s["cidr"], strict=False).prefixlen for s in subnets}
    ra_mode = {s["id"]: (str(ipaddress.ip_network(s["cidr"], strict=False)), s["ipv6_ra_mode"])
               for s in subnets if s.get("ipv6_ra_mode") and ":" in s["cidr"]}
    mtu = {n["id"]: int(n.get("mtu") or 1500) for n in networks}
    interfaces = []
    ha_ports = []
    for p in ports:
        if p.get("device_id") != router["id"]:
            continue
        owner = p.get("device_owner")
        if owner not in ROUTER_INTERFACE_OWNERS and owner != HA_OWNER:
            continue
        addrs = tuple(
            f"{f['ip_address']}/{prefix[f['subnet_id']]}"
            for f in p.get("fixed_ips") or ()
            if f["subnet_id"] in prefix
        )
        port = RouterInterface(
            port_id=p["id"],
            network_id=p["network_id"],
            mac_address=p["mac_address"].lower(),
            addresses=addrs,
            mtu=mtu.get(p["network_id"], 1500),
            ipv6_ra=tuple(dict.fromkeys(ra_mode[f["subnet_id"]]
                                        for f in p.get("fixed_ips") or ()
                                        if f["subnet_id"] in ra_mode)),
        )
        if owner == HA_OWNER:
            if not host or p.get("binding:host_id") == host:
                ha_ports.append(port)
        else:
            interfaces.append(port)
    ha = None
    if router.get("ha") and router.get("ha_vr_id") and ha_ports:
        ha = HaInfo(int(router["ha_vr_id"]), min(ha_ports, key=lambda i: i.port_id))
    return RouterInfo(
        id=router["id"],
        name=router.get("name") or "",
        project_id=router.get("project_id") or router.get("tenant_id") or "",
        interfaces=tuple(sorted(interfaces, key=lambda i: i.port_id)),
        ha=ha,
    )


def routers_from_neutron(
    routers: Mapping[str, Any] | Iterable[Mapping[str, Any]],
    ports: Mapping[str, Any] | Iterable[Mapping[str, Any]],
    subnets: Mapping[str, Any] | Iterable[Mapping[str, Any]],
    networks: Mapping[str, Any] | Iterable[Mapping[str, Any]] = (),
    host: str = "",
) -> dict[str, RouterInfo]:
    """All routers by id; accepts the API bodies (`{"routers": [...]}`) or plain lists."""
    r = _unwrap(routers, "routers")
    p = _unwrap(ports, "ports")
    s = _unwrap(subnets, "subnets")
    n = _unwrap(networks, "networks")
    return {x["id"]: router_from_neutron(x, p, s, n, host) for x in r}


def _unwrap(
    body: Mapping[str, Any] | Iterable[Mapping[str, Any]], key: str
) -> list[Mapping[str, Any]]:
    if isinstance(body, Mapping):
        return list(body.get(key) or ())
    return list(body)
