"""An HA router's keepalived: the pure part (issue 11 item 1).

One keepalived (VRRP only) per HA router, inside its `qrouter-` namespace, speaking VRRP over
the router's `ha-` device on the project's HA network. As Neutron's keepalived.conf:

* every instance starts `state BACKUP` with the same priority and `nopreempt`, so a node
  that comes back never takes the master role from the one holding it (no second outage);
* `virtual_ipaddress` is one address on the ha- device, 169.254.0.<vr_id>/24 (Neutron's
  primary VIP), carried in the advertisements;
* the router's own addresses (each qr- gateway address, and fe80::a9fe:a9fe / the extra IPv6
  metadata addresses on each qr- device) are `virtual_ipaddress_excluded`: only the master
  holds them, so only the master answers ARP/ND for the gateway, gets the guests' packets and
  REDIRECTs them to its proxy. keepalived adds IPv6 VIPs without DAD and sends gratuitous
  ARP / unsolicited NA when it becomes master.

The state is read back from the namespace (`state_from_addresses`): the master is the instance
holding the primary VIP. Neutron runs a keepalived-state-change daemon per router for that;
openimds needs none.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = [
    "ACTIVE",
    "STANDBY",
    "HaPlan",
    "ha_name",
    "primary_vip",
    "render_keepalived_conf",
    "state_from_addresses",
]

ACTIVE = "active"
STANDBY = "standby"
PRIORITY = 50  # Neutron's HA_DEFAULT_PRIORITY: equal everywhere, nopreempt decides
GARP_MASTER_DELAY = 60  # Neutron's: a second round of gratuitous ARPs a minute later


def ha_name(port_id: str) -> str:
    """Neutron's device name for an HA port: 'ha-' + the first 11 characters of its id."""
    return f"ha-{port_id[:11]}"


def primary_vip(vr_id: int) -> str:
    """Neutron's primary VIP of an HA router: 169.254.0.<vr_id>/24 on the ha- device."""
    return f"169.254.0.{vr_id}/24"


@dataclass(frozen=True)
class HaPlan:
    router_id: str
    vr_id: int
    device: str  # ha-<port>
    vips: tuple[tuple[str, str], ...]  # (cidr, device) managed by keepalived besides the primary
    advert_int: int = 2
    auth_type: str | None = None  # AH | PASS, with auth_password
    auth_password: str | None = None

    @property
    def primary(self) -> str:
        return primary_vip(self.vr_id)


def render_keepalived_conf(plan: HaPlan) -> str:
    """keepalived.conf text for one HA router (deterministic: the supervisor compares it with
    the file on disk to decide on a reload)."""
    if not 1 <= plan.vr_id <= 255:
        raise ValueError(f"VRRP id {plan.vr_id} is outside 1..255")
    lines = [
        "global_defs {",
        f"    router_id {plan.router_id[:36]}",
        "    vrrp_garp_master_repeat 5",
        "}",
        f"vrrp_instance VR_{plan.vr_id} {{",
        "    state BACKUP",
        f"    interface {plan.device}",
        f"    virtual_router_id {plan.vr_id}",
        f"    priority {PRIORITY}",
        "    nopreempt",
        f"    advert_int {plan.advert_int}",
        f"    garp_master_delay {GARP_MASTER_DELAY}",
    ]
    if plan.auth_password:
        lines += [
            "    authentication {",
            f"        auth_type {plan.auth_type or 'PASS'}",
            f"        auth_pass {plan.auth_password[:8]}",
            "    }",
        ]
    lines += [
        "    virtual_ipaddress {",
        f"        {plan.primary} dev {plan.device}",
        "    }",
    ]
    if plan.vips:
        lines.append("    virtual_ipaddress_excluded {")
        for cidr, dev in sorted(plan.vips, key=_vip_key):
            lines.append(f"        {_canonical(cidr)} dev {dev}")
        lines.append("    }")
    lines.append("}")
    return "".join(f"{line}\n" for line in lines)


def _canonical(cidr: str) -> str:
    return str(ipaddress.ip_interface(cidr))


def _vip_key(vip: tuple[str, str]) -> tuple[str, int, str]:
    iface = ipaddress.ip_interface(vip[0])
    return (vip[1], iface.version, str(iface))


def state_from_addresses(plan: HaPlan, held: Iterable[tuple[str, str]]) -> str:
    """`active` when the namespace holds the primary VIP on the ha- device, else `standby`.
    `held` is (device, cidr) of the addresses present."""
    want = (plan.device, _canonical(plan.primary))
    return ACTIVE if any((d, _canonical(c)) == want for d, c in held) else STANDBY


def managed_addresses(plan: HaPlan) -> Sequence[tuple[str, str]]:
    """(device, cidr) of every address keepalived adds and removes, which the agent's own
    address sync must leave alone."""
    return [(plan.device, _canonical(plan.primary)),
            *((dev, _canonical(cidr)) for cidr, dev in plan.vips)]
