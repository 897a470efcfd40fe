"""The metadata next hop port of a network served by several DHCP agents (issue 11 item 2).

One port per network, device_owner `network:metadata`, device_id `metadata-<network>`,
unbound, with one address on each DHCP-enabled IPv4 subnet. Its address is the
169.254.169.254/32 next hop that options 121/249 hand out on those subnets instead of a DHCP
port's own address, and keepalived moves it among the network's DHCP namespaces
(openimds/dhcp/vrrp.py), so a guest's route stays right when the DHCP node that leased it is
gone. Admins see it in port listings like the DHCP ports.

Level-triggered: `sync_metadata_vip_port` runs in the same transaction as every change of the
network's DHCP ports (`subnets.sync_dhcp_port`: subnet create/update/delete, agent scheduling,
admin add/remove of a network to an agent), and decides from the rows alone
(`wants_metadata_vip`):

* it is created once the network has two DHCP ports (dhcp_agents_per_network >= 2 and two
  agents serving it) and a DHCP-enabled IPv4 subnet;
* once there, it stays while such a subnet exists, even if the network drops back to one DHCP
  agent: guests hold the address as their route for a whole lease, and the one remaining DHCP
  namespace then holds it without VRRP. Deleting it would hand a dead route to every guest
  that leased it (the very thing this port is for);
* it goes with the last DHCP-enabled IPv4 subnet (and with the network).
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from openimds.inventory.models import FixedIP, Network, Port, Subnet
from openimds.wire import METADATA_OWNER

__all__ = ["metadata_vip_device_id", "sync_metadata_vip_port",
           "wants_metadata_vip"]

DHCP_OWNER = "network:dhcp"


def metadata_vip_device_id(network_id: str) -> str:
    return f"metadata-{network_id}"


def wants_metadata_vip(v4_dhcp_subnets: int, dhcp_ports: int, exists: bool) -> bool:
    """Whether the network should hold its metadata next hop port (pure; module docstring)."""
    if v4_dhcp_subnets == 0:
        return False
    return exists or dhcp_ports >= 2


def sync_metadata_vip_port(session: Session, network: Network) -> None:
    """Make `network`'s metadata next hop port match the rule above (idempotent)."""
    from openimds.control import ipam
    from openimds.control.ports import build_port

    session.flush()
    ports = list(session.scalars(select(Port).where(
        Port.network_id == network.id, Port.device_owner == METADATA_OWNER)
        .order_by(Port.created_at, Port.id)))
    subnets = list(session.scalars(
        select(Subnet).where(Subnet.network_id == network.id, Subnet.ip_version == 4,
                             Subnet.enable_dhcp.is_(True))
        .order_by(Subnet.created_at, Subnet.id)))
    dhcp_ports = len(list(session.scalars(select(Port.id).where(
        Port.network_id == network.id, Port.device_owner == DHCP_OWNER))))
    if not wants_metadata_vip(len(subnets), dhcp_ports, bool(ports)):
        for port in ports:
            session.delete(port)
        session.flush()
        return
    for extra in ports[1:]:  # two writers raced: the oldest stays (the one guests may hold)
        session.delete(extra)
    if not ports:
        build_port(session, network, network.project_id,
                   fixed_ips=[{"subnet_id": s.id} for s in subnets],
                   device_id=metadata_vip_device_id(network.id), device_owner=METADATA_OWNER)
        session.flush()
        return
    port = ports[0]
    wanted = {s.id for s in subnets}
    for fip in list(port.fixed_ips):
        if fip.subnet_id not in wanted:
            port.fixed_ips.remove(fip)
    session.flush()
    have = {f.subnet_id for f in port.fixed_ips}
    for subnet in subnets:
        if subnet.id not in have:
            port.fixed_ips.append(FixedIP(subnet_id=subnet.id, network_id=network.id,
                                          ip_address=ipam.allocate_ip(session, subnet,
                                                                     port.mac_address)))
            session.flush()
