"""Daily series for the console's dashboard and offers page: SQL aggregates per UTC day,
made dense (a value for every day of the period) so charts and tables line up.

A period is whole UTC days, ``start`` to ``end`` inclusive. As in
:mod:`rewards.analyst.analytics`, events, awards and spends count on the day the event
was performed (awards gross); the outstanding liability is the sum of every wallet
balance at the end of each day, from the ledger's booking times.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import msgspec
from sqlalchemy import func, select
from sqlmodel import Session, col

from rewards.analyst import analytics
from rewards.db.tables import Award, Event, Spend, WalletTransaction
from rewards.domain.money import from_cents
from rewards.offers.catalog import list_offers
from rewards.runtime.context import Runtime
from rewards.wire import AnalyticsSummary, OfferOut, OfferTotals

MAX_DAYS = 366
TOP_OFFERS = 10


class Period(msgspec.Struct, frozen=True, kw_only=True):
    """Whole UTC days, both ends included."""

    start: date
    end: date

    @classmethod
    def last_days(cls, today: date, days: int = 30) -> Period:
        return cls(start=today - timedelta(days=days - 1), end=today)

    @property
    def days(self) -> list[date]:
        return [self.start + timedelta(days=n) for n in range((self.end - self.start).days + 1)]

    @property
    def since(self) -> datetime:
        return datetime.combine(self.start, time(), UTC)

    @property
    def until(self) -> datetime:
        """The first moment after the period (exclusive bound)."""
        return datetime.combine(self.end + timedelta(days=1), time(), UTC)


class TypeSeries(msgspec.Struct, kw_only=True):
    """Events of one type (posted or cancelled) per day of the period."""

    type: str
    counts: list[int]


class MoneyDay(msgspec.Struct, kw_only=True):
    day: date
    count: int
    amount: Decimal


class BalanceDay(msgspec.Struct, kw_only=True):
    day: date
    balance: Decimal  # every wallet's balance summed, at the end of the day


class Trends(msgspec.Struct, kw_only=True):
    period: Period
    days: list[date]
    events: list[TypeSeries]
    awards: list[MoneyDay]
    spends: list[MoneyDay]
    liability: list[BalanceDay]
    top_offers: list[OfferTotals]  # by amount awarded in the period, largest first
    summary: AnalyticsSummary  # the API's summary of the same period


class OfferActivity(msgspec.Struct, kw_only=True):
    offer: OfferOut
    awards: int  # in the period
    amount: Decimal


def _day(session: Session, column: Any) -> Any:
    """The UTC calendar day of a ``UTCDateTime`` column as ``YYYY-MM-DD`` text."""
    if session.get_bind().dialect.name == "postgresql":
        return func.to_char(func.timezone("UTC", column), "YYYY-MM-DD")
    return func.substr(column, 1, 10)  # SQLite stores UTC as "YYYY-MM-DD HH:MM:SS..."


def _in(column: Any, period: Period) -> list[Any]:
    return [column >= period.since, column < period.until]


def _money_days(rows: Any, days: list[date]) -> list[MoneyDay]:
    found = {date.fromisoformat(day): (int(n), int(cents or 0)) for day, n, cents in rows}
    return [
        MoneyDay(
            day=day, count=found.get(day, (0, 0))[0], amount=from_cents(found.get(day, (0, 0))[1])
        )
        for day in days
    ]


def trends(session: Session, runtime: Runtime, period: Period) -> Trends:
    """Everything the dashboard charts for ``period``."""
    days = period.days
    index = {day: n for n, day in enumerate(days)}
    event_day = _day(session, Event.performed_on)
    by_type: dict[str, list[int]] = {}
    for day, kind, count in session.execute(
        select(event_day, col(Event.type), func.count())
        .where(*_in(Event.performed_on, period))
        .group_by(event_day, col(Event.type))
    ):
        by_type.setdefault(kind, [0] * len(days))[index[date.fromisoformat(day)]] = int(count)
    award_day = _day(session, Award.performed_on)
    awards = session.execute(
        select(award_day, func.count(), func.sum(Award.amount_cents))
        .where(*_in(Award.performed_on, period))
        .group_by(award_day)
    ).all()
    spends = session.execute(
        select(event_day, func.count(), func.sum(Spend.amount_cents))
        .join(Event, col(Event.id) == Spend.event_id)
        .where(*_in(Event.performed_on, period))
        .group_by(event_day)
    ).all()
    booked_day = _day(session, WalletTransaction.created_at)
    opening = session.scalar(
        select(func.coalesce(func.sum(WalletTransaction.amount_cents), 0)).where(
            col(WalletTransaction.created_at) < period.since
        )
    )
    moved = {
        date.fromisoformat(day): int(cents)
        for day, cents in session.execute(
            select(booked_day, func.sum(WalletTransaction.amount_cents))
            .where(*_in(WalletTransaction.created_at, period))
            .group_by(booked_day)
        )
    }
    liability, balance = [], int(opening or 0)
    for day in days:
        balance += moved.get(day, 0)
        liability.append(BalanceDay(day=day, balance=from_cents(balance)))
    summary = analytics.summary(
        session, runtime, period.since.isoformat(), period.until.isoformat()
    )
    top = sorted(summary.awards.by_offer, key=lambda o: (-o.amount, o.offer_id))[:TOP_OFFERS]
    return Trends(
        period=period,
        days=days,
        events=[TypeSeries(type=kind, counts=by_type[kind]) for kind in sorted(by_type)],
        awards=_money_days(awards, days),
        spends=_money_days(spends, days),
        liability=liability,
        top_offers=top,
        summary=summary,
    )


def offer_activity(session: Session, runtime: Runtime, period: Period) -> list[OfferActivity]:
    """Every loaded offer (catalog order) with its awards in ``period``."""
    offers = list_offers(session, runtime, len(runtime.rulesets.offers) or 1, None).items
    summary = analytics.summary(
        session, runtime, period.since.isoformat(), period.until.isoformat()
    )
    totals = {o.offer_id: o for o in summary.awards.by_offer}
    result = []
    for offer in offers:
        total = totals.get(offer.id)
        result.append(
            OfferActivity(
                offer=offer,
                awards=total.count if total else 0,
                amount=total.amount if total else from_cents(0),
            )
        )
    return result


__all__ = [
    "BalanceDay",
    "MoneyDay",
    "OfferActivity",
    "Period",
    "Trends",
    "TypeSeries",
    "offer_activity",
    "trends",
]
