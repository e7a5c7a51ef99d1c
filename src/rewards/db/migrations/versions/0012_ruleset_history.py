"""ruleset history: every ruleset version a process loaded, once, with its files
(ruleset_versions), and every load (ruleset_loads)

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

from rewards.db.types import BigIntPK, UTCDateTime

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ruleset_versions",
        sa.Column("number", BigIntPK, nullable=False),
        sa.Column("version", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("files", sa.JSON(), nullable=False),
        sa.Column("loaded_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("source", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("loaded_by", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
        sa.PrimaryKeyConstraint("number"),
        sa.UniqueConstraint("version"),
    )
    op.create_table(
        "ruleset_loads",
        sa.Column("id", BigIntPK, nullable=False),
        sa.Column("version", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("loaded_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("source", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("loaded_by", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("ruleset_loads", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_ruleset_loads_loaded_at"), ["loaded_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_ruleset_loads_version"), ["version"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("ruleset_loads", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_ruleset_loads_version"))
        batch_op.drop_index(batch_op.f("ix_ruleset_loads_loaded_at"))
    op.drop_table("ruleset_loads")
    op.drop_table("ruleset_versions")
