"""aggregates by period (issue 5): evaluation runs aggregate one closed period at a time,
for every contact that has it pending, reading the period's purchases in time order:

- aggregate_pending is keyed by (period, period_key, contact_id) instead of
  (contact_id, period, period_key): a period's pending contacts are one index range,
  and a run marking the periods of its purchases in time order writes near the end of
  the index instead of at a random place per contact;
- a partial index on the reversed aggregate awards, by offer: the carriers a new award
  of an offer cannot use, without a lookup per contact

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_REVERSED = "ix_aggregate_awards_reversed"
_WHERE = sa.text("reversed_at IS NOT NULL")


def _key_pending(columns: list[str]) -> None:
    """aggregate_pending with its primary key on ``columns`` (rows kept)."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE aggregate_pending DROP CONSTRAINT aggregate_pending_pkey")
        op.execute(
            f"ALTER TABLE aggregate_pending ADD CONSTRAINT aggregate_pending_pkey "
            f"PRIMARY KEY ({', '.join(columns)})"
        )
        return
    # SQLite cannot change a primary key: a new table takes the rows.
    op.create_table(
        "aggregate_pending_new",
        sa.Column("contact_id", sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
        sa.Column("period", sqlmodel.sql.sqltypes.AutoString(length=8), nullable=False),
        sa.Column("period_key", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("changed", sa.Integer(), nullable=False, server_default="0"),
        sa.PrimaryKeyConstraint(*columns),
    )
    op.execute(
        "INSERT INTO aggregate_pending_new (contact_id, period, period_key, changed) "
        "SELECT contact_id, period, period_key, changed FROM aggregate_pending"
    )
    op.drop_table("aggregate_pending")
    op.rename_table("aggregate_pending_new", "aggregate_pending")


def upgrade() -> None:
    _key_pending(["period", "period_key", "contact_id"])
    op.create_index(
        _REVERSED,
        "aggregate_awards",
        ["offer_id", "contact_id"],
        unique=False,
        sqlite_where=_WHERE,
        postgresql_where=_WHERE,
    )


def downgrade() -> None:
    op.drop_index(_REVERSED, table_name="aggregate_awards")
    _key_pending(["contact_id", "period", "period_key"])
