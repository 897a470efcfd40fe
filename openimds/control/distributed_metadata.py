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
starts, so switching `metadata_mode` and restarting the control API creates or removes every
port in one sweep (the agents follow from the change feed). Ports of the old shape (addresses on
subnets that are gone or no longer DHCP-enabled) are corrected in place: the address a guest
was leased stays as long as its subnet does.
"""

from __future__ import annotations

import logging

from sqlalchemy import select
from sqlalchemy.orm import Session

from openimds.inventory.models import FixedIP, Network, Port, Subnet
from openimds.inventory.store import Store

__all__ = ["DISTRIBUTED_OWNER", "METADATA_MODES", "metadata_device_id", "sync_all_metadata_ports",
           "sync_metadata_port"]

LOG = logging.getLogger(__name__)

DISTRIBUTED_OWNER = "network:distributed"
METADATA_MODES = ("network_node", "distributed")
DEVICE_PREFIX = "qmeta-"


def metadata_device_id(network_id: str) -> str:
    return f"{DEVICE_PREFIX}{network_id}"


def sync_metadata_port(session: Session, network: Network, mode: str) -> None:
    """Make `network`'s distributed metadata port match `mode` (idempotent)."""
    from openimds.control import ipam
    from openimds.control.ports import build_port

    session.flush()
    device_id = metadata_device_id(network.id)
    ports = list(session.scalars(select(Port).where(
        Port.network_id == network.id, Port.device_owner == DISTRIBUTED_OWNER,
        Port.device_id == device_id).order_by(Port.created_at, Port.id)))
    wanted: list[Subnet] = []
    if mode == "distributed":
        wanted = list(session.scalars(
            select(Subnet).where(Subnet.network_id == network.id, Subnet.ip_version == 4,
                                 Subnet.enable_dhcp.is_(True))
            .order_by(Subnet.created_at, Subnet.id)))
    if not wanted:
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
    wanted_ids = {s.id for s in wanted}
    for fip in list(port.fixed_ips):
        if fip.subnet_id not in wanted_ids:
            port.fixed_ips.remove(fip)
    session.flush()
    have = {f.subnet_id for f in port.fixed_ips}
    for subnet in wanted:
        if subnet.id not in have:
            port.fixed_ips.append(FixedIP(subnet_id=subnet.id, network_id=network.id,
                                          ip_address=ipam.allocate_ip(session, subnet,
                                                                     port.mac_address)))
            session.flush()


def sync_all_metadata_ports(store: Store, mode: str) -> int:
    """One sweep over every network (control-API start); returns how many networks changed
    (a network whose port is already right writes nothing)."""
    changed = 0
    with store.session() as s:
        ids = list(s.scalars(select(Network.id).order_by(Network.id)))
    for network_id in ids:
        with store.session() as s:
            network = s.get(Network, network_id)
            if network is None:
                continue
            before = _shape(s, network_id)
            sync_metadata_port(s, network, mode)
            if _shape(s, network_id) != before:
                changed += 1
    if changed:
        LOG.info("metadata_mode %s: distributed metadata ports updated on %d networks",
                 mode, changed)
    return changed


def _shape(s: Session, network_id: str) -> tuple[tuple[str, tuple[str, ...]], ...]:
    ports = s.scalars(select(Port).where(Port.network_id == network_id,
                                         Port.device_owner == DISTRIBUTED_OWNER))
    return tuple(sorted((p.id, tuple(sorted(f.subnet_id for f in p.fixed_ips)))
                        for p in ports))
