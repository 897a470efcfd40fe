"""The metadata next hop of a network served by several DHCP agents (issue 11 item 2): pure.

Neutron routes 169.254.169.254/32 (options 121/249) on an isolated subnet via each dnsmasq's
own port address, so when that node dies a guest keeps a dead route until its DHCP rebind
(7/8 of the lease). openimds routes it via one address per subnet that always lives in one
live DHCP namespace of the network:

* the control plane keeps a port with device_owner `network:metadata` (device_id
  `metadata-<network>`, unbound, one address on each DHCP-enabled IPv4 subnet) once the
  network has two DHCP ports, and for as long as it has a DHCP-enabled IPv4 subnet
  (control/metadata_vip.py): the address a guest leased never changes;
* every DHCP namespace of the network runs one keepalived (`vrrp_for`) holding those
  addresses (/32, so they never become secondaries of the tap's own address) on its tap.
  VRRP is unicast between the DHCP ports' own addresses on the first such subnet
  (`unicast_src_ip`, `unicast_peer`, `check_unicast_src`): guests see no adverts, and an
  advert from any address but a peer DHCP port is dropped; port security (openimds/portsec)
  stops a guest from sending with a DHCP port's address. All instances start BACKUP with equal
  priority and `nopreempt`, so a returning node does not take the address back; the new
  master sends gratuitous ARPs, which move the guests' neighbour entries and the bridges'
  FDB entries to its tap;
* with no peer (one DHCP port left, e.g. an admin removed the network from the other agents),
  the one namespace holds the addresses as plain addresses: keepalived with an empty
  `unicast_peer` would fall back to multicast.

The haproxy of each DHCP namespace listens on 169.254.169.254:80 (an address of the tap), so
a request routed via the VIP is delivered locally on whichever node is master.
"""

from __future__ import annotations

from collections.abc import Sequence

from openimds.dhcp.model import NetworkInfo, PortInfo
from openimds.linux.keepalived import VrrpConf
from openimds.wire import DHCP_OWNER, METADATA_OWNER

__all__ = ["VR_ID", "metadata_vip_port", "plan_vips", "vip_ip"]

# Any id works: adverts are unicast to the peers, never seen by another VRRP instance.
VR_ID = 1


def metadata_vip_port(network: NetworkInfo) -> PortInfo | None:
    """The network's `network:metadata` port (the oldest, if two creations raced)."""
    ports = [p for p in network.ports if p.device_owner == METADATA_OWNER]
    return min(ports, key=lambda p: (p.created_at, p.id), default=None)


def vip_ip(network: NetworkInfo, subnet_id: str) -> str | None:
    """The metadata next hop address on `subnet_id`, None when the network has none."""
    port = metadata_vip_port(network)
    if port is None:
        return None
    return next((ip for sid, ip in port.fixed_ips if sid == subnet_id), None)


def plan_vips(network: NetworkInfo, dhcp_port: PortInfo, interface: str,
              v4_subnets: Sequence[str], advert_int: int) -> tuple[tuple[str, ...],
                                                                   VrrpConf | None]:
    """What the DHCP namespace of `dhcp_port` does with the network's metadata next hops on
    the DHCP-enabled IPv4 subnets `v4_subnets` (in subnet order): ((), None) when the
    network has none (or this port is on none of their subnets); (cidrs, None) to hold them
    as plain addresses (no peer); ((), conf) for keepalived."""
    port = metadata_vip_port(network)
    if port is None:
        return (), None
    own = dict(dhcp_port.fixed_ips)
    vips = [(sid, ip) for sid in v4_subnets for s, ip in port.fixed_ips
            if s == sid and sid in own]
    if not vips:
        return (), None
    cidrs = tuple(f"{ip}/32" for _, ip in vips)
    election = vips[0][0]
    others = sorted((p for p in network.ports
                     if p.device_owner == DHCP_OWNER and p.id != dhcp_port.id),
                    key=lambda p: (p.created_at, p.id))
    peers = tuple(ip for p in others for sid, ip in p.fixed_ips if sid == election)
    if not peers:
        return cidrs, None
    return (), VrrpConf(name=network.id, vr_id=VR_ID, device=interface,
                        vips=tuple((c, interface) for c in cidrs), advert_int=advert_int,
                        unicast_src=own[election], unicast_peers=peers)
