"""Cancelling an event a run evaluated: its aggregate award is reversed as a whole and
the periods it touched become pending again."""

from __future__ import annotations

from sqlalchemy import select
from sqlmodel import Session, col

from rewards.db.run_tables import AggregateAward, AggregateLink, EvaluatedEvent
from rewards.db.tables import Award, Contact, Event, WalletTransaction
from rewards.db.types import table_of
from rewards.money.ledger import Entry, post_entry
from rewards.runs import aggregates
from rewards.runtime.context import Runtime


def evaluated_by_run(session: Session, event_number: int) -> bool:
    """Whether an evaluation run evaluated the event (for the event view's ``evaluated``:
    evaluated on intake, or by a run)."""
    return session.get(EvaluatedEvent, event_number) is not None


def on_event_cancelled(session: Session, runtime: Runtime, event: Event) -> list[Entry]:
    """Cancellation hook (intake.events.cancel_event calls it before reversing the
    event's own ledger entries): every aggregate award the event contributed to is
    reversed as a whole, its links are deleted, and the other contributing purchases go
    back to pending, so the next run aggregates them again without the cancelled one.
    Returns the reversal entries it wrote."""
    if event.type != "purchase" or event.number is None:
        return []
    # Same lock as a run's aggregate chunk and awards_in_window (PostgreSQL row lock).
    session.execute(
        select(col(Contact.id)).where(col(Contact.id) == event.contact_id).with_for_update()
    )
    links = table_of(AggregateLink)
    L = links.c
    award_ids = sorted(
        set(session.scalars(select(L.award_id).where(L.event_number == event.number)))
    )
    now = runtime.now()
    reversals: list[Entry] = []
    for award_id in award_ids:
        award = session.get(Award, award_id)
        aggregate = session.get(AggregateAward, award_id)
        assert award is not None and aggregate is not None
        entry = session.get(WalletTransaction, award.ledger_entry_id)
        already = session.scalar(
            select(col(WalletTransaction.id)).where(
                col(WalletTransaction.reverses_id) == award.ledger_entry_id
            )
        )
        if entry is not None and already is None:
            reversals.append(
                post_entry(
                    session,
                    wallet_id=entry.wallet_id,
                    kind="award_reversal",
                    amount_cents=-entry.amount_cents,
                    event_id=event.id,
                    offer_id=entry.offer_id,
                    award_id=award.id,
                    reverses_id=entry.id,
                    created_at=now,
                )
            )
        aggregate.reversed_at = now
        aggregate.reversed_by_event_id = event.id
        # The other purchases of that period are unrewarded again: the period is pending.
        aggregates.repend(session, {(aggregate.contact_id, aggregate.period, aggregate.period_key)})
        session.execute(links.delete().where(L.award_id == award_id))
    _touch_own_periods(session, event)
    session.flush()
    return reversals


def _touch_own_periods(session: Session, event: Event) -> None:
    """The cancelled purchase's own periods, when pending, count a change: a run that
    decided them outside its write transaction (the read-ahead process) must decide
    them again without it."""
    mark = session.get(EvaluatedEvent, event.number)
    if mark is None:  # never evaluated by a run: part of no aggregate
        return
    aggregates.touch_pending(
        session,
        {
            (event.contact_id, period, aggregates.key_of(period, mark.local_day, mark.local_week))
            for period in aggregates.PERIODS  # whatever rulesets the running run has
        },
    )
