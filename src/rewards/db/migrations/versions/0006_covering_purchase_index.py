"""the events index on (contact, type, performed_on) also holds state and amount_cents,
so the period aggregates of evaluation runs read a contact's purchases from the index
alone instead of one random table page per purchase (issue 5)

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_NAME = "ix_events_contact_type_performed"


def upgrade() -> None:
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_index(_NAME)
        batch_op.create_index(
            _NAME, ["contact_id", "type", "performed_on", "state", "amount_cents"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_index(_NAME)
        batch_op.create_index(_NAME, ["contact_id", "type", "performed_on"], unique=False)
