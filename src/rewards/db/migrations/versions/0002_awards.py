"""awards

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

import rewards.db.types

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "awards",
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
        sa.Column("event_id", sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
        sa.Column("offer_id", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
        sa.Column("offer_name", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("classification", sqlmodel.sql.sqltypes.AutoString(length=50), nullable=False),
        sa.Column("beneficiary", sqlmodel.sql.sqltypes.AutoString(length=10), nullable=False),
        sa.Column("contact_id", sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
        sa.Column("amount_cents", sa.BigInteger(), nullable=False),
        sa.Column("lines", sa.JSON(), nullable=True),
        sa.Column("instant_spend", sa.Boolean(), nullable=False),
        sa.Column("ruleset_version", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("performed_on", rewards.db.types.UTCDateTime(timezone=True), nullable=False),
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
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("offer_id", "event_id", "beneficiary", name="uq_awards_offer_event"),
    )
    with op.batch_alter_table("awards", schema=None) as batch_op:
        batch_op.create_index(
            "ix_awards_contact_offer_performed",
            ["contact_id", "offer_id", "performed_on"],
            unique=False,
        )
        batch_op.create_index(batch_op.f("ix_awards_event_id"), ["event_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("awards", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_awards_event_id"))
        batch_op.drop_index("ix_awards_contact_offer_performed")

    op.drop_table("awards")
