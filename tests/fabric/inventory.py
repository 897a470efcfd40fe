"""Neutron-shaped rows for the fake inventory (openimds.feed.MemoryFeed)."""

from __future__ import annotations

import uuid
from typing import Any

from tests.fabric.lab import now_iso


def mac() -> str:
    b = uuid.uuid4().bytes
    return "fa:16:3e:" + ":".join(f"{x:02x}" for x in b[:3])


def network(nid: str, subnets: list[str], mtu: int = 1500) -> dict[str, Any]:
    return {"id": nid, "name": f"net-{nid[:4]}", "project_id": "p1", "mtu": mtu,
            "subnets": subnets}


def subnet(sid: str, nid: str, cidr: str, gateway: str | None, **kw: Any) -> dict[str, Any]:
    return {"id": sid, "network_id": nid, "cidr": cidr, "ip_version": 4,
            "gateway_ip": gateway, "enable_dhcp": True, "host_routes": [],
            "dns_nameservers": [], **kw}


def port(pid: str, nid: str, sid: str, ip: str, owner: str, device_id: str) -> dict[str, Any]:
    return {"id": pid, "network_id": nid, "mac_address": mac(),
            "fixed_ips": [{"subnet_id": sid, "ip_address": ip}],
            "device_owner": owner, "device_id": device_id, "created_at": now_iso()}


def router(rid: str) -> dict[str, Any]:
    return {"id": rid, "name": f"r-{rid[:4]}", "project_id": "p1"}
