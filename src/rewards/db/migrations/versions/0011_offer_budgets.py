"""offer budgets: what each offer with a budget has awarded per period

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "offer_budget_use",
        sa.Column("offer_id", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
        sa.Column("period", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("used_cents", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("offer_id", "period"),
    )


def downgrade() -> None:
    op.drop_table("offer_budget_use")
