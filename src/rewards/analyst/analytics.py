"""The summary an operator looks at: SQL aggregates only, never Python loops over rows.

The window (``from`` inclusive, ``to`` exclusive) applies to the events' ``performed_on``:
awards and spends are counted with the event that caused them. Award amounts are gross;
``reversed`` is what cancellations and returns took back. The outstanding liability is
the sum of every wallet balance now, whatever the window."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import case, func, select
from sqlmodel import Session, col

from rewards.db.tables import Award, Event, Spend, Wallet, WalletTransaction
from rewards.domain.money import from_cents
from rewards.intake.events import parse_timestamp
from rewards.offers.budgets import budget_list
from rewards.runtime.context import Runtime
from rewards.wire import AnalyticsSummary, AwardTotals, EventTypeCount, OfferTotals, SpendTotals


def _window(column: Any, start: datetime | None, end: datetime | None) -> list[Any]:
    return [
        c
        for c in (column >= start if start else None, column < end if end else None)
        if c is not None
    ]


def merchant_units_filter(runtime: Runtime, merchant_id: str | None) -> list[Any]:
    """The condition "the event is at one of the merchant's units", when one is named."""
    if merchant_id is None:
        return []
    return [col(Event.performed_by_unit).in_(runtime.rulesets.merchant_units(merchant_id))]


def summary(
    session: Session,
    runtime: Runtime,
    start_text: str | None,
    end_text: str | None,
    merchant_id: str | None = None,
) -> AnalyticsSummary:
    """With ``merchant_id``, only events at the merchant's units (and the awards and
    spends they caused) count; a merchant the definition lacks has none."""
    start = parse_timestamp("from", start_text)
    end = parse_timestamp("to", end_text)
    at_merchant = merchant_units_filter(runtime, merchant_id)
    events = session.execute(
        select(
            col(Event.type),
            func.sum(case((col(Event.state) == "posted", 1), else_=0)),
            func.sum(case((col(Event.state) == "cancelled", 1), else_=0)),
        )
        .where(*_window(Event.performed_on, start, end), *at_merchant)
        .group_by(col(Event.type))
        .order_by(col(Event.type))
    ).all()
    awards = select(col(Award.offer_id), func.count(), func.sum(Award.amount_cents)).where(
        *_window(Award.performed_on, start, end)
    )
    if at_merchant:
        awards = awards.join(Event, col(Event.id) == Award.event_id).where(*at_merchant)
    by_offer = session.execute(
        awards.group_by(col(Award.offer_id)).order_by(col(Award.offer_id))
    ).all()
    reversed_cents = session.scalar(
        select(func.coalesce(func.sum(WalletTransaction.amount_cents), 0))
        .join(Event, col(Event.id) == WalletTransaction.event_id)
        .where(
            col(WalletTransaction.kind) == "award_reversal",
            *_window(Event.performed_on, start, end),
            *at_merchant,
        )
    )
    spends = session.execute(
        select(func.count(), func.coalesce(func.sum(Spend.amount_cents), 0))
        .join(Event, col(Event.id) == Spend.event_id)
        .where(*_window(Event.performed_on, start, end), *at_merchant)
    ).one()
    liability = session.scalar(select(func.coalesce(func.sum(Wallet.balance_cents), 0)))
    return AnalyticsSummary(
        from_=start,
        to=end,
        merchant_id=merchant_id,
        events=[
            EventTypeCount(type=t, posted=int(p or 0), cancelled=int(c or 0)) for t, p, c in events
        ],
        awards=AwardTotals(
            count=sum(int(n) for _, n, _ in by_offer),
            amount=from_cents(sum(int(a) for _, _, a in by_offer)),
            reversed=from_cents(-int(reversed_cents or 0)),
            by_offer=[
                OfferTotals(offer_id=o, count=int(n), amount=from_cents(int(a)))
                for o, n, a in by_offer
            ],
        ),
        spends=SpendTotals(count=int(spends[0]), amount=from_cents(int(spends[1]))),
        outstanding_liability=from_cents(int(liability or 0)),
        budgets=budget_list(session, runtime.rulesets, runtime.now()),
    )
