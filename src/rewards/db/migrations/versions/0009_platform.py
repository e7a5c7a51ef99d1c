"""platform purchase sources: payment card tokens of contacts, processor transactions and
their per-merchant routes (PLATFORM.md)

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

from rewards.db.types import BigIntPK, UTCDateTime

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_text = sqlmodel.sql.sqltypes.AutoString


def upgrade() -> None:
    op.create_table(
        "payment_cards",
        sa.Column("token", _text(length=100), nullable=False),
        sa.Column("contact_id", _text(length=36), nullable=False),
        sa.ForeignKeyConstraint(["contact_id"], ["contacts.id"]),
        sa.PrimaryKeyConstraint("token"),
    )
    op.create_index("ix_payment_cards_contact_id", "payment_cards", ["contact_id"])
    op.create_table(
        "processor_transactions",
        sa.Column("number", BigIntPK, nullable=False),
        sa.Column("id", _text(length=36), nullable=False),
        sa.Column("processor", _text(length=100), nullable=False),
        sa.Column("transaction_id", _text(length=100), nullable=False),
        sa.Column("terminal_id", _text(length=100), nullable=False),
        sa.Column("performed_on", UTCDateTime(timezone=True), nullable=False),
        sa.Column("amount_cents", sa.BigInteger(), nullable=False),
        sa.Column("currency", _text(length=3), nullable=True),
        sa.Column("card_token", _text(length=100), nullable=False),
        sa.Column("card_brand", _text(length=50), nullable=True),
        sa.Column("card_type", _text(length=50), nullable=True),
        sa.Column("card_last4", _text(length=4), nullable=True),
        sa.Column("request_hash", _text(length=64), nullable=False),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("number"),
        sa.UniqueConstraint("id"),
        sa.UniqueConstraint("processor", "transaction_id", name="uq_processor_transactions_key"),
    )
    op.create_index(
        "ix_processor_transactions_card_token", "processor_transactions", ["card_token"]
    )
    op.create_table(
        "processor_routes",
        sa.Column("id", BigIntPK, nullable=False),
        sa.Column("transaction_id", _text(length=36), nullable=False),
        sa.Column("merchant_id", _text(length=100), nullable=False),
        sa.Column("mode", _text(length=10), nullable=False),
        sa.Column("status", _text(length=16), nullable=False),
        sa.Column("performed_on", UTCDateTime(timezone=True), nullable=False),
        sa.Column("amount_cents", sa.BigInteger(), nullable=False),
        sa.Column("card_last4", _text(length=4), nullable=True),
        sa.Column("match_until", UTCDateTime(timezone=True), nullable=True),
        sa.Column("event_id", _text(length=36), nullable=True),
        sa.Column("claimed_by", _text(length=36), nullable=True),
        sa.Column("updated_at", UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["transaction_id"], ["processor_transactions.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("event_id"),
        sa.UniqueConstraint("transaction_id", "merchant_id", name="uq_processor_routes_merchant"),
    )
    op.create_index(
        "ix_processor_routes_merchant_status",
        "processor_routes",
        ["merchant_id", "status", "amount_cents"],
    )


def downgrade() -> None:
    op.drop_table("processor_routes")
    op.drop_table("processor_transactions")
    op.drop_table("payment_cards")
