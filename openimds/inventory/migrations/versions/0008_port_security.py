"""ports.port_security_enabled and ports.allowed_address_pairs (Neutron's port security)

Revision ID: 0008
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("ports") as batch:
        batch.add_column(
            sa.Column(
                "port_security_enabled", sa.Boolean(), nullable=False, server_default=sa.true()
            )
        )
        batch.add_column(
            sa.Column("allowed_address_pairs", sa.JSON(), nullable=False, server_default="[]")
        )


def downgrade() -> None:
    with op.batch_alter_table("ports") as batch:
        batch.drop_column("allowed_address_pairs")
        batch.drop_column("port_security_enabled")
