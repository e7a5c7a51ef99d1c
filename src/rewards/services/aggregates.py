"""Period aggregates in SQL: loyalty_transaction_amount, _number and loyalty_item_quantity.

A contact's purchases are grouped by the offer's calendar ``period`` (day, week from
Monday, month, year) in the definition's time zone. The business-time fields come from
``evaluated_events`` (written when a run evaluates the event), so grouping and the
offer's event-level conditions are plain integer SQL on SQLite and PostgreSQL alike.

Which purchases count towards an offer's aggregate (its *contributions*): posted
purchases of the contact in that period, not linked to a standing award of the offer,
that meet the offer's event-level conditions, decided per purchase: ``valid`` (business
date), ``units``, ``payment_medium``, ``schedule``; for loyalty_item_quantity a purchase
counts through its lines matching ``products`` (their quantity; a purchase without such
a line does not count). The contact-level conditions (``segments``, ``max_awards``) and
the range are decided by the rules engine on the aggregate fact (see
:mod:`rewards.services.runs`); the SQL ``HAVING`` applies the same range first, only so
that groups out of range never leave the database. The links of an award are written
by one ``INSERT ... SELECT`` with the same filters, so member rows never leave it either.

Only closed periods are aggregated: a period that ended at or before the run's
``as_of`` (an open month can still change, and a range with a ``max`` would misfire).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement, and_, exists, func, insert, literal, or_, select
from sqlalchemy.sql import Select
from sqlmodel import Session

from rewards.db.run_tables import PERIOD_BITS, AggregateAward, AggregateLink, EvaluatedEvent
from rewards.db.tables import Event, EventLine
from rewards.engine import globs
from rewards.engine.loader import Rulesets
from rewards.engine.model import AGGREGATE_CLASSIFICATIONS, WEEKDAYS, Offer, Range

PERIODS = ("day", "week", "month", "year")
_MEASURE = {
    "loyalty_transaction_amount": "total_amount",
    "loyalty_transaction_number": "count",
    "loyalty_item_quantity": "quantity",
}

m = EvaluatedEvent.__table__.alias("m")  # type: ignore[attr-defined]
e = Event.__table__.alias("e")  # type: ignore[attr-defined]
_lines = EventLine.__table__.alias("l")  # type: ignore[attr-defined]
_links = AggregateLink.__table__  # type: ignore[attr-defined]
_aggregate_awards = AggregateAward.__table__  # type: ignore[attr-defined]


# ---- business time -------------------------------------------------------------------


def day_int(day: date) -> int:
    return day.year * 10000 + day.month * 100 + day.day


def local_fields(moment: datetime, zone: ZoneInfo) -> tuple[int, int, int, int]:
    """(YYYYMMDD, Monday of the week as YYYYMMDD, weekday 0 = Monday, minute of the day)."""
    local = moment.astimezone(zone)
    day = local.date()
    weekday = day.weekday()
    return (
        day_int(day),
        day_int(day - timedelta(days=weekday)),
        weekday,
        local.hour * 60 + local.minute,
    )


def key_of(period: str, local_day: int, local_week: int) -> int:
    """The period key of a business day: YYYYMMDD (day; week: its Monday), YYYYMM, YYYY."""
    if period == "day":
        return local_day
    if period == "week":
        return local_week
    if period == "month":
        return local_day // 100
    return local_day // 10000


def current_key(period: str, as_of: datetime, zone: ZoneInfo) -> int:
    """Key of the period holding ``as_of``: the periods with a smaller key are closed."""
    day, week, _, _ = local_fields(as_of, zone)
    return key_of(period, day, week)


def key_column(period: str, columns: Any = None) -> ColumnElement[int]:
    """The period key of ``evaluated_events`` rows (``columns``: a table's ``.c``, default ``m``)."""
    c = m.c if columns is None else columns
    if period == "day":
        return c.local_day  # type: ignore[no-any-return]
    if period == "week":
        return c.local_week  # type: ignore[no-any-return]
    if period == "month":
        return c.local_day // 100  # type: ignore[no-any-return]
    return c.local_day // 10000  # type: ignore[no-any-return]


def key_between(
    period: str, first: int | None, last: int | None, columns: Any = None
) -> list[ColumnElement[bool]]:
    """Period keys ``first``..``last`` (either optional) as ranges of the plain columns
    (``local_day``/``local_week``), which database statistics and indexes understand
    (``local_day / 100`` they do not)."""
    c = m.c if columns is None else columns
    column = c.local_week if period == "week" else c.local_day
    scale = {"day": (1, 0, 0), "week": (1, 0, 0), "month": (100, 1, 31), "year": (10000, 101, 1231)}
    factor, low, high = scale[period]
    tests = []
    if first is not None:
        tests.append(column >= first * factor + low)
    if last is not None:
        tests.append(column <= last * factor + high)
    return tests


def period_start(period: str, key: int, zone: ZoneInfo) -> datetime:
    """First instant of a period (business time zone)."""
    if period in ("day", "week"):
        day = date(key // 10000, key // 100 % 100, key % 100)
    elif period == "month":
        day = date(key // 100, key % 100, 1)
    else:
        day = date(key, 1, 1)
    return datetime(day.year, day.month, day.day, tzinfo=zone)


# ---- offers ---------------------------------------------------------------------------


def aggregate_offers(rulesets: Rulesets) -> list[Offer]:
    return [o for o in rulesets.offers if o.classification in AGGREGATE_CLASSIFICATIONS]


def period_of(offer: Offer) -> str:
    return offer.conditions.period or "month"


def pending_bits(rulesets: Rulesets) -> int:
    """The PERIOD_BITS a newly evaluated purchase starts with: its periods still to look at
    for the loaded aggregate offers."""
    bits = 0
    for offer in aggregate_offers(rulesets):
        bits |= PERIOD_BITS[period_of(offer)]
    return bits


def _in_range(value: ColumnElement[Any], bounds: Range | None) -> list[ColumnElement[bool]]:
    """``value`` (hundredths) within the offer's range, bounds rounded inwards to the
    hundredth like the compiler does."""
    if bounds is None:
        return []
    tests = []
    if bounds.min is not None:
        tests.append(value >= math.ceil(bounds.min * 100))
    if bounds.max is not None:
        tests.append(value <= math.floor(bounds.max * 100))
    return tests


def _minutes(text: str) -> int:
    hours, minutes = text.split(":")
    return int(hours) * 60 + int(minutes)


def contribution_filter(offer: Offer, rulesets: Rulesets) -> list[ColumnElement[bool]]:
    """The offer's event-level conditions on ``m`` (business time) and ``e`` (event)."""
    c = offer.conditions
    tests: list[ColumnElement[bool]] = []
    if offer.valid is not None:
        if offer.valid.from_ is not None:
            tests.append(m.c.local_day >= day_int(offer.valid.from_))
        if offer.valid.until is not None:
            tests.append(m.c.local_day <= day_int(offer.valid.until))
    if c.units:
        groups = {u.group for u in rulesets.definition.units}
        codes = {code for code in c.units if code not in groups}
        codes |= {u.code for u in rulesets.definition.units if u.group in c.units}
        tests.append(e.c.performed_by_unit.in_(sorted(codes)))
    if c.payment_medium is not None:
        if c.payment_medium.brands:
            brand = e.c.details[("payment_medium", "brand")].as_string()
            tests.append(brand.in_(c.payment_medium.brands))
        if c.payment_medium.types:
            kind = e.c.details[("payment_medium", "type")].as_string()
            tests.append(kind.in_(c.payment_medium.types))
    if c.schedule is not None:
        days = sorted({WEEKDAYS.index(day) for day in c.schedule.days})
        if days and len(days) < 7:
            tests.append(m.c.weekday.in_(days))
        windows = [
            and_(m.c.minute >= _minutes(h.from_), m.c.minute < _minutes(h.until))
            for h in c.schedule.hours
        ]
        if windows:
            tests.append(or_(*windows))
    return tests


def _sku_matches(session: Session, glob: str) -> ColumnElement[bool]:
    if session.get_bind().dialect.name == "sqlite":
        return _lines.c.sku.op("GLOB")(glob)  # SQLite's GLOB is our glob syntax, case-sensitive
    return _lines.c.sku.op("~")(f"^(?:{globs.to_regex(glob).pattern})$")


def matching_quantity(session: Session, offer: Offer) -> ColumnElement[int]:
    """Quantity (thousandths) of the event's lines matching the offer's products."""
    alternatives = []
    for product in offer.conditions.products or []:
        parts = [_sku_matches(session, product.sku)]
        if product.amount is not None:
            parts += _in_range(_lines.c.total_cents, product.amount)
        alternatives.append(and_(*parts))
    matched = or_(*alternatives) if alternatives else literal(True)
    return (
        select(func.coalesce(func.sum(_lines.c.quantity_milli), 0))
        .where(_lines.c.event_id == e.c.id, matched)
        .scalar_subquery()
    )


# ---- pending work ---------------------------------------------------------------------


def _pending(period: str, closed_before: int) -> list[ColumnElement[bool]]:
    return [
        m.c.pending != 0,  # the partial index
        m.c.pending.op("&")(PERIOD_BITS[period]) != 0,
        *key_between(period, None, closed_before - 1),
    ]


def pending_contacts(
    session: Session,
    period: str,
    closed_before: int,
    after: str,
    limit: int,
    partition: ColumnElement[bool] | None = None,
) -> list[str]:
    """Contacts (in id order, after ``after``) with purchases whose closed ``period`` has
    not been aggregated yet."""
    query = (
        select(m.c.contact_id)
        .where(*_pending(period, closed_before), m.c.contact_id > after)
        .group_by(m.c.contact_id)
        .order_by(m.c.contact_id)
        .limit(limit)
    )
    if partition is not None:
        query = query.where(partition)
    return list(session.scalars(query))


def pending_periods(
    session: Session, period: str, closed_before: int, contacts: Sequence[str]
) -> set[tuple[str, int]]:
    """The (contact, period key) pairs of these contacts still to aggregate."""
    key = key_column(period)
    query = (
        select(m.c.contact_id, key)
        .where(m.c.contact_id.in_(contacts), *_pending(period, closed_before))
        .group_by(m.c.contact_id, key)
    )
    return {(contact, int(k)) for contact, k in session.execute(query)}


# ---- groups ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Group:
    """A contact's contributions to an offer in one closed period, not rewarded yet."""

    contact_id: str
    key: int
    total_cents: int
    count: int
    quantity_milli: int
    latest: int  # number of the most recently recorded contribution (the award's event)


def _contributions(
    session: Session,
    offer: Offer,
    rulesets: Rulesets,
    contacts: Sequence[str],
    keys: tuple[int, int],
    zone: ZoneInfo,
) -> Select[Any]:
    """One row per contribution of the contacts in periods ``keys`` (first, last):
    contact, key, event number, amount, quantity. Driven by the events index on
    (contact, type, performed_on)."""
    period = period_of(offer)
    key = key_column(period)
    since = period_start(period, keys[0], zone) - timedelta(days=1)
    quantity = (
        matching_quantity(session, offer)
        if offer.classification == "loyalty_item_quantity"
        else literal(0)
    )
    return (
        select(
            m.c.contact_id.label("contact_id"),
            key.label("k"),
            m.c.event_number.label("event_number"),
            e.c.amount_cents.label("amount_cents"),
            quantity.label("q"),
        )
        .select_from(e)
        .join(m, m.c.event_number == e.c.number)
        .where(
            e.c.contact_id.in_(contacts),
            e.c.type == "purchase",
            e.c.performed_on >= since,
            e.c.state == "posted",
            *key_between(period, keys[0], keys[1]),
            ~exists(
                select(literal(1))
                .where(_links.c.event_number == m.c.event_number, _links.c.offer_id == offer.id)
                .offset(0)  # a lookup per row, not a hash of every link
            ),
            *contribution_filter(offer, rulesets),
        )
    )


def in_range_groups(
    session: Session,
    offer: Offer,
    rulesets: Rulesets,
    pending: set[tuple[str, int]],
    zone: ZoneInfo,
) -> list[Group]:
    """The pending (contact, period) groups whose aggregate is in the offer's range
    (SQL GROUP BY ... HAVING), in contact and period order."""
    if not pending:
        return []
    contacts = sorted({contact for contact, _ in pending})
    keys = (min(k for _, k in pending), max(k for _, k in pending))
    rows = _contributions(session, offer, rulesets, contacts, keys, zone).subquery("c")
    total = func.sum(rows.c.amount_cents)
    count = func.count()
    quantity = func.sum(rows.c.q)
    measure = _MEASURE[offer.classification]
    bounds = getattr(offer.conditions, measure)
    if measure == "total_amount":
        having = _in_range(total, bounds)
    elif measure == "count":
        having = _in_range(count * 100, bounds)
    else:  # hundredths, half-up from thousandths (as the engine's facts are)
        having = _in_range((quantity + 5) // 10, bounds)
    query = (
        select(rows.c.contact_id, rows.c.k, total, count, quantity, func.max(rows.c.event_number))
        .group_by(rows.c.contact_id, rows.c.k)
        .order_by(rows.c.contact_id, rows.c.k)
    )
    if offer.classification == "loyalty_item_quantity":
        query = query.where(rows.c.q > 0)
    if having:
        query = query.having(and_(*having))
    return [
        Group(
            contact_id=contact,
            key=int(k),
            total_cents=int(total_cents or 0),
            count=int(n),
            quantity_milli=int(q or 0),
            latest=int(latest),
        )
        for contact, k, total_cents, n, q, latest in session.execute(query)
        if (contact, int(k)) in pending
    ]


def link_members(
    session: Session,
    offer: Offer,
    rulesets: Rulesets,
    awards: Sequence[tuple[str, Group]],
    zone: ZoneInfo,
) -> None:
    """Link every contribution of the awarded groups to its award (one INSERT ... SELECT
    through the ``aggregate_awards`` rows just written; same filters as the groups)."""
    for start in range(0, len(awards), 2000):
        batch = awards[start : start + 2000]
        contacts = sorted({group.contact_id for _, group in batch})
        keys = (min(g.key for _, g in batch), max(g.key for _, g in batch))
        rows = _contributions(session, offer, rulesets, contacts, keys, zone).subquery("c")
        a = _aggregate_awards.alias("a")
        query = select(rows.c.event_number, literal(offer.id), a.c.award_id).join(
            a,
            and_(
                a.c.contact_id == rows.c.contact_id,
                a.c.period_key == rows.c.k,
                a.c.award_id.in_([award_id for award_id, _ in batch]),
            ),
        )
        if offer.classification == "loyalty_item_quantity":
            query = query.where(rows.c.q > 0)
        session.execute(insert(_links).from_select(["event_number", "offer_id", "award_id"], query))


def reversed_events(session: Session, offer: Offer, contacts: Sequence[str]) -> set[int]:
    """Event numbers of these contacts that carried an award of the offer that has been
    reversed since (awards are unique per (offer, event): they cannot carry another)."""
    from rewards.db.tables import Award

    awards = Award.__table__  # type: ignore[attr-defined]
    query = (
        select(e.c.number)
        .select_from(_aggregate_awards)
        .join(awards, awards.c.id == _aggregate_awards.c.award_id)
        .join(e, e.c.id == awards.c.event_id)
        .where(
            _aggregate_awards.c.offer_id == offer.id,
            _aggregate_awards.c.contact_id.in_(contacts),
            _aggregate_awards.c.reversed_at.is_not(None),
        )
    )
    return {int(n) for n in session.scalars(query)}


def latest_free(
    session: Session,
    offer: Offer,
    rulesets: Rulesets,
    group: Group,
    taken: set[int],
    zone: ZoneInfo,
) -> int | None:
    """The most recently recorded contribution of the group that did not carry an award
    of the offer before (None: every one did)."""
    rows = _contributions(
        session, offer, rulesets, [group.contact_id], (group.key, group.key), zone
    ).subquery("c")
    query = select(rows.c.event_number).order_by(rows.c.event_number.desc())
    if offer.classification == "loyalty_item_quantity":
        query = query.where(rows.c.q > 0)
    for number in session.scalars(query):
        if int(number) not in taken:
            return int(number)
    return None


def totals(group: Group) -> tuple[Decimal, int, Decimal]:
    """(total amount, count, quantity) of a group for ``PeriodTotals``."""
    return Decimal(group.total_cents) / 100, group.count, Decimal(group.quantity_milli) / 1000
