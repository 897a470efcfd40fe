"""index fixed_ips.subnet_id: per-subnet lookups (DHCP servers, IPAM) without a full scan

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_fixed_ips_subnet_id", "fixed_ips", ["subnet_id"])


def downgrade() -> None:
    op.drop_index("ix_fixed_ips_subnet_id", table_name="fixed_ips")
