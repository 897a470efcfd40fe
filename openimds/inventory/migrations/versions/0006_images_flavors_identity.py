"""images as Glance records (uuid, formats, visibility, properties, measured uploads),
flavors (seeded m1.tiny..m1.xlarge), instances.flavor_id and tags; identity administration:
projects.enabled, users.project_id optional, role_assignments; security groups and rules; description and tags of networks, subnets,
ports and routers

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

# Nova's classic flavors: (flavorid, name, vcpus, ram MiB, disk GiB).
SEED_FLAVORS = (
    ("1", "m1.tiny", 1, 512, 1),
    ("2", "m1.small", 1, 2048, 20),
    ("3", "m1.medium", 2, 4096, 40),
    ("4", "m1.large", 4, 8192, 80),
    ("5", "m1.xlarge", 8, 16384, 160),
)



def upgrade() -> None:
    now = datetime.now(UTC)
    with op.batch_alter_table("images") as batch:
        batch.add_column(sa.Column("uuid", sa.String(36), nullable=True))
        batch.add_column(sa.Column("owner", sa.String(36), nullable=True))
        batch.add_column(sa.Column("visibility", sa.String(16), nullable=False,
                                   server_default="public"))
        batch.add_column(sa.Column("disk_format", sa.String(32), nullable=True))
        batch.add_column(sa.Column("container_format", sa.String(32), nullable=True))
        batch.add_column(sa.Column("min_disk", sa.Integer(), nullable=False,
                                   server_default="0"))
        batch.add_column(sa.Column("min_ram", sa.Integer(), nullable=False,
                                   server_default="0"))
        batch.add_column(sa.Column("protected", sa.Boolean(), nullable=False,
                                   server_default=sa.false()))
        batch.add_column(sa.Column("properties", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("size", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("checksum", sa.String(32), nullable=True))
        batch.add_column(sa.Column("os_hash_value", sa.String(128), nullable=True))
        batch.add_column(sa.Column("created_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True))
    # Round-1 images were bare names: give each a Glance id and timestamps.
    conn = op.get_bind()
    images = sa.table("images", sa.column("id", sa.Integer()), sa.column("uuid", sa.String()),
                      sa.column("properties", sa.JSON()),
                      sa.column("created_at", sa.DateTime(timezone=True)),
                      sa.column("updated_at", sa.DateTime(timezone=True)))
    for (image_id,) in conn.execute(sa.select(images.c.id)).all():
        conn.execute(images.update().where(images.c.id == image_id).values(
            uuid=str(uuid.uuid4()), properties={}, created_at=now, updated_at=now))
    with op.batch_alter_table("images") as batch:
        batch.alter_column("uuid", existing_type=sa.String(36), nullable=False)
        batch.alter_column("properties", existing_type=sa.JSON(), nullable=False)
        batch.alter_column("created_at", existing_type=sa.DateTime(timezone=True),
                           nullable=False)
        batch.alter_column("updated_at", existing_type=sa.DateTime(timezone=True),
                           nullable=False)
        batch.create_unique_constraint("uq_images_uuid", ["uuid"])

    flavors = op.create_table(
        "flavors",
        sa.Column("id", sa.String(255), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("vcpus", sa.Integer(), nullable=False),
        sa.Column("ram", sa.Integer(), nullable=False),
        sa.Column("disk", sa.Integer(), nullable=False),
        sa.Column("ephemeral", sa.Integer(), nullable=False),
        sa.Column("swap", sa.Integer(), nullable=False),
        sa.Column("is_public", sa.Boolean(), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_flavors"),
        sa.UniqueConstraint("name", name="uq_flavors_name"),
    )
    op.bulk_insert(flavors, [
        {"id": fid, "name": name, "vcpus": vcpus, "ram": ram, "disk": disk, "ephemeral": 0,
         "swap": 0, "is_public": True, "description": None, "created_at": now,
         "updated_at": now}
        for fid, name, vcpus, ram, disk in SEED_FLAVORS])

    with op.batch_alter_table("instances") as batch:
        batch.add_column(sa.Column("flavor_id", sa.String(255), nullable=True))
        batch.add_column(sa.Column("tags", sa.JSON(), nullable=True))

    with op.batch_alter_table("projects") as batch:
        batch.add_column(sa.Column("enabled", sa.Boolean(), nullable=False,
                                   server_default=sa.true()))
    with op.batch_alter_table("users") as batch:
        batch.alter_column("project_id", existing_type=sa.String(36), nullable=True)
    op.create_table(
        "role_assignments",
        sa.Column("user_id", sa.String(36), nullable=False),
        sa.Column("project_id", sa.String(36), nullable=False),
        sa.Column("role", sa.String(32), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE",
                                name="fk_role_assignments_user_id_users"),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"], ondelete="CASCADE",
                                name="fk_role_assignments_project_id_projects"),
        sa.PrimaryKeyConstraint("user_id", "project_id", "role", name="pk_role_assignments"),
    )
    op.create_index("ix_role_assignments_project_id", "role_assignments", ["project_id"])

    for table in ("networks", "subnets", "ports", "routers"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("description", sa.Text(), nullable=False,
                                       server_default=""))
            batch.add_column(sa.Column("tags", sa.JSON(), nullable=True))

    op.create_table(
        "security_groups",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("project_id", sa.String(36), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("tags", sa.JSON(), nullable=True),
        sa.Column("stateful", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"], ondelete="CASCADE",
                                name="fk_security_groups_project_id_projects"),
        sa.PrimaryKeyConstraint("id", name="pk_security_groups"),
    )
    op.create_index("ix_security_groups_project_id", "security_groups", ["project_id"])
    op.create_table(
        "security_group_rules",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("security_group_id", sa.String(36), nullable=False),
        sa.Column("project_id", sa.String(36), nullable=False),
        sa.Column("direction", sa.String(8), nullable=False),
        sa.Column("ethertype", sa.String(8), nullable=False),
        sa.Column("protocol", sa.String(40), nullable=True),
        sa.Column("port_range_min", sa.Integer(), nullable=True),
        sa.Column("port_range_max", sa.Integer(), nullable=True),
        sa.Column("remote_ip_prefix", sa.String(64), nullable=True),
        sa.Column("remote_group_id", sa.String(36), nullable=True),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["security_group_id"], ["security_groups.id"],
                                ondelete="CASCADE",
                                name="fk_security_group_rules_security_group_id_security_groups"),
        sa.PrimaryKeyConstraint("id", name="pk_security_group_rules"),
    )
    op.create_index("ix_security_group_rules_security_group_id", "security_group_rules",
                    ["security_group_id"])


def downgrade() -> None:
    op.drop_index("ix_security_group_rules_security_group_id",
                  table_name="security_group_rules")
    op.drop_table("security_group_rules")
    op.drop_index("ix_security_groups_project_id", table_name="security_groups")
    op.drop_table("security_groups")
    for table in ("networks", "subnets", "ports", "routers"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("tags")
            batch.drop_column("description")
    op.drop_index("ix_role_assignments_project_id", table_name="role_assignments")
    op.drop_table("role_assignments")
    with op.batch_alter_table("users") as batch:
        batch.alter_column("project_id", existing_type=sa.String(36), nullable=False)
    with op.batch_alter_table("projects") as batch:
        batch.drop_column("enabled")
    with op.batch_alter_table("instances") as batch:
        batch.drop_column("tags")
        batch.drop_column("flavor_id")
    op.drop_table("flavors")
    with op.batch_alter_table("images") as batch:
        batch.drop_constraint("uq_images_uuid", type_="unique")
        for column in ("updated_at", "created_at", "os_hash_value", "checksum", "size",
                       "properties", "protected", "min_ram",
                       "min_disk", "container_format", "disk_format", "visibility", "owner",
                       "uuid"):
            batch.drop_column(column)
