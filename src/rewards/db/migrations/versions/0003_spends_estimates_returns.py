"""spends estimates returns

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

import rewards.db.types

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "estimates",
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
        sa.Column("contact_id", sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
        sa.Column("wallet_id", sa.BigInteger(), nullable=False),
        sa.Column("result", sa.JSON(), nullable=False),
        sa.Column("reserved_cents", sa.BigInteger(), nullable=False),
        sa.Column("requires_approval", sa.Boolean(), nullable=False),
        sa.Column("approved_at", rewards.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("consumed_at", rewards.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("consumed_by", sqlmodel.sql.sqltypes.AutoString(length=36), nullable=True),
        sa.Column("expires_at", rewards.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("created_at", rewards.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["contact_id"],
            ["contacts.id"],
        ),
        sa.ForeignKeyConstraint(
            ["wallet_id"],
            ["wallets.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("estimates", schema=None) as batch_op:
        batch_op.create_index(
            "ix_estimates_wallet_open", ["wallet_id", "consumed_at", "expires_at"], unique=False
        )

    op.create_table(
        "returned_lines",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("return_id", sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
        sa.Column("event_id", sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
        sa.Column("line_no", sa.Integer(), nullable=False),
        sa.Column("quantity_milli", sa.BigInteger(), nullable=False),
        sa.Column("created_at", rewards.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["event_id"],
            ["events.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("returned_lines", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_returned_lines_event_id"), ["event_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_returned_lines_return_id"), ["return_id"], unique=False
        )

    op.create_table(
        "spends",
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
        sa.Column("event_id", sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
        sa.Column("purchase_event_id", sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
        sa.Column("contact_id", sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
        sa.Column("requested_cents", sa.BigInteger(), nullable=True),
        sa.Column("amount_cents", sa.BigInteger(), nullable=False),
        sa.Column("instant", sa.Boolean(), nullable=False),
        sa.Column("reduction", sqlmodel.sql.sqltypes.AutoString(length=10), nullable=False),
        sa.Column("ledger_entry_id", sa.BigInteger(), nullable=False),
        sa.Column("created_at", rewards.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["contact_id"],
            ["contacts.id"],
        ),
        sa.ForeignKeyConstraint(
            ["event_id"],
            ["events.id"],
        ),
        sa.ForeignKeyConstraint(
            ["purchase_event_id"],
            ["events.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("spends", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_spends_event_id"), ["event_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_spends_purchase_event_id"), ["purchase_event_id"], unique=False
        )

    with op.batch_alter_table("wallet_transactions", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("award_id", sqlmodel.sql.sqltypes.AutoString(length=36), nullable=True)
        )
        batch_op.add_column(
            sa.Column("spend_id", sqlmodel.sql.sqltypes.AutoString(length=36), nullable=True)
        )
        batch_op.create_index(
            batch_op.f("ix_wallet_transactions_award_id"), ["award_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_wallet_transactions_spend_id"), ["spend_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("wallet_transactions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_wallet_transactions_spend_id"))
        batch_op.drop_index(batch_op.f("ix_wallet_transactions_award_id"))
        batch_op.drop_column("spend_id")
        batch_op.drop_column("award_id")

    with op.batch_alter_table("spends", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_spends_purchase_event_id"))
        batch_op.drop_index(batch_op.f("ix_spends_event_id"))

    op.drop_table("spends")
    with op.batch_alter_table("returned_lines", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_returned_lines_return_id"))
        batch_op.drop_index(batch_op.f("ix_returned_lines_event_id"))

    op.drop_table("returned_lines")
    with op.batch_alter_table("estimates", schema=None) as batch_op:
        batch_op.drop_index("ix_estimates_wallet_open")

    op.drop_table("estimates")
