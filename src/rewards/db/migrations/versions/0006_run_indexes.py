"""indexes for evaluation runs (issue 5):

- the events index on (contact, type, performed_on) also holds state and amount_cents,
  so the period aggregates of evaluation runs read a contact's purchases from the index
  alone instead of one random table page per purchase;
- the awards' unique (offer, event, beneficiary) leads with the event, so it also serves
  the lookups by event and the separate index on awards.event_id goes (a run writes
  hundreds of thousands of awards, each into every index of the table)

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_EVENTS = "ix_events_contact_type_performed"
_UNIQUE = "uq_awards_offer_event"


def upgrade() -> None:
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_index(_EVENTS)
        batch_op.create_index(
            _EVENTS, ["contact_id", "type", "performed_on", "state", "amount_cents"], unique=False
        )
    with op.batch_alter_table("awards", schema=None) as batch_op:
        batch_op.drop_index("ix_awards_event_id")
        batch_op.drop_constraint(_UNIQUE, type_="unique")
        batch_op.create_unique_constraint(_UNIQUE, ["event_id", "offer_id", "beneficiary"])


def downgrade() -> None:
    with op.batch_alter_table("awards", schema=None) as batch_op:
        batch_op.drop_constraint(_UNIQUE, type_="unique")
        batch_op.create_unique_constraint(_UNIQUE, ["offer_id", "event_id", "beneficiary"])
        batch_op.create_index("ix_awards_event_id", ["event_id"], unique=False)
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_index(_EVENTS)
        batch_op.create_index(_EVENTS, ["contact_id", "type", "performed_on"], unique=False)
