"""notifications out: the transactional outbox, webhook subscriptions, deliveries and the
dispatcher's lease

Revision ID: 0013
Revises: 0012
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

from rewards.db.types import BigIntPK, UTCDateTime

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

_TEXT = sqlmodel.sql.sqltypes.AutoString


def upgrade() -> None:
    op.create_table(
        "outbox",
        sa.Column("id", BigIntPK, nullable=False),
        sa.Column("type", _TEXT(length=64), nullable=False),
        sa.Column("contact_id", _TEXT(length=36), nullable=True),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("fanned_out", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_outbox_fanned_out_id", "outbox", ["fanned_out", "id"])
    op.create_table(
        "webhook_subscriptions",
        sa.Column("id", _TEXT(length=36), nullable=False),
        sa.Column("url", _TEXT(length=2000), nullable=False),
        sa.Column("event_types", sa.JSON(), nullable=False),
        sa.Column("secret", _TEXT(length=200), nullable=False),
        sa.Column("source", _TEXT(length=16), nullable=False),
        sa.Column("description", _TEXT(length=200), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "deliveries",
        sa.Column("id", BigIntPK, nullable=False),
        sa.Column("subscription_id", _TEXT(length=36), nullable=False),
        sa.Column("outbox_id", sa.BigInteger(), nullable=False),
        sa.Column("contact_key", _TEXT(length=36), nullable=False),
        sa.Column("status", _TEXT(length=12), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("first_attempt_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("last_attempt_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("last_status", sa.Integer(), nullable=True),
        sa.Column("last_error", _TEXT(length=500), nullable=True),
        sa.Column("delivered_at", UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint(
            "subscription_id", "outbox_id", name="uq_deliveries_subscription_outbox"
        ),
    )
    op.create_index(
        "ix_deliveries_chain",
        "deliveries",
        ["subscription_id", "contact_key", "status", "outbox_id"],
    )
    op.create_index("ix_deliveries_due", "deliveries", ["status", "next_attempt_at"])
    op.create_table(
        "dispatch_lease",
        sa.Column("name", _TEXT(length=64), nullable=False),
        sa.Column("holder", _TEXT(length=128), nullable=True),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.Column("fencing", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )


def downgrade() -> None:
    op.drop_table("dispatch_lease")
    op.drop_index("ix_deliveries_due", table_name="deliveries")
    op.drop_index("ix_deliveries_chain", table_name="deliveries")
    op.drop_table("deliveries")
    op.drop_table("webhook_subscriptions")
    op.drop_index("ix_outbox_fanned_out_id", table_name="outbox")
    op.drop_table("outbox")
