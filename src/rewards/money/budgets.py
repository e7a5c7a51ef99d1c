"""Offer budgets charged: an award that would pass its offer's budget for the period is
cut to what remains, and once nothing remains the offer awards nothing more until the
next period. Charged in the transaction that writes the award, under the budget row's
lock (PostgreSQL ``FOR UPDATE``; SQLite write transactions are serial), so concurrent
purchases and runs never overspend."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import Connection, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, col

from rewards.db.tables import OfferBudgetUse
from rewards.db.types import table_of
from rewards.domain.budgets import cut
from rewards.domain.decisions import AwardDecision
from rewards.domain.money import to_cents


def _connection(session: Session | Connection) -> Connection:
    return session.connection() if isinstance(session, Session) else session


def charge(session: Session | Connection, decision: AwardDecision) -> AwardDecision | None:
    """The award as its budget allows it (itself when it has no budget or room for all
    of it, cut to what remains, or None when nothing remains), charged to the budget."""
    budget = decision.budget
    if budget is None:
        return decision
    connection = _connection(session)
    on = postgresql if connection.dialect.name == "postgresql" else sqlite
    key = {"offer_id": decision.offer_id, "period": budget.period}
    connection.execute(
        on.insert(table_of(OfferBudgetUse)).values(**key, used_cents=0).on_conflict_do_nothing()
    )
    used = connection.execute(
        select(col(OfferBudgetUse.used_cents))
        .where(col(OfferBudgetUse.offer_id) == key["offer_id"])
        .where(col(OfferBudgetUse.period) == key["period"])
        .with_for_update()
    ).scalar_one()
    granted = min(to_cents(decision.amount), max(0, budget.limit_cents - used))
    if granted <= 0:
        return None
    connection.execute(
        update(OfferBudgetUse)
        .where(col(OfferBudgetUse.offer_id) == key["offer_id"])
        .where(col(OfferBudgetUse.period) == key["period"])
        .values(used_cents=used + granted)
    )
    return cut(decision, granted)


def lock(session: Session | Connection, decisions: Iterable[AwardDecision]) -> None:
    """PostgreSQL: the budget rows these awards will charge, locked now in one order,
    before the transaction locks any contact: a writer holding a budget while it waits
    for a contact another writer holds, that waits for the budget, would deadlock.
    SQLite write transactions are exclusive: nothing to do."""
    connection = _connection(session)
    if connection.dialect.name != "postgresql":
        return
    keys = sorted({(d.offer_id, d.budget.period) for d in decisions if d.budget is not None})
    table = table_of(OfferBudgetUse)
    for offer_id, period in keys:
        connection.execute(
            postgresql.insert(table)
            .values(offer_id=offer_id, period=period, used_cents=0)
            .on_conflict_do_nothing()
        )
        connection.execute(
            select(col(OfferBudgetUse.used_cents))
            .where(col(OfferBudgetUse.offer_id) == offer_id)
            .where(col(OfferBudgetUse.period) == period)
            .with_for_update()
        )


def usage(session: Session | Connection, offer_id: str, period: str) -> int:
    """Cents the offer has awarded in the period so far."""
    used = (
        _connection(session)
        .execute(
            select(col(OfferBudgetUse.used_cents)).where(
                col(OfferBudgetUse.offer_id) == offer_id, col(OfferBudgetUse.period) == period
            )
        )
        .scalar_one_or_none()
    )
    return int(used or 0)
