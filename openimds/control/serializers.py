"""Inventory rows -> Neutron v2.0 / Nova v2.1 JSON shapes (pure functions of loaded rows)."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from openimds.inventory.models import Instance, KeyPair, Network, Port, Router, Subnet


def iso(ts: datetime | None) -> str | None:
    """ISO 8601 with a Z, as Neutron writes it (SQLite hands back naive UTC datetimes)."""
    if ts is None:
        return None
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _owned(project_id: str) -> dict[str, str]:
    return {"tenant_id": project_id, "project_id": project_id}


def _standard(row: Network | Subnet | Port | Router) -> dict[str, Any]:
    return {"description": row.description or "", "tags": list(row.tags or [])}


def network_dict(net: Network, *, provider: bool = False) -> dict[str, Any]:
    """`provider`: add the provider:* attributes (Neutron shows them to admins only; openimds
    also to the service role, whose agents build the segments)."""
    out = {
        "id": net.id,
        "name": net.name,
        **_owned(net.project_id),
        "admin_state_up": net.admin_state_up,
        "shared": net.shared,
        "mtu": net.mtu,
        "status": "ACTIVE",
        "subnets": sorted(s.id for s in net.subnets),
        "router:external": False,
        # One zone (extensions.ZONE): the network is in it, and hints are not stored.
        "availability_zones": ["nova"],
        "availability_zone_hints": [],
        **_standard(net),
        "created_at": iso(net.created_at),
        "updated_at": iso(net.updated_at),
    }
    if provider:
        out["provider:network_type"] = net.network_type or "local"
        out["provider:physical_network"] = net.physical_network
        out["provider:segmentation_id"] = net.segmentation_id
    return out


def subnet_dict(sub: Subnet) -> dict[str, Any]:
    return {
        "id": sub.id,
        "name": sub.name,
        **_owned(sub.project_id),
        "network_id": sub.network_id,
        "ip_version": sub.ip_version,
        "cidr": sub.cidr,
        "gateway_ip": sub.gateway_ip,
        "enable_dhcp": sub.enable_dhcp,
        "allocation_pools": list(sub.allocation_pools or []),
        "host_routes": list(sub.host_routes or []),
        "dns_nameservers": list(sub.dns_nameservers or []),
        "ipv6_ra_mode": sub.ipv6_ra_mode,
        "ipv6_address_mode": sub.ipv6_address_mode,
        "subnetpool_id": None,
        **_standard(sub),
        "created_at": iso(sub.created_at),
        "updated_at": iso(sub.updated_at),
    }


def port_dict(port: Port, *, binding: bool = False) -> dict[str, Any]:
    """`binding`: add the binding:* attributes (Neutron shows them to admins; openimds also to
    the service role, whose agents act on binding:host_id)."""
    out = {
        "id": port.id,
        "name": port.name,
        **_owned(port.project_id),
        "network_id": port.network_id,
        "mac_address": port.mac_address,
        "fixed_ips": [{"subnet_id": f.subnet_id, "ip_address": f.ip_address}
                      for f in port.fixed_ips],
        "device_id": port.device_id,
        "device_owner": port.device_owner,
        "admin_state_up": port.admin_state_up,
        "status": port.status,
        **_standard(port),
        "port_security_enabled": port.port_security_enabled,
        "allowed_address_pairs": [dict(p) for p in port.allowed_address_pairs or ()],
        "created_at": iso(port.created_at),
        "updated_at": iso(port.updated_at),
    }
    if binding:
        out.update(binding_fields(port.binding_host_id or "", port.binding_profile or {}))
    return out


def binding_fields(host: str, profile: Mapping[str, Any]) -> dict[str, Any]:
    """Neutron's port binding attributes. openimds binds every port to Linux bridges, so a
    port with a host is `bridge` (as the Linux-bridge mechanism driver says) and one without
    is `unbound`."""
    return {
        "binding:host_id": host,
        "binding:vif_type": "bridge" if host else "unbound",
        "binding:vif_details": {"connectivity": "l2", "port_filter": False} if host else {},
        "binding:vnic_type": "normal",
        "binding:profile": dict(profile),
    }


def router_dict(router: Router, *, admin: bool = False) -> dict[str, Any]:
    """`admin`: add `ha` (Neutron shows it to admins only; openimds also to the service role,
    whose L3 agents build the router) and openimds' `ha_vr_id` (the VRRP id keepalived uses,
    which Neutron hands its agents over RPC)."""
    extra: dict[str, Any] = {}
    if admin:
        extra = {"ha": bool(router.ha), "ha_vr_id": router.ha_vr_id}
    return {
        "id": router.id,
        "name": router.name,
        **_owned(router.project_id),
        "admin_state_up": router.admin_state_up,
        "status": "ACTIVE",
        "external_gateway_info": None,
        "routes": [],
        **_standard(router),
        "created_at": iso(router.created_at),
        "updated_at": iso(router.updated_at),
        **extra,
    }


def server_dict(inst: Instance, ports: Sequence[Port], networks: Mapping[str, Network],
                base_url: str = "") -> dict[str, Any]:
    addresses: dict[str, list[dict[str, Any]]] = {}
    for port in ports:
        net = networks.get(port.network_id)
        label = net.name if net is not None and net.name else port.network_id
        for fip in port.fixed_ips:
            addresses.setdefault(label, []).append({
                "addr": fip.ip_address,
                "version": ipaddress.ip_address(fip.ip_address).version,
                "OS-EXT-IPS:type": "fixed",
                "OS-EXT-IPS-MAC:mac_addr": port.mac_address,
            })
    image = inst.image
    link = f"{base_url}/v2.1/servers/{inst.uuid}"
    return {
        "id": inst.uuid,
        "name": inst.name,
        "status": inst.status,
        "tenant_id": inst.project_id,
        "user_id": inst.user_id,
        "metadata": dict(inst.properties or {}),
        "key_name": inst.key_name,
        "OS-EXT-AZ:availability_zone": inst.availability_zone,
        "OS-EXT-SRV-ATTR:hostname": inst.hostname,
        "OS-EXT-SRV-ATTR:reservation_id": inst.reservation_id,
        "OS-EXT-SRV-ATTR:launch_index": inst.launch_index,
        "flavor": {"original_name": inst.flavor},
        "image": {"id": str(image.id), "name": image.name} if image is not None else "",
        "addresses": addresses,
        "security_groups": [{"name": g} for g in inst.security_groups or []],
        "accessIPv4": "",
        "accessIPv6": "",
        "created": iso(inst.created_at),
        "updated": iso(inst.updated_at),
        "links": [{"rel": "self", "href": link}],
        # The metadata options set on this server (GET .../metadata-options: effective ones).
        "openimds:metadata_options": dict(inst.metadata_options or {}),
    }


def server_brief(inst: Instance, base_url: str = "") -> dict[str, Any]:
    return {"id": inst.uuid, "name": inst.name,
            "links": [{"rel": "self", "href": f"{base_url}/v2.1/servers/{inst.uuid}"}]}


def keypair_dict(kp: KeyPair) -> dict[str, Any]:
    return {
        "name": kp.name,
        "public_key": kp.public_key,
        "fingerprint": kp.fingerprint,
        "user_id": kp.user_id,
        "type": kp.type,
        "created_at": iso(kp.created_at),
    }


def select_fields(items: Iterable[dict[str, Any]], fields: Sequence[str]) -> list[dict[str, Any]]:
    """Neutron's `?fields=a&fields=b`: keep only those keys (all when none are named)."""
    if not fields:
        return list(items)
    return [{k: v for k, v in item.items() if k in fields} for item in items]
