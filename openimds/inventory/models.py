"""The inventory's tables: the one source of truth every other part reads.

Shapes follow Neutron and Nova so the control-plane API can expose them unchanged. Constraints
that SQL can state (unique MAC per network, unique IP per subnet, foreign keys) are declared here;
the ones it cannot (IP inside its subnet, CIDR overlap on one network) live in `validate.py` and
run before every flush, so no write can bypass them.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from openimds.feed.kinds import Kind

# Explicit constraint names so Alembic migrations are identical on SQLite and PostgreSQL.
NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def new_id() -> str:
    return str(uuid.uuid4())


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Timestamps:
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )


class StandardAttrs:
    """Neutron's standard attributes beyond timestamps: a description and tags."""

    description: Mapped[str] = mapped_column(Text, default="")
    tags: Mapped[list[str] | None] = mapped_column(JSON, nullable=True, default=list)


class Project(Timestamps, Base):
    __tablename__ = "projects"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    # A disabled project issues no tokens (Keystone's `enabled`).
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)


class User(Timestamps, Base):
    __tablename__ = "users"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    # Keystone's default_project_id: the project a token without a scope is for, where the
    # user holds `roles`. Users made over REST may have none (roles then come only from
    # role_assignments).
    project_id: Mapped[str | None] = mapped_column(
        ForeignKey("projects.id", ondelete="RESTRICT"), nullable=True
    )
    # A standard KDF string, e.g. "scrypt$n$r$p$salt$hash" (see control/passwords.py).
    password_hash: Mapped[str] = mapped_column(String(512))
    roles: Mapped[list[str]] = mapped_column(JSON, default=list)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)


class RoleAssignment(Base):
    """A role of a user on a project besides the roles on its default project
    (`PUT /v3/projects/{p}/users/{u}/roles/{r}`)."""

    __tablename__ = "role_assignments"
    user_id: Mapped[str] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    project_id: Mapped[str] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    role: Mapped[str] = mapped_column(String(32), primary_key=True)


class Token(Base):
    """Issued API tokens; only a SHA-256 of the token is stored."""

    __tablename__ = "tokens"
    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    roles: Mapped[list[str]] = mapped_column(JSON, default=list)
    issued_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


class Network(StandardAttrs, Timestamps, Base):
    __tablename__ = "networks"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="RESTRICT"))
    name: Mapped[str] = mapped_column(String(255), default="")
    admin_state_up: Mapped[bool] = mapped_column(Boolean, default=True)
    shared: Mapped[bool] = mapped_column(Boolean, default=False)
    mtu: Mapped[int] = mapped_column(Integer, default=1500)
    # The network's one segment, in Neutron's provider-extension terms (control/segments.py).
    # `local` is the one-host fabric of round 1. `segment_key` ("vxlan:1001",
    # "vlan:physnet1:100", "flat:physnet1"; NULL for local) is unique, so two writers can never
    # take the same VNI, VLAN or flat physnet, even on PostgreSQL under concurrent creates.
    network_type: Mapped[str] = mapped_column(String(16), default="local",
                                              server_default="local")
    physical_network: Mapped[str | None] = mapped_column(String(64), nullable=True)
    segmentation_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    segment_key: Mapped[str | None] = mapped_column(String(96), nullable=True, unique=True)

    subnets: Mapped[list[Subnet]] = relationship(back_populates="network", passive_deletes=True)
    ports: Mapped[list[Port]] = relationship(back_populates="network", passive_deletes=True)


class Subnet(StandardAttrs, Timestamps, Base):
    __tablename__ = "subnets"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    network_id: Mapped[str] = mapped_column(
        ForeignKey("networks.id", ondelete="RESTRICT"), index=True
    )
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="RESTRICT"))
    name: Mapped[str] = mapped_column(String(255), default="")
    ip_version: Mapped[int] = mapped_column(Integer)
    cidr: Mapped[str] = mapped_column(String(64))
    gateway_ip: Mapped[str | None] = mapped_column(String(64), nullable=True)
    enable_dhcp: Mapped[bool] = mapped_column(Boolean, default=True)
    # [{"start": ip, "end": ip}, ...]
    allocation_pools: Mapped[list[dict[str, str]]] = mapped_column(JSON, default=list)
    # [{"destination": cidr, "nexthop": ip}, ...]
    host_routes: Mapped[list[dict[str, str]]] = mapped_column(JSON, default=list)
    dns_nameservers: Mapped[list[str]] = mapped_column(JSON, default=list)
    ipv6_ra_mode: Mapped[str | None] = mapped_column(String(32), nullable=True)
    ipv6_address_mode: Mapped[str | None] = mapped_column(String(32), nullable=True)

    network: Mapped[Network] = relationship(back_populates="subnets")


class Port(StandardAttrs, Timestamps, Base):
    __tablename__ = "ports"
    __table_args__ = (UniqueConstraint("network_id", "mac_address"),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    network_id: Mapped[str] = mapped_column(
        ForeignKey("networks.id", ondelete="RESTRICT"), index=True
    )
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="RESTRICT"))
    name: Mapped[str] = mapped_column(String(255), default="")
    mac_address: Mapped[str] = mapped_column(String(32))
    device_id: Mapped[str] = mapped_column(String(255), default="", index=True)
    device_owner: Mapped[str] = mapped_column(String(255), default="")
    admin_state_up: Mapped[bool] = mapped_column(Boolean, default=True)
    status: Mapped[str] = mapped_column(String(16), default="ACTIVE")
    # True for a port the user created and handed to a server: deleting the server unbinds it
    # instead of deleting it, as Nova does.
    preserve_on_delete: Mapped[bool] = mapped_column(Boolean, default=False)
    # Port binding (Neutron's binding extension): the host whose agents serve this port, and
    # the opaque binding:profile. "" = unbound. binding:vif_type is derived (serializers.py).
    binding_host_id: Mapped[str] = mapped_column(String(255), default="", server_default="",
                                                 index=True)
    binding_profile: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # Neutron's port security: the fabric passes only frames from this port's MAC and fixed
    # IPs plus these [{"ip_address": ip-or-cidr, "mac_address": mac}] (openimds/portsec).
    port_security_enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    allowed_address_pairs: Mapped[list[dict[str, str]]] = mapped_column(JSON, default=list)

    network: Mapped[Network] = relationship(back_populates="ports")
    fixed_ips: Mapped[list[FixedIP]] = relationship(
        back_populates="port", cascade="all, delete-orphan", order_by="FixedIP.id"
    )


class FixedIP(Base):
    """One address of a port. Unique per subnet; indexed by (ip, network) for lookups."""

    __tablename__ = "fixed_ips"
    __table_args__ = (
        UniqueConstraint("subnet_id", "ip_address"),
        Index("ix_fixed_ips_ip_network", "ip_address", "network_id"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    port_id: Mapped[str] = mapped_column(ForeignKey("ports.id", ondelete="CASCADE"), index=True)
    subnet_id: Mapped[str] = mapped_column(
        ForeignKey("subnets.id", ondelete="RESTRICT"), index=True
    )
    # Denormalised from the subnet so the hot lookup (ip, network) needs one index only.
    network_id: Mapped[str] = mapped_column(ForeignKey("networks.id", ondelete="RESTRICT"))
    ip_address: Mapped[str] = mapped_column(String(64))

    port: Mapped[Port] = relationship(back_populates="fixed_ips")


class Router(StandardAttrs, Timestamps, Base):
    """A router. Its interfaces are ports with device_owner network:router_interface and
    device_id = router id, exactly as in Neutron."""

    __tablename__ = "routers"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="RESTRICT"))
    name: Mapped[str] = mapped_column(String(255), default="")
    admin_state_up: Mapped[bool] = mapped_column(Boolean, default=True)
    # HA router (issue 11): built on several L3 agents, one master by VRRP; `ha_vr_id` is its
    # VRRP id, unique among the HA routers of its project (they share one HA network).
    ha: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    ha_vr_id: Mapped[int | None] = mapped_column(Integer, nullable=True)


class SecurityGroup(Timestamps, Base):
    """A Neutron security group. Stored and listed (the EC2 `security-groups` key names the
    groups of an instance); openimds filters no traffic by them."""

    __tablename__ = "security_groups"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(255), default="")
    description: Mapped[str] = mapped_column(Text, default="")
    tags: Mapped[list[str] | None] = mapped_column(JSON, nullable=True, default=list)
    stateful: Mapped[bool] = mapped_column(Boolean, default=True)

    rules: Mapped[list[SecurityGroupRule]] = relationship(
        back_populates="group", cascade="all, delete-orphan", order_by="SecurityGroupRule.id"
    )


class SecurityGroupRule(Timestamps, Base):
    __tablename__ = "security_group_rules"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    security_group_id: Mapped[str] = mapped_column(
        ForeignKey("security_groups.id", ondelete="CASCADE"), index=True
    )
    project_id: Mapped[str] = mapped_column(String(36))
    direction: Mapped[str] = mapped_column(String(8))  # ingress | egress
    ethertype: Mapped[str] = mapped_column(String(8), default="IPv4")
    protocol: Mapped[str | None] = mapped_column(String(40), nullable=True)
    port_range_min: Mapped[int | None] = mapped_column(Integer, nullable=True)
    port_range_max: Mapped[int | None] = mapped_column(Integer, nullable=True)
    remote_ip_prefix: Mapped[str | None] = mapped_column(String(64), nullable=True)
    remote_group_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    description: Mapped[str] = mapped_column(Text, default="")

    group: Mapped[SecurityGroup] = relationship(back_populates="rules")


class Image(Base):
    """An image record (Glance v2 shapes, no bytes). `uuid` is its Glance id; the integer id
    gives the stable EC2 `ami-%08x`, as Nova's s3_images mapping does."""

    __tablename__ = "images"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    uuid: Mapped[str] = mapped_column(String(36), unique=True, default=new_id)
    owner: Mapped[str | None] = mapped_column(String(36), nullable=True)
    visibility: Mapped[str] = mapped_column(String(16), default="public")
    disk_format: Mapped[str | None] = mapped_column(String(32), nullable=True)
    container_format: Mapped[str | None] = mapped_column(String(32), nullable=True)
    min_disk: Mapped[int] = mapped_column(Integer, default=0)
    min_ram: Mapped[int] = mapped_column(Integer, default=0)
    protected: Mapped[bool] = mapped_column(Boolean, default=False)
    # Free-form Glance properties (os_distro, hw_* ...).
    properties: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # Measured from an upload (the bytes themselves are not kept: nothing boots here).
    size: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    checksum: Mapped[str | None] = mapped_column(String(32), nullable=True)
    os_hash_value: Mapped[str | None] = mapped_column(String(128), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )


class Flavor(Timestamps, Base):
    """A Nova flavor; `id` is Nova's flavorid (a string, "1" for m1.tiny)."""

    __tablename__ = "flavors"
    id: Mapped[str] = mapped_column(String(255), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    vcpus: Mapped[int] = mapped_column(Integer)
    ram: Mapped[int] = mapped_column(Integer)  # MiB
    disk: Mapped[int] = mapped_column(Integer)  # GiB
    ephemeral: Mapped[int] = mapped_column(Integer, default=0)
    swap: Mapped[int] = mapped_column(Integer, default=0)
    is_public: Mapped[bool] = mapped_column(Boolean, default=True)
    description: Mapped[str | None] = mapped_column(Text, nullable=True)


class KeyPair(Timestamps, Base):
    __tablename__ = "keypairs"
    __table_args__ = (UniqueConstraint("user_id", "name"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(255))
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    public_key: Mapped[str] = mapped_column(Text)
    fingerprint: Mapped[str] = mapped_column(String(128), default="")
    type: Mapped[str] = mapped_column(String(16), default="ssh")


class Instance(Timestamps, Base):
    """A server. The integer primary key is its stable EC2 id (`i-%08x`), as in Nova."""

    __tablename__ = "instances"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    uuid: Mapped[str] = mapped_column(String(36), unique=True, default=new_id)
    name: Mapped[str] = mapped_column(String(255))
    hostname: Mapped[str] = mapped_column(String(255))
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="RESTRICT"))
    user_id: Mapped[str | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), nullable=True
    )
    availability_zone: Mapped[str | None] = mapped_column(String(255), nullable=True)
    flavor: Mapped[str] = mapped_column(String(255), default="m1.small")
    # The flavor's id at boot; the instance keeps it (and its name) if the flavor is deleted.
    flavor_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    image_id: Mapped[int | None] = mapped_column(
        ForeignKey("images.id", ondelete="RESTRICT"), nullable=True
    )
    key_name: Mapped[str | None] = mapped_column(String(255), nullable=True)
    key_data: Mapped[str | None] = mapped_column(Text, nullable=True)
    user_data: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    # Named `properties` in Python because `metadata` is reserved by SQLAlchemy.
    properties: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)
    launch_index: Mapped[int] = mapped_column(Integer, default=0)
    reservation_id: Mapped[str] = mapped_column(String(255), default="")
    security_groups: Mapped[list[str]] = mapped_column(JSON, default=lambda: ["default"])
    password: Mapped[str | None] = mapped_column(Text, nullable=True)
    status: Mapped[str] = mapped_column(String(16), default="ACTIVE")
    # The metadata options set on this server (metadata/options.py); unset ones follow the
    # cloud-wide [metadata] defaults.
    metadata_options: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    # Nova server tags (os-server-tags, microversion 2.26+).
    tags: Mapped[list[str] | None] = mapped_column(JSON, nullable=True, default=list)

    image: Mapped[Image | None] = relationship()


class Agent(Base):
    """A registered agent (Neutron's `agents` table): one per (agent_type, host). Whether it is
    alive is derived from heartbeat_timestamp (control/agents_logic.py), never stored."""

    __tablename__ = "agents"
    __table_args__ = (UniqueConstraint("agent_type", "host"),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    agent_type: Mapped[str] = mapped_column(String(64))
    binary: Mapped[str] = mapped_column(String(255))
    topic: Mapped[str] = mapped_column(String(255), default="")
    host: Mapped[str] = mapped_column(String(255), index=True)
    availability_zone: Mapped[str | None] = mapped_column(String(255), nullable=True)
    admin_state_up: Mapped[bool] = mapped_column(Boolean, default=True)
    description: Mapped[str] = mapped_column(Text, default="")
    configurations: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    heartbeat_timestamp: Mapped[datetime] = mapped_column(DateTime(timezone=True),
                                                          default=utcnow)


class MetadataTokenUsage(Base):
    """Per-instance counts of requests without a session token and with an invalid one,
    added to by the metadata API (which instances still use IMDSv1). Not desired state: no
    change rows, and kept apart from `instances` so counting never bumps a revision."""

    __tablename__ = "metadata_token_usage"
    instance_uuid: Mapped[str] = mapped_column(String(36), primary_key=True)
    tokenless_requests: Mapped[int] = mapped_column(Integer, default=0)
    invalid_token_requests: Mapped[int] = mapped_column(Integer, default=0)
    last_tokenless_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True),
                                                               nullable=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Change(Base):
    """One committed change: the change feed agents and caches watch."""

    __tablename__ = "changes"
    revision: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    resource: Mapped[str] = mapped_column(String(32))
    resource_id: Mapped[str] = mapped_column(String(64))
    op: Mapped[str] = mapped_column(String(8))  # create | update | delete
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class RevisionCounter(Base):
    """A single row whose value is the newest revision. Writers take its row lock, so on
    PostgreSQL revisions become visible in commit order (a sequence alone would not)."""

    __tablename__ = "revision_counter"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    value: Mapped[int] = mapped_column(Integer, default=0)


# Which model classes produce change rows, and under which kind (`openimds.feed.Kind`, pinned
# to these models one to one by tests/feed/test_kinds.py).
TRACKED: dict[type[Base], Kind] = {
    Project: Kind.PROJECT,
    Network: Kind.NETWORK,
    Subnet: Kind.SUBNET,
    Port: Kind.PORT,
    Router: Kind.ROUTER,
    Instance: Kind.INSTANCE,
    KeyPair: Kind.KEYPAIR,
}
