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


def _locked_use(connection: Connection, offer_id: str, period: str) -> int:
    """The budget row of (offer, period), created when missing, locked for the rest of the
    transaction (``FOR UPDATE``; SQLite write transactions are exclusive): what is used."""
    on = postgresql if connection.dialect.name == "postgresql" else sqlite
    connection.execute(
        on.insert(table_of(OfferBudgetUse))
        .values(offer_id=offer_id, period=period, used_cents=0)
        .on_conflict_do_nothing()
    )
    used: int = connection.execute(
        select(col(OfferBudgetUse.used_cents))
        .where(col(OfferBudgetUse.offer_id) == offer_id)
        .where(col(OfferBudgetUse.period) == period)
        .with_for_update()
    ).scalar_one()
    return used


def charge(session: Session | Connection, decision: AwardDecision) -> AwardDecision | None:
    """The award as its budget allows it (itself when it has no budget or room for all
    of it, cut to what remains, or None when nothing remains), charged to the budget."""
    budget = decision.budget
    if budget is None:
        return decision
    connection = _connection(session)
    used = _locked_use(connection, decision.offer_id, budget.period)
    granted = min(to_cents(decision.amount), max(0, budget.limit_cents - used))
    if granted <= 0:
        return None
    connection.execute(
        update(OfferBudgetUse)
        .where(col(OfferBudgetUse.offer_id) == decision.offer_id)
        .where(col(OfferBudgetUse.period) == budget.period)
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
    for offer_id, period in sorted(
        {(d.offer_id, d.budget.period) for d in decisions if d.budget is not None}
    ):
        _locked_use(connection, offer_id, period)
