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

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from openimds import wire
from openimds.linux.keepalived import VrrpConf, canonical_cidr, render_vrrp_conf

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


def ha_name(port_id: str) -> str:
    return wire.ha_device(port_id)


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
    return render_vrrp_conf(VrrpConf(
        name=plan.router_id, vr_id=plan.vr_id, device=plan.device,
        vips=((plan.primary, plan.device),), excluded=plan.vips,
        advert_int=plan.advert_int, auth_type=plan.auth_type,
        auth_password=plan.auth_password))


_canonical = canonical_cidr


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
