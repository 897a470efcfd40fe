"""The metadata API's reads and its one write in the inventory, as plain records.

Every SQLAlchemy query of `StoreSource` (store_source.py) lives here: each function takes an
open session and returns plain values (`InstanceView`, `Deps`, `AddressMatch`, `PortFacts`,
`KeyFacts`, `PasswordResult`), which the cache (view_cache.py) consumes without knowing SQL.
`DATABASE_DOWN` names what a database that is away raises through the Store.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from sqlalchemy import exc as sa_exc
from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from openimds.inventory.errors import StoreUnavailable
from openimds.inventory.models import (
    FixedIP,
    Instance,
    KeyPair,
    Network,
    Port,
    SecurityGroup,
    Subnet,
)
from openimds.metadata.source import AddressMatch, PasswordResult
from openimds.metadata.view import FixedIPView, InstanceView, KeyPairView, PortView, SubnetView
from openimds.metadata.view_cache import Deps, DhcpServers, KeyFacts, PortFacts
from openimds.wire import DHCP_OWNER, ROUTER_INTERFACE_OWNERS

__all__ = ["DATABASE_DOWN", "address_matches", "changed_facts", "load_dhcp_servers",
           "load_view", "provider_matches", "write_password"]

# What a database that is down, restarting or unreachable raises through the Store.
DATABASE_DOWN = (
    StoreUnavailable,
    sa_exc.OperationalError,
    sa_exc.InterfaceError,
    sa_exc.DisconnectionError,
    sa_exc.TimeoutError,
)
GONE_STATUSES = ("DELETED", "SOFT_DELETED")


def load_dhcp_servers(session: Session, network_id: str) -> DhcpServers:
    # By network (indexed), not by subnet: fixed_ips.subnet_id has no index of its own, and
    # scanning every fixed IP per miss made a 10,000-instance cold start take minutes.
    rows = session.execute(
        select(FixedIP.subnet_id, FixedIP.ip_address, Port.id)
        .join(FixedIP, FixedIP.port_id == Port.id)
        .where(Port.network_id == network_id, Port.device_owner == DHCP_OWNER)
        .order_by(FixedIP.id)
    )
    by_subnet: dict[str, str] = {}
    port_ids: set[str] = set()
    for subnet_id, ip, port_id in rows:
        by_subnet.setdefault(subnet_id, ip)
        port_ids.add(port_id)
    return DhcpServers(by_subnet, frozenset(port_ids))


def _subnet_view(subnet: Subnet, dhcp_server: str | None) -> SubnetView:
    return SubnetView(
        id=subnet.id,
        cidr=subnet.cidr,
        ip_version=subnet.ip_version,
        gateway_ip=subnet.gateway_ip,
        host_routes=tuple((r["destination"], r["nexthop"]) for r in subnet.host_routes or ()),
        dns_nameservers=tuple(subnet.dns_nameservers or ()),
        enable_dhcp=bool(subnet.enable_dhcp),
        ipv6_ra_mode=subnet.ipv6_ra_mode,
        ipv6_address_mode=subnet.ipv6_address_mode,
        dhcp_server=dhcp_server,
    )


def load_view(
    session: Session, uuid: str, dhcp_cache: Mapping[str, DhcpServers] | None = None
) -> tuple[InstanceView, Deps] | None:
    """Read one instance and everything its trees show, or None if it does not exist.

    `dhcp_cache` holds DHCP servers already known per network; the ones read here are
    returned in `Deps.dhcp` for the caller to cache.
    """
    inst = session.scalar(
        select(Instance).options(selectinload(Instance.image)).where(Instance.uuid == uuid)
    )
    if inst is None or inst.status in GONE_STATUSES:
        return None
    deps = Deps()
    ports = session.scalars(
        select(Port)
        .options(selectinload(Port.fixed_ips))
        .where(Port.device_id == uuid)
        # Only the instance's own project's ports: anyone else's port naming this instance as
        # its device must not add links, routes or DNS servers to its trees.
        .where(Port.project_id == inst.project_id)
        # Attach order stands in for nova's VIF order.
        .order_by(Port.created_at, Port.id)
    ).all()
    subnet_ids = {fip.subnet_id for p in ports for fip in p.fixed_ips}
    network_ids = {p.network_id for p in ports}
    subnets = (
        {s.id: s for s in session.scalars(select(Subnet).where(Subnet.id.in_(subnet_ids)))}
        if subnet_ids
        else {}
    )
    mtus = (
        {
            row[0]: row[1]
            for row in session.execute(
                select(Network.id, Network.mtu).where(Network.id.in_(network_ids))
            )
        }
        if network_ids
        else {}
    )
    dhcp_servers: dict[str, str] = {}
    for network_id in sorted(network_ids):
        known = (dhcp_cache or {}).get(network_id)
        if known is None:
            known = deps.dhcp[network_id] = load_dhcp_servers(session, network_id)
        dhcp_servers.update(known.by_subnet)
    port_views = []
    for port in ports:
        fixed = tuple(
            FixedIPView(
                fip.ip_address,
                _subnet_view(subnets[fip.subnet_id], dhcp_servers.get(fip.subnet_id)),
            )
            for fip in port.fixed_ips
            if fip.subnet_id in subnets
        )
        port_views.append(
            PortView(
                id=port.id,
                mac_address=port.mac_address,
                network_id=port.network_id,
                mtu=mtus.get(port.network_id),
                fixed_ips=fixed,
            )
        )
        deps.ports.add(port.id)
    deps.subnets = set(subnet_ids)
    deps.networks = set(network_ids)
    keypair = None
    if inst.key_name:
        deps.keypair = (inst.user_id, inst.key_name)
        query = select(KeyPair).where(KeyPair.name == inst.key_name)
        query = query.where(
            KeyPair.user_id == inst.user_id
            if inst.user_id
            else KeyPair.project_id == inst.project_id
        )
        record = session.scalars(query.order_by(KeyPair.id)).first()
        if record is not None:
            keypair = KeyPairView(record.name, record.public_key, record.type or "ssh")
    group_names = tuple(inst.security_groups or ())
    group_ids: dict[str, str] = {}
    if group_names:
        for group in session.scalars(select(SecurityGroup).where(
                SecurityGroup.project_id == inst.project_id,
                SecurityGroup.name.in_(group_names)).order_by(SecurityGroup.created_at)):
            group_ids.setdefault(group.name, group.id)
    image = inst.image
    view = InstanceView(
        uuid=inst.uuid,
        ec2_id=inst.id,
        name=inst.name,
        hostname=inst.hostname,
        project_id=inst.project_id,
        availability_zone=inst.availability_zone,
        flavor=inst.flavor,
        image_name=image.name if image is not None else None,
        image_ec2_id=image.id if image is not None else None,
        image_uuid=image.uuid if image is not None else None,
        key_name=inst.key_name,
        key_data=inst.key_data,
        keypair=keypair,
        user_data=inst.user_data,
        metadata={str(k): v for k, v in (inst.properties or {}).items()},
        launch_index=inst.launch_index,
        reservation_id=inst.reservation_id,
        security_groups=group_names,
        security_group_ids=tuple(group_ids[n] for n in group_names if n in group_ids),
        created_at=inst.created_at,
        password=inst.password or None,
        ports=tuple(port_views),
        metadata_options=dict(inst.metadata_options or {}),
    )
    return view, deps


def address_matches(session: Session, address: str) -> tuple[list[AddressMatch], set[str]]:
    """The ports holding `address` that name a device, and the ids of every port holding it."""
    rows = list(
        session.execute(
            select(Port.id, Port.network_id, Port.device_id, Port.project_id)
            .join(FixedIP, FixedIP.port_id == Port.id)
            .where(FixedIP.ip_address == address)
            .order_by(Port.id)
        )
    )
    # Ports without a device (and the routers' and DHCP's own) do not identify an instance,
    # but their ids are kept so a later device assignment invalidates this entry.
    matches = [
        AddressMatch(port_id, network_id, device_id, project_id)
        for port_id, network_id, device_id, project_id in rows
        if device_id
    ]
    return matches, {row[0] for row in rows}


def provider_matches(session: Session, provider: str, address: str) -> list[AddressMatch] | None:
    """A provider serves the network whose id it is, or the networks of the router whose
    id it is (the inventory has no `advanced_service_providers`)."""
    networks = set(session.scalars(select(Network.id).where(Network.id == provider)))
    networks |= set(
        session.scalars(
            select(Port.network_id).where(
                Port.device_id == provider, Port.device_owner.in_(ROUTER_INTERFACE_OWNERS)
            )
        )
    )
    has_subnets = networks and session.scalar(
        select(Subnet.id).where(Subnet.network_id.in_(networks)).limit(1)
    )
    if not has_subnets:
        return None
    rows = session.execute(
        select(Port.id, Port.network_id, Port.device_id, Port.project_id)
        .join(FixedIP, FixedIP.port_id == Port.id)
        .where(FixedIP.ip_address == address, Port.network_id.in_(networks))
    )
    return [AddressMatch(*row) for row in rows]


def write_password(session: Session, uuid: str, password: str) -> PasswordResult:
    """Set the instance's password once (in a write session)."""
    inst = session.scalar(select(Instance).where(Instance.uuid == uuid).with_for_update())
    if inst is None or inst.status in GONE_STATUSES:
        return PasswordResult.NOT_FOUND
    # Checked under the row lock (BEGIN IMMEDIATE on SQLite): write-once for real,
    # unlike nova's check against a possibly stale cache.
    if inst.password:
        return PasswordResult.ALREADY_SET
    inst.password = password
    return PasswordResult.SET


def changed_facts(
    session: Session, port_ids: Iterable[str], key_ids: Iterable[str]
) -> tuple[list[PortFacts], list[KeyFacts]]:
    """The changed ports and key pairs as they are now (empty facts for deleted ones)."""
    port_ids, key_ids = set(port_ids), set(key_ids)
    found: dict[str, PortFacts] = {}
    if port_ids:
        for port in session.scalars(
            select(Port).options(selectinload(Port.fixed_ips)).where(Port.id.in_(port_ids))
        ):
            found[port.id] = PortFacts(
                port.id,
                port.device_id,
                port.device_owner,
                port.network_id,
                tuple(f.ip_address for f in port.fixed_ips),
            )
    ports = [found.get(pid) or PortFacts(pid) for pid in port_ids]
    int_ids = [int(k) for k in key_ids if k.isdigit()]
    records = (
        {str(k.id): k for k in session.scalars(select(KeyPair).where(KeyPair.id.in_(int_ids)))}
        if int_ids
        else {}
    )
    keys = []
    for kid in key_ids:
        rec = records.get(kid)
        keys.append(KeyFacts(kid, rec.user_id if rec else None, rec.name if rec else None))
    return ports, keys
