"""What one host's bridges and uplinks should be, per network: a pure function of the inventory.

For every network that is not `local` and has a port bound to this host (instances, DHCP,
router interfaces), the host gets the bridge `brq<net[:11]>` with the segment's uplink:

* flat  -> the physical interface mapped to the physnet (`[linux_bridge]
  physical_interface_mappings`), enslaved as is (never created or deleted by us);
* vlan  -> `<interface>.<vid>`, a VLAN sub-interface of the mapped interface;
* vxlan -> `vxlan-<vni>` on `local_ip`, with head-end replication: one all-zero FDB entry per
  other host that has a port on the network and a registered tunnel address (l2pop style).

Nothing here reads the kernel, the clock or the config: `L2Options` comes from the options and
`peers` (host -> tunnel address) from the agent registry.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from openimds.linux.fabric import bridge_name
from openimds.wire import HA_OWNER, ROUTER_INTERFACE_OWNERS

__all__ = ["HA_OWNER", "L2Options", "L2Plan", "PlanError", "Uplink", "desired_l2_state",
           "ha_router_hosts", "uplink_name"]

IFNAMSIZ = 15  # longest Linux interface name


class PlanError(ValueError):
    """The inventory asks for something this host cannot build (an unmapped physnet, VXLAN
    off); not retried until the inventory or the config changes."""


@dataclass(frozen=True)
class L2Options:
    host: str
    local_ip: str | None = None
    enable_vxlan: bool = True
    udp_dstport: int = 4789
    physical_interface_mappings: Mapping[str, str] | None = None


@dataclass(frozen=True)
class Uplink:
    kind: str  # flat | vlan | vxlan
    name: str
    parent: str | None = None  # vlan: the physical interface
    segmentation_id: int | None = None
    local_ip: str | None = None
    dstport: int | None = None
    peers: tuple[str, ...] = ()  # vxlan: remote tunnel addresses, sorted


@dataclass(frozen=True)
class L2Plan:
    network_id: str
    bridge: str
    mtu: int
    uplink: Uplink


def uplink_name(network_type: str, segmentation_id: int | None, interface: str | None) -> str:
    if network_type == "vxlan":
        return f"vxlan-{segmentation_id}"
    if network_type == "vlan":
        return f"{interface}.{segmentation_id}"
    assert interface is not None
    return interface


def hosts_of(ports: Iterable[Mapping[str, object]]) -> set[str]:
    return {str(p.get("binding:host_id")) for p in ports if p.get("binding:host_id")}




def ha_router_hosts(ports: Iterable[Mapping[str, object]]) -> dict[str, set[str]]:
    """network id -> hosts of the HA routers attached to it. An HA router's interface ports
    are unbound (a copy of each runs on every host of the router, control/l3_ha.py); the
    hosts are those of its ha- ports, and each needs the bridge of every network the router
    is attached to, and is a VXLAN flood peer there."""
    ports = list(ports)
    by_router: dict[str, set[str]] = {}
    for p in ports:
        if p.get("device_owner") == HA_OWNER and p.get("binding:host_id"):
            by_router.setdefault(str(p.get("device_id")), set()).add(str(p["binding:host_id"]))
    out: dict[str, set[str]] = {}
    for p in ports:
        rid = str(p.get("device_id"))
        if p.get("device_owner") in ROUTER_INTERFACE_OWNERS and rid in by_router:
            out.setdefault(str(p.get("network_id")), set()).update(by_router[rid])
    return out


def desired_l2_state(network: Mapping[str, object] | None,
                     ports: Iterable[Mapping[str, object]], options: L2Options,
                     peers: Mapping[str, str],
                     extra_hosts: Iterable[str] = ()) -> L2Plan | None:
    """The plan for one network on this host; None = nothing of ours should exist for it.

    `ports` are the network's ports (with `binding:host_id`); `peers` maps each host with a
    registered l2-agent to its tunnel address.
    """
    if network is None:
        return None
    ntype = str(network.get("provider:network_type") or "local")
    if ntype == "local":
        return None
    ports = list(ports)
    hosts = hosts_of(ports) | set(extra_hosts)  # extra: HA routers' hosts (ha_router_hosts)
    if options.host not in hosts:
        return None
    net_id = str(network["id"])
    mtu = int(str(network.get("mtu") or 1500))
    seg = network.get("provider:segmentation_id")
    seg_id = int(str(seg)) if seg is not None else None
    physnet = network.get("provider:physical_network")
    mappings = options.physical_interface_mappings or {}
    if ntype == "vxlan":
        if not options.enable_vxlan or not options.local_ip:
            raise PlanError(f"network {net_id} is vxlan but this host has no VXLAN "
                            "([vxlan] enable_vxlan = true and local_ip are required)")
        remote = sorted({peers[h] for h in hosts if h != options.host and h in peers}
                        - {options.local_ip})
        uplink = Uplink("vxlan", uplink_name("vxlan", seg_id, None), None, seg_id,
                        options.local_ip, options.udp_dstport, tuple(remote))
    elif ntype in ("flat", "vlan"):
        interface = mappings.get(str(physnet))
        if interface is None:
            raise PlanError(f"network {net_id} is {ntype} on physical network {physnet!r}, "
                            "which [linux_bridge] physical_interface_mappings does not map "
                            "on this host")
        if ntype == "flat":
            uplink = Uplink("flat", interface)
        else:
            name = uplink_name("vlan", seg_id, interface)
            if len(name) > IFNAMSIZ:
                raise PlanError(f"VLAN device name {name!r} is longer than {IFNAMSIZ} "
                                "characters; map the physnet to a shorter interface name")
            uplink = Uplink("vlan", name, interface, seg_id)
    else:
        raise PlanError(f"network {net_id} has unknown network type {ntype!r}")
    return L2Plan(net_id, bridge_name(net_id), mtu, uplink)
