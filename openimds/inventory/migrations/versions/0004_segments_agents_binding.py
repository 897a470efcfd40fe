"""several hosts: network segments (provider extension), the agent registry, port binding

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("networks") as batch:
        batch.add_column(sa.Column("network_type", sa.String(16), nullable=False,
                                   server_default="local"))
        batch.add_column(sa.Column("physical_network", sa.String(64), nullable=True))
        batch.add_column(sa.Column("segmentation_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("segment_key", sa.String(96), nullable=True))
        batch.create_unique_constraint("uq_networks_segment_key", ["segment_key"])
    with op.batch_alter_table("ports") as batch:
        batch.add_column(sa.Column("binding_host_id", sa.String(255), nullable=False,
                                   server_default=""))
        batch.add_column(sa.Column("binding_profile", sa.JSON(), nullable=False,
                                   server_default="{}"))
        batch.create_index("ix_ports_binding_host_id", ["binding_host_id"])
    op.create_table(
        "agents",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("agent_type", sa.String(64), nullable=False),
        sa.Column("binary", sa.String(255), nullable=False),
        sa.Column("topic", sa.String(255), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("availability_zone", sa.String(255), nullable=True),
        sa.Column("admin_state_up", sa.Boolean(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("configurations", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_timestamp", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_agents"),
        sa.UniqueConstraint("agent_type", "host", name="uq_agents_agent_type_host"),
    )
    op.create_index("ix_agents_host", "agents", ["host"])


def downgrade() -> None:
    op.drop_index("ix_agents_host", table_name="agents")
    op.drop_table("agents")
    with op.batch_alter_table("ports") as batch:
        batch.drop_index("ix_ports_binding_host_id")
        batch.drop_column("binding_profile")
        batch.drop_column("binding_host_id")
    with op.batch_alter_table("networks") as batch:
        batch.drop_constraint("uq_networks_segment_key", type_="unique")
        batch.drop_column("segment_key")
        batch.drop_column("segmentation_id")
        batch.drop_column("physical_network")
        batch.drop_column("network_type")
