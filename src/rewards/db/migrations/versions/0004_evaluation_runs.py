"""evaluation runs: runs, their partitions and per-offer totals, evaluated events,
aggregate awards and their links (issue 5)

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

import rewards.db.types

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "aggregate_award_events",
        sa.Column("event_number", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("offer_id", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
        sa.Column("award_id", sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
        sa.PrimaryKeyConstraint("event_number", "offer_id"),
    )
    with op.batch_alter_table("aggregate_award_events", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_aggregate_award_events_award_id"), ["award_id"], unique=False
        )

    op.create_table(
        "evaluated_events",
        sa.Column(
            "event_number",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=False,
            nullable=False,
        ),
        sa.Column("run_id", sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
        sa.Column("contact_id", sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
        sa.Column("local_day", sa.Integer(), nullable=False),
        sa.Column("local_week", sa.Integer(), nullable=False),
        sa.Column("weekday", sa.SmallInteger(), nullable=False),
        sa.Column("minute", sa.SmallInteger(), nullable=False),
        sa.Column("pending", sa.SmallInteger(), nullable=False),
        sa.PrimaryKeyConstraint("event_number"),
    )
    with op.batch_alter_table("evaluated_events", schema=None) as batch_op:
        batch_op.create_index(
            "ix_evaluated_events_pending",
            ["contact_id", "local_day"],
            unique=False,
            sqlite_where=sa.text("pending != 0"),
            postgresql_where=sa.text("pending != 0"),
        )

    op.create_table(
        "evaluation_runs",
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
        sa.Column("status", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("running_lock", sa.Integer(), nullable=True),
        sa.Column("source", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("as_of", rewards.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("ruleset_version", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("partitions", sa.Integer(), nullable=False),
        sa.Column("started_at", rewards.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", rewards.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("finished_at", rewards.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("events_total", sa.BigInteger(), nullable=False),
        sa.Column("events_evaluated", sa.BigInteger(), nullable=False),
        sa.Column("aggregate_groups", sa.BigInteger(), nullable=False),
        sa.Column("awards", sa.BigInteger(), nullable=False),
        sa.Column("total_awarded_cents", sa.BigInteger(), nullable=False),
        sa.Column("chunks", sa.BigInteger(), nullable=False),
        sa.Column("error", sqlmodel.sql.sqltypes.AutoString(length=1000), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("running_lock"),
    )
    op.create_table(
        "evaluation_run_offers",
        sa.Column("run_id", sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
        sa.Column("offer_id", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
        sa.Column("awards", sa.BigInteger(), nullable=False),
        sa.Column("total_cents", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["evaluation_runs.id"],
        ),
        sa.PrimaryKeyConstraint("run_id", "offer_id"),
    )
    op.create_table(
        "evaluation_run_partitions",
        sa.Column("run_id", sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
        sa.Column("partition", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("state", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("worker", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=True),
        sa.Column("heartbeat_at", rewards.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("events_evaluated", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["evaluation_runs.id"],
        ),
        sa.PrimaryKeyConstraint("run_id", "partition"),
    )
    op.create_table(
        "aggregate_awards",
        sa.Column("award_id", sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
        sa.Column("run_id", sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
        sa.Column("offer_id", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
        sa.Column("contact_id", sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
        sa.Column("period", sqlmodel.sql.sqltypes.AutoString(length=8), nullable=False),
        sa.Column("period_key", sa.Integer(), nullable=False),
        sa.Column("total_amount_cents", sa.BigInteger(), nullable=False),
        sa.Column("event_count", sa.Integer(), nullable=False),
        sa.Column("quantity_milli", sa.BigInteger(), nullable=False),
        sa.Column("reversed_at", rewards.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column(
            "reversed_by_event_id", sqlmodel.sql.sqltypes.AutoString(length=36), nullable=True
        ),
        sa.Column("created_at", rewards.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["award_id"],
            ["awards.id"],
        ),
        sa.PrimaryKeyConstraint("award_id"),
    )
    with op.batch_alter_table("aggregate_awards", schema=None) as batch_op:
        batch_op.create_index(
            "ix_aggregate_awards_contact_offer", ["contact_id", "offer_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("aggregate_awards", schema=None) as batch_op:
        batch_op.drop_index("ix_aggregate_awards_contact_offer")

    op.drop_table("aggregate_awards")
    op.drop_table("evaluation_run_partitions")
    op.drop_table("evaluation_run_offers")
    op.drop_table("evaluation_runs")
    with op.batch_alter_table("evaluated_events", schema=None) as batch_op:
        batch_op.drop_index(
            "ix_evaluated_events_pending",
            sqlite_where=sa.text("pending != 0"),
            postgresql_where=sa.text("pending != 0"),
        )

    op.drop_table("evaluated_events")
    with op.batch_alter_table("aggregate_award_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_aggregate_award_events_award_id"))

    op.drop_table("aggregate_award_events")
