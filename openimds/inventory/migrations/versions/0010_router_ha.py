"""routers.ha and routers.ha_vr_id (issue 11: HA routers with keepalived)

Revision ID: 0010
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("routers") as batch:
        batch.add_column(sa.Column("ha", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("ha_vr_id", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("routers") as batch:
        batch.drop_column("ha_vr_id")
        batch.drop_column("ha")
