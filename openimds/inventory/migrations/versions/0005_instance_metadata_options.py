"""instances.metadata_options and metadata_token_usage (IMDSv2, per-instance options)

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("instances") as batch:
        batch.add_column(sa.Column("metadata_options", sa.JSON(), nullable=True))
    op.create_table(
        "metadata_token_usage",
        sa.Column("instance_uuid", sa.String(length=36), nullable=False),
        sa.Column("tokenless_requests", sa.Integer(), nullable=False),
        sa.Column("invalid_token_requests", sa.Integer(), nullable=False),
        sa.Column("last_tokenless_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("instance_uuid", name=op.f("pk_metadata_token_usage")),
    )


def downgrade() -> None:
    op.drop_table("metadata_token_usage")
    with op.batch_alter_table("instances") as batch:
        batch.drop_column("metadata_options")
