"""invoices posted to POST /v1/invoices (purchase automation): unique per (number,
invoice_type), the idempotency key, with what each made (a purchase, a credit note's
return) and the hash of the request that made it

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

import rewards.db.types

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "invoices",
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
        sa.Column("invoice_type", sqlmodel.sql.sqltypes.AutoString(length=50), nullable=False),
        sa.Column("number", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
        sa.Column("processed_as", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("request_hash", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("contact_id", sqlmodel.sql.sqltypes.AutoString(length=36), nullable=True),
        sa.Column("issued_on", rewards.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column(
            "performed_by_unit", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False
        ),
        sa.Column("currency", sqlmodel.sql.sqltypes.AutoString(length=3), nullable=True),
        sa.Column("lines", sa.JSON(), nullable=False),
        sa.Column("description", sqlmodel.sql.sqltypes.AutoString(length=500), nullable=True),
        sa.Column("credits_invoice", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=True),
        sa.Column(
            "credits_invoice_type", sqlmodel.sql.sqltypes.AutoString(length=50), nullable=True
        ),
        sa.Column("purchase_event_id", sqlmodel.sql.sqltypes.AutoString(length=36), nullable=True),
        sa.Column(
            "credited_invoice_id", sqlmodel.sql.sqltypes.AutoString(length=36), nullable=True
        ),
        sa.Column("outcome", sa.JSON(), nullable=True),
        sa.Column("created_at", rewards.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["contact_id"],
            ["contacts.id"],
        ),
        sa.ForeignKeyConstraint(
            ["credited_invoice_id"],
            ["invoices.id"],
        ),
        sa.ForeignKeyConstraint(
            ["purchase_event_id"],
            ["events.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("number", "invoice_type", name="uq_invoices_number_type"),
    )
    with op.batch_alter_table("invoices", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_invoices_purchase_event_id"), ["purchase_event_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("invoices", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_invoices_purchase_event_id"))
    op.drop_table("invoices")
