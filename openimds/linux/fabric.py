"""The one-host fabric: a Linux bridge per network, every port a veth into its namespace.

```
fabric namespace ([DEFAULT] fabric_namespace)
  brq<network[:11]>  ── tap<port[:11]> ═veth═ tap<port[:11]>  in qdhcp-<network>   (DHCP port)
                     ── tap<port[:11]> ═veth═ qr-<port[:11]>  in qrouter-<router>  (router port)
                     ── tap<port[:11]> ═veth═ eth0            in the guest's netns (port plug)
```
Names follow Neutron's Linux-bridge agent (`brq` + 11 characters of the network id on the
bridge, `tap` + 11 characters of the port id on the bridge side), so they are deterministic:
any agent finds what it owns after a restart without a record of its own.

The fabric namespace is created when missing, with bridge netfilter off (a new namespace gets
bridge-nf-call-iptables=1 when br_netfilter is loaded, and bridged DHCP/HTTP would then cross
its FORWARD chain) and IPv6 off for the namespace's own devices (bridges and bridge-side veths
need no addresses and must not send RS/MLD; bridged IPv6 between ports is unaffected).

An empty fabric_namespace means the agent's own namespace. The linux layer refuses to act on an
unnamed namespace (so nothing can touch the host by accident), so the agent's namespace gets a
name (`ip netns attach openimds-host <pid>`), and its sysctls are left as the operator set them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from openimds import wire
from openimds.linux.addresses import ensure_address
from openimds.linux.links import ensure_bridge, ensure_veth_pair, set_link
from openimds.linux.netns import ensure_netns, netns_exists, set_bridge_nf_call, set_sysctl
from openimds.linux.observe import find_link
from openimds.linux.process import CommandFailed, run

__all__ = [
    "BRIDGE_PREFIX",
    "HOST_FABRIC_NAME",
    "bridge_name",
    "ensure_fabric",
    "ensure_port_link",
    "fabric_port_name",
    "plug_port",
]

BRIDGE_PREFIX = "brq"
FABRIC_PORT_PREFIX = "tap"
HOST_FABRIC_NAME = "openimds-host"


def bridge_name(network_id: str) -> str:
    return wire.bridge_device(network_id)


def fabric_port_name(port_id: str) -> str:
    """The bridge-side end of a port's veth."""
    return wire.tap_device(port_id)


def ensure_fabric(fabric_namespace: str) -> str:
    """Make the fabric namespace usable and return the name to pass to the link verbs."""
    if not fabric_namespace:
        return _attach_own_namespace()
    ensure_netns(fabric_namespace)
    set_bridge_nf_call(fabric_namespace, False)
    for key in ("net.ipv6.conf.all.disable_ipv6", "net.ipv6.conf.default.disable_ipv6"):
        set_sysctl(fabric_namespace, key, 1)
    return fabric_namespace


def _attach_own_namespace() -> str:
    if not netns_exists(HOST_FABRIC_NAME):
        try:
            run(["ip", "netns", "attach", HOST_FABRIC_NAME, str(os.getpid())])
        except CommandFailed:
            if not netns_exists(HOST_FABRIC_NAME):
                raise
    return HOST_FABRIC_NAME


def ensure_port_link(
    fabric: str,
    network_id: str,
    port_id: str,
    netns: str,
    ifname: str,
    mac: str,
    mtu: int = 1500,
) -> bool:
    """The network's bridge, and the port's veth with its far end `ifname` (MAC `mac`, up)
    in `netns`. Returns True when the veth pair was (re)created, so a caller knows that
    processes bound to the old device (dnsmasq) need a restart."""
    bridge = bridge_name(network_id)
    near = fabric_port_name(port_id)
    ensure_bridge(fabric, bridge)
    before = find_link(fabric, near)
    ensure_veth_pair(fabric, near, netns, ifname)
    after = find_link(fabric, near)
    created = before is None or after is None or before.ifindex != after.ifindex
    set_link(fabric, near, mtu=mtu, master=bridge, up=True)
    set_link(netns, ifname, mac=mac, mtu=mtu, up=True)
    return created


def plug_port(
    fabric: str,
    network_id: str,
    port_id: str,
    mac: str,
    netns: str,
    *,
    ifname: str = "eth0",
    mtu: int = 1500,
    addresses: Sequence[str] = (),
    gateway: str | None = None,
) -> None:
    """`openimds port plug`: put an instance port into `netns` (created when missing).

    Addresses are normally left to the guest's DHCP client; `addresses`/`gateway` configure
    them statically (for demos without a DHCP client).
    """
    ensure_netns(netns)
    ensure_port_link(fabric, network_id, port_id, netns, ifname, mac, mtu)
    for cidr in addresses:
        ensure_address(netns, ifname, cidr)
    if gateway:
        run(["ip", "-n", netns, "route", "replace", "default", "via", gateway, "dev", ifname])
