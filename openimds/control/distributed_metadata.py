"""The distributed metadata port of each network (`[DEFAULT] metadata_mode = distributed`).

In `distributed` mode every network with a DHCP-enabled IPv4 subnet (isolated or routed: both
route 169.254.169.254/32 via this port in distributed mode) holds exactly one port owned by
`network:distributed`, device_id `qmeta-<network>`, unbound (it lives on every compute host at
once, OVN's "localport"), with one address on each such subnet and a MAC of its own. In
`network_node` mode no such port exists. The DHCP agents route option 121/249 to its address
(`openimds.dhcp.plan.metadata_next_hop`) and the l2-agent of every host with an instance port
on the network plugs it into a `qmeta-<network>` namespace (`openimds.l2.metadata`).

Level-triggered from the control plane: `sync_metadata_port` runs in the same transaction as
every subnet create/update/delete, and `sync_all_metadata_ports` once when the control API
starts, so switching `metadata_mode` and restarting the control API creates or retires every
port in one sweep (the agents follow from the change feed). Ports of the old shape (addresses on
subnets that are gone or no longer DHCP-enabled) are corrected in place: the address a guest
was leased stays as long as its subnet does.

Back to `network_node`, a port is not deleted but *retires* until the last lease that routes
metadata through it has ended (`openimds.metadata_retirement`): the sweep marks it, and
`retire_forever` deletes it at its deadline. Switching to `distributed` again before then
clears the mark, so guests keep the address they leased.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from openimds import wire
from openimds.inventory.models import FixedIP, Network, Port, Subnet
from openimds.inventory.store import Store
from openimds.metadata_retirement import RETIRING_KEY, retire_deadline, retired, retiring_until
from openimds.wire import DISTRIBUTED_OWNER

__all__ = ["METADATA_MODES", "metadata_device_id", "next_retirement",
           "retire_forever", "sync_all_metadata_ports", "sync_metadata_port"]

LOG = logging.getLogger(__name__)

METADATA_MODES = ("network_node", "distributed")
DEVICE_PREFIX = wire.METADATA_NAMESPACE_PREFIX


def metadata_device_id(network_id: str) -> str:
    return f"{DEVICE_PREFIX}{network_id}"


def sync_metadata_port(session: Session, network: Network, mode: str, *,
                       lease_seconds: int = 86400, now: datetime | None = None) -> None:
    """Make `network`'s distributed metadata port match `mode` (idempotent). In
    `network_node` mode an existing port retires for `lease_seconds` (module doc)."""
    from openimds.control import ipam
    from openimds.control.ports import build_port

    session.flush()
    now = now or datetime.now(UTC)
    device_id = metadata_device_id(network.id)
    ports = list(session.scalars(select(Port).where(
        Port.network_id == network.id, Port.device_owner == DISTRIBUTED_OWNER,
        Port.device_id == device_id).order_by(Port.created_at, Port.id)))
    wanted = list(session.scalars(
        select(Subnet).where(Subnet.network_id == network.id, Subnet.ip_version == 4,
                             Subnet.enable_dhcp.is_(True))
        .order_by(Subnet.created_at, Subnet.id)))
    if not wanted or (mode != "distributed" and not ports):
        for port in ports:
            session.delete(port)
        session.flush()
        return
    for extra in ports[1:]:  # two sweeps racing: the oldest port stays
        session.delete(extra)
    if not ports:
        build_port(session, network, network.project_id,
                   fixed_ips=[{"subnet_id": s.id} for s in wanted],
                   device_id=device_id, device_owner=DISTRIBUTED_OWNER)
        session.flush()
        return
    port = ports[0]
    profile = dict(port.binding_profile or {})
    if mode == "distributed":
        if RETIRING_KEY in profile:  # back before the deadline: the same address serves again
            profile.pop(RETIRING_KEY)
            port.binding_profile = profile
    elif retired(profile, now):
        session.delete(port)
        session.flush()
        return
    elif retiring_until(profile) is None:
        port.binding_profile = {**profile, RETIRING_KEY: retire_deadline(now, lease_seconds)}
    wanted_ids = {s.id for s in wanted}
    for fip in list(port.fixed_ips):
        if fip.subnet_id not in wanted_ids:
            port.fixed_ips.remove(fip)
    session.flush()
    if mode != "distributed":
        return  # a retiring port serves old leases only: no address on a new subnet
    have = {f.subnet_id for f in port.fixed_ips}
    for subnet in wanted:
        if subnet.id not in have:
            port.fixed_ips.append(FixedIP(subnet_id=subnet.id, network_id=network.id,
                                          ip_address=ipam.allocate_ip(session, subnet,
                                                                     port.mac_address)))
            session.flush()


def sync_all_metadata_ports(store: Store, mode: str, *, lease_seconds: int = 86400,
                            now: datetime | None = None) -> int:
    """One sweep over every network (control-API start); returns how many networks changed
    (a network whose port is already right writes nothing)."""
    changed = 0
    now = now or datetime.now(UTC)
    with store.session() as s:
        ids = list(s.scalars(select(Network.id).order_by(Network.id)))
    for network_id in ids:
        with store.session() as s:
            network = s.get(Network, network_id)
            if network is None:
                continue
            before = _shape(s, network_id)
            sync_metadata_port(s, network, mode, lease_seconds=lease_seconds, now=now)
            if _shape(s, network_id) != before:
                changed += 1
    if changed:
        LOG.info("metadata_mode %s: distributed metadata ports updated on %d networks",
                 mode, changed)
    return changed


def next_retirement(store: Store) -> datetime | None:
    """The earliest deadline of a retiring metadata port (None: none retires, or never)."""
    with store.session() as s:
        profiles = list(s.scalars(select(Port.binding_profile).where(
            Port.device_owner == DISTRIBUTED_OWNER)))
    deadlines = [d for d in map(retiring_until, profiles) if isinstance(d, datetime)]
    return min(deadlines) if deadlines else None


async def retire_forever(store: Store, mode: str, lease_seconds: int) -> None:
    """The control API's start-up sweep, then one more at each retiring port's deadline (a
    retirement only starts with a sweep, so with none pending this ends)."""
    while True:
        try:
            await asyncio.to_thread(sync_all_metadata_ports, store, mode,
                                    lease_seconds=lease_seconds)
            deadline = await asyncio.to_thread(next_retirement, store)
        except Exception as exc:
            LOG.warning("metadata_mode sweep failed (%s); retrying in 60 s", exc)
            await asyncio.sleep(60)
            continue
        if deadline is None:
            return
        # A little after the deadline: `retired` is true from the deadline on.
        await asyncio.sleep(max(0.0, (deadline - datetime.now(UTC)).total_seconds()) + 0.5)


def _shape(s: Session, network_id: str) -> tuple[tuple[str, tuple[str, ...], str], ...]:
    ports = s.scalars(select(Port).where(Port.network_id == network_id,
                                         Port.device_owner == DISTRIBUTED_OWNER))
    return tuple(sorted((p.id, tuple(sorted(f.subnet_id for f in p.fixed_ips)),
                         str((p.binding_profile or {}).get(RETIRING_KEY, "")))
                        for p in ports))
