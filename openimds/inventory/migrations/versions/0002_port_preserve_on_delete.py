"""ports.preserve_on_delete: user-created ports survive their server's deletion

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("ports") as batch:
        batch.add_column(
            sa.Column(
                "preserve_on_delete", sa.Boolean(), nullable=False, server_default=sa.false()
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("ports") as batch:
        batch.drop_column("preserve_on_delete")
