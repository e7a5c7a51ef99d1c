"""pending aggregate periods move from a bit field on evaluated_events to their own
table, one row per (contact, period kind, period key) still to aggregate, with a count
of the cancellations that touched it while pending (issue 5)

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

# The bit of each period kind in the old evaluated_events.pending, and its key in SQL
# (rewards.runs.aggregates.key_of).
_PERIODS = {
    "day": (1, "local_day"),
    "week": (2, "local_week"),
    "month": (4, "local_day / 100"),
    "year": (8, "local_day / 10000"),
}


def upgrade() -> None:
    op.create_table(
        "aggregate_pending",
        sa.Column("contact_id", sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
        sa.Column("period", sqlmodel.sql.sqltypes.AutoString(length=8), nullable=False),
        sa.Column("period_key", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("changed", sa.Integer(), nullable=False, server_default="0"),
        sa.PrimaryKeyConstraint("contact_id", "period", "period_key"),
    )
    for period, (bit, key) in _PERIODS.items():
        op.execute(
            "INSERT INTO aggregate_pending (contact_id, period, period_key) "
            f"SELECT DISTINCT contact_id, '{period}', {key} FROM evaluated_events "
            f"WHERE pending != 0 AND (pending & {bit}) != 0"
        )
    with op.batch_alter_table("evaluated_events", schema=None) as batch_op:
        batch_op.drop_index(
            "ix_evaluated_events_pending",
            sqlite_where=sa.text("pending != 0"),
            postgresql_where=sa.text("pending != 0"),
        )
        batch_op.drop_column("pending")
    with op.batch_alter_table("aggregate_awards", schema=None) as batch_op:
        batch_op.drop_index("ix_aggregate_awards_contact_offer")
        batch_op.create_index(
            "ix_aggregate_awards_contact_offer",
            ["contact_id", "offer_id", "period_key"],
            unique=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("aggregate_awards", schema=None) as batch_op:
        batch_op.drop_index("ix_aggregate_awards_contact_offer")
        batch_op.create_index(
            "ix_aggregate_awards_contact_offer", ["contact_id", "offer_id"], unique=False
        )
    with op.batch_alter_table("evaluated_events", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("pending", sa.SmallInteger(), nullable=False, server_default="0")
        )
        batch_op.create_index(
            "ix_evaluated_events_pending",
            ["contact_id", "local_day"],
            unique=False,
            sqlite_where=sa.text("pending != 0"),
            postgresql_where=sa.text("pending != 0"),
        )
    # A pending period marks every purchase of that contact in it (what the bits meant).
    for period, (bit, key) in _PERIODS.items():
        op.execute(
            f"UPDATE evaluated_events SET pending = pending | {bit} WHERE EXISTS ("
            "SELECT 1 FROM aggregate_pending p WHERE p.contact_id = evaluated_events.contact_id"
            f" AND p.period = '{period}' AND p.period_key = {key})"
        )
    op.drop_table("aggregate_pending")
