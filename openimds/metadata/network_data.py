"""`network_data.json` from an instance's ports and subnets, following nova's netutils.

Pure: the view already carries each subnet's DHCP server, so no lookup happens here. The key
order matches nova's so the serialised document is byte-compatible.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from openimds.metadata.view import FixedIPView, InstanceView, PortView, SubnetView

__all__ = ["network_data"]

# VIF types nova passes through; anything else is reported as a physical link.
_KNOWN_VIF_TYPES = frozenset(
    {"bridge", "dvs", "hw_veb", "hyperv", "ovs", "tap", "vhostuser", "vif"}
)


def _has_dhcp(subnet: SubnetView) -> bool:
    # A DHCP port address or the enable_dhcp flag (the OVN case, nova bug 2055245).
    return bool(subnet.dhcp_server) or subnet.enable_dhcp


def _route(cidr: str, gateway: str) -> dict[str, str]:
    net = ipaddress.ip_network(cidr, strict=False)
    return {"network": str(net.network_address), "netmask": str(net.netmask), "gateway": gateway}


def _network_entry(
    net_id: str, link_id: str, port: PortView, subnet: SubnetView, first_ip: FixedIPView
) -> dict[str, Any]:
    short = {"id": net_id, "type": "", "link": link_id, "network_id": port.network_id}
    if subnet.ip_version == 4:
        if _has_dhcp(subnet):
            short["type"] = "ipv4_dhcp"
            return short
        kind = "ipv4"
    elif subnet.ipv6_address_mode:
        kind = f"ipv6_{subnet.ipv6_address_mode}"
    elif _has_dhcp(subnet):
        short["type"] = "ipv6_dhcp"
        return short
    else:
        kind = "ipv6"
    routes: list[dict[str, str]] = []
    if subnet.gateway_ip:
        default = "0.0.0.0" if subnet.ip_version == 4 else "::"
        routes.append({"network": default, "netmask": default, "gateway": subnet.gateway_ip})
    routes.extend(_route(dest, nexthop) for dest, nexthop in subnet.host_routes)
    return {
        "id": net_id,
        "type": kind,
        "link": link_id,
        "ip_address": first_ip.ip_address,
        "netmask": str(ipaddress.ip_network(subnet.cidr, strict=False).netmask),
        "routes": routes,
        "network_id": port.network_id,
        "services": [{"type": "dns", "address": dns} for dns in subnet.dns_nameservers],
    }


def network_data(view: InstanceView) -> dict[str, Any]:
    """The network_data.json object for `view` (`{}` when it has no ports, as nova does)."""
    if not view.ports:
        return {}
    links: list[dict[str, Any]] = []
    networks: list[dict[str, Any]] = []
    services: list[dict[str, str]] = []
    for port in view.ports:
        if not port.fixed_ips:
            # Nova skips a VIF whose network has no subnets; a port without fixed IPs is the
            # closest equivalent here (nova reads subnets through the port's fixed IPs).
            continue
        # The first subnet of each IP version, with the first IP the port has in it.
        first: dict[int, FixedIPView] = {}
        for fip in port.fixed_ips:
            first.setdefault(fip.subnet.ip_version, fip)
        subnets = {fip.subnet.id: fip.subnet for fip in port.fixed_ips}
        link_id = port.devname
        # DHCP hands out the MTU itself, so nova withholds it when a DHCP port exists.
        mtu = None if any(s.dhcp_server for s in subnets.values()) else port.mtu
        vif_type = port.vif_type if port.vif_type in _KNOWN_VIF_TYPES else "phy"
        links.append(
            {
                "id": link_id,
                "vif_id": port.id,
                "type": vif_type,
                "mtu": mtu,
                "ethernet_mac_address": port.mac_address,
            }
        )
        for version in (4, 6):
            chosen = first.get(version)
            if chosen is None:
                continue
            networks.append(
                _network_entry(f"network{len(networks)}", link_id, port, chosen.subnet, chosen)
            )
            for dns in chosen.subnet.dns_nameservers:
                entry = {"type": "dns", "address": dns}
                if entry not in services:
                    services.append(entry)
    return {"links": links, "networks": networks, "services": services}
