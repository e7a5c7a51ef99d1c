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
:mod:`rewards.services.runs`); the range is applied here first, only so that groups out
of range never reach the engine.

Reading the contributions is the cost (a purchase's row is on a page of its own): every
offer of every period kind shares one scan of a chunk of contacts (``in_range_groups``),
summed here per offer and group, and each group keeps its contributions, which become
the award's links (written by the run from them: a GROUP BY and an ``INSERT ... SELECT``
of the links would read every row again per offer). The links of standing awards are
read once per chunk (``_linked``), and loyalty_item_quantity quantities come from the
purchase's stored details (``_Quantity``), not from a lookup per purchase.

``aggregate_pending.changed`` counts the cancellations that touched a pending period
(``repend``, ``touch_pending``): a run that planned a chunk outside its write transaction
writes it only if the count did not move.

Only closed periods are aggregated: a period that ended at or before the run's
``as_of`` (an open month can still change, and a range with a ``max`` would misfire).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import msgspec
from sqlalchemy import (
    ColumnElement,
    String,
    and_,
    case,
    cast,
    literal,
    or_,
    select,
    true,
)
from sqlalchemy.sql import Select
from sqlmodel import Session

from rewards.db.run_tables import AggregateAward, AggregateLink, AggregatePending, EvaluatedEvent
from rewards.db.tables import Event
from rewards.domain.money import to_cents
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
_links = AggregateLink.__table__  # type: ignore[attr-defined]
_aggregate_awards = AggregateAward.__table__  # type: ignore[attr-defined]


# ---- business time -------------------------------------------------------------------


def day_int(day: date) -> int:
    return day.year * 10000 + day.month * 100 + day.day


_DAY_FIELDS: dict[date, tuple[int, int, int]] = {}  # a run marks many events per day


def local_fields(moment: datetime, zone: ZoneInfo) -> tuple[int, int, int, int]:
    """(YYYYMMDD, Monday of the week as YYYYMMDD, weekday 0 = Monday, minute of the day)."""
    local = moment.astimezone(zone)
    day = local.date()
    fields = _DAY_FIELDS.get(day)
    if fields is None:
        weekday = day.weekday()
        fields = (day_int(day), day_int(day - timedelta(days=weekday)), weekday)
        if len(_DAY_FIELDS) >= 100_000:
            _DAY_FIELDS.clear()
        _DAY_FIELDS[day] = fields
    return (*fields, local.hour * 60 + local.minute)


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


def period_end(period: str, key: int, zone: ZoneInfo) -> datetime:
    """First instant after a period (business time zone)."""
    start = period_start(period, key, zone)
    if period == "day":
        day = start.date() + timedelta(days=1)
    elif period == "week":
        day = start.date() + timedelta(days=7)
    elif period == "month":
        day = date(start.year + start.month // 12, start.month % 12 + 1, 1)
    else:
        day = date(start.year + 1, 1, 1)
    return datetime(day.year, day.month, day.day, tzinfo=zone)


# ---- offers ---------------------------------------------------------------------------


def aggregate_offers(rulesets: Rulesets) -> list[Offer]:
    return [o for o in rulesets.offers if o.classification in AGGREGATE_CLASSIFICATIONS]


def period_of(offer: Offer) -> str:
    return offer.conditions.period or "month"


def periods_in_use(rulesets: Rulesets) -> list[str]:
    """The period kinds of the loaded aggregate offers, in PERIODS order."""
    used = {period_of(offer) for offer in aggregate_offers(rulesets)}
    return [period for period in PERIODS if period in used]


def _limits(bounds: Range | None) -> tuple[int | None, int | None]:
    """The offer's range in hundredths, rounded inwards like the compiler does."""
    if bounds is None:
        return None, None
    low = None if bounds.min is None else math.ceil(bounds.min * 100)
    high = None if bounds.max is None else math.floor(bounds.max * 100)
    return low, high


def _in_range(value: ColumnElement[Any], bounds: Range | None) -> list[ColumnElement[bool]]:
    """``value`` (hundredths) within the offer's range (SQL)."""
    low, high = _limits(bounds)
    tests = []
    if low is not None:
        tests.append(value >= low)
    if high is not None:
        tests.append(value <= high)
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


# ---- pending work ---------------------------------------------------------------------

_pending = AggregatePending.__table__  # type: ignore[attr-defined]


def mark_pending(session: Session, pairs: set[tuple[str, str, int]]) -> None:
    """(contact, period, key) pairs the aggregate offers have to look at (again); pairs
    already pending stay as they are."""
    if not pairs:
        return
    rows = sorted(pairs)
    connection = session.connection()
    if connection.dialect.name == "postgresql":  # one statement, whatever the count
        connection.exec_driver_sql(
            "INSERT INTO aggregate_pending (contact_id, period, period_key) "
            "SELECT * FROM unnest(%s::text[], %s::text[], %s::int[]) ON CONFLICT DO NOTHING",
            ([c for c, _, _ in rows], [p for _, p, _ in rows], [k for _, _, k in rows]),
        )
    else:
        connection.exec_driver_sql(
            "INSERT OR IGNORE INTO aggregate_pending (contact_id, period, period_key) "
            "VALUES (?, ?, ?)",
            rows,
        )


def repend(session: Session, pairs: set[tuple[str, str, int]]) -> None:
    """``mark_pending`` after a cancellation: the pairs already pending count one more
    change (see ``pending_periods``)."""
    if not pairs:
        return
    rows = sorted(pairs)
    connection = session.connection()
    connection.exec_driver_sql(
        "INSERT INTO aggregate_pending (contact_id, period, period_key) VALUES "
        + ("(%s, %s, %s)" if connection.dialect.name == "postgresql" else "(?, ?, ?)")
        + " ON CONFLICT (contact_id, period, period_key)"
        " DO UPDATE SET changed = aggregate_pending.changed + 1",
        rows,
    )


def touch_pending(session: Session, pairs: set[tuple[str, str, int]]) -> None:
    """Count a change of these (contact, period, key) pairs if they are pending (a
    cancelled purchase in them: whatever was decided about them before is stale)."""
    for contact_id, period, key in sorted(pairs):
        session.execute(
            _pending.update()
            .where(
                _pending.c.contact_id == contact_id,
                _pending.c.period == period,
                _pending.c.period_key == key,
            )
            .values(changed=_pending.c.changed + 1)
        )


Closed = dict[str, int]  # period kind -> key of the period holding as_of (current_key)


def _open(closed: Closed) -> ColumnElement[bool]:
    """Pending rows of closed periods, of the kinds in ``closed``."""
    return or_(
        *(
            and_(_pending.c.period == period, _pending.c.period_key < before)
            for period, before in closed.items()
        )
    )


def pending_contacts(
    session: Session,
    closed: Closed,
    after: str,
    limit: int,
    partition: ColumnElement[bool] | None = None,
) -> list[str]:
    """Contacts (in id order, after ``after``) with a closed period still to aggregate."""
    query = (
        select(_pending.c.contact_id)
        .where(_open(closed), _pending.c.contact_id > after)
        .group_by(_pending.c.contact_id)
        .order_by(_pending.c.contact_id)
        .limit(limit)
    )
    if partition is not None:
        query = query.where(partition)
    return list(session.scalars(query))


Pending = dict[tuple[str, str, int], int]  # (period kind, contact, key) -> changes


def pending_periods(session: Session, closed: Closed, contacts: Sequence[str]) -> Pending:
    """The (period kind, contact, period key) of these contacts still to aggregate, each
    with its count of changes (equal counts: nothing cancelled in it since)."""
    p = _pending.c
    query = select(p.period, p.contact_id, p.period_key, p.changed).where(
        p.contact_id.in_(contacts), _open(closed)
    )
    return {
        (period, contact, int(key)): int(changed)
        for period, contact, key, changed in session.execute(query)
    }


def clear_pending(session: Session, closed: Closed, contacts: Sequence[str]) -> None:
    """These contacts' closed periods are aggregated."""
    session.execute(_pending.delete().where(_pending.c.contact_id.in_(contacts), _open(closed)))


def pending_partition_column() -> Any:
    return _pending.c.contact_id


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
    members: tuple[int, ...] = ()  # numbers of every contribution (the award's links)


def _scope(
    contacts: Sequence[str], keys: dict[str, tuple[int, int]], zone: ZoneInfo
) -> list[ColumnElement[bool]]:
    """Posted purchases of the contacts in the periods ``keys`` (period kind -> first and
    last key), driven by the events index on (contact, type, performed_on): the business
    keys decide, the performed_on bounds (a day wider on each side) only narrow the
    index range."""
    since = min(period_start(period, first, zone) for period, (first, _) in keys.items())
    until = max(period_end(period, last, zone) for period, (_, last) in keys.items())
    tests = [
        e.c.contact_id.in_(contacts),
        e.c.type == "purchase",
        e.c.performed_on >= since - timedelta(days=1),
        e.c.performed_on < until + timedelta(days=1),
        e.c.state == "posted",
    ]
    if len(keys) == 1:
        ((period, (first, last)),) = keys.items()
        tests += key_between(period, first, last)
    return tests


def _all_contributions(
    offers: Sequence[Offer],
    rulesets: Rulesets,
    contacts: Sequence[str],
    keys: dict[str, tuple[int, int]],
    zone: ZoneInfo,
    with_details: bool,
) -> Select[Any]:
    """The purchases of the contacts in the periods ``keys`` with, per offer, whether its
    event-level conditions hold (1 or 0): contact, business day, week, event number,
    amount, the details as stored (``with_details``: for the quantities of
    loyalty_item_quantity offers, see ``_Quantity``), then one column per offer.
    Reading the purchases is the cost, so every offer of every period kind shares one
    scan."""
    columns: list[Any] = [
        m.c.contact_id,
        m.c.local_day,
        m.c.local_week,
        m.c.event_number,
        e.c.amount_cents,
        cast(e.c.details, String) if with_details else literal(None),
    ]
    for offer in offers:
        columns.append(case((and_(true(), *contribution_filter(offer, rulesets)), 1), else_=0))
    return (
        select(*columns)
        .select_from(e)
        .join(m, m.c.event_number == e.c.number)
        .where(*_scope(contacts, keys, zone))
    )


def _linked(
    session: Session,
    offers: Sequence[Offer],
    contacts: Sequence[str],
    keys: dict[str, tuple[int, int]],
) -> dict[str, set[int]]:
    """Per offer: the contacts' purchases linked to a standing award of it that a scan
    of the periods ``keys`` can meet, read once per chunk (one index range per contact
    and offer instead of a lookup per purchase and offer). A purchase
    links only to the award of its own period, so awards of the offer's period kind
    outside its keys cannot hold one; awards of another kind (the offer's period was
    edited since) can."""
    a, links = _aggregate_awards, _links
    found: dict[str, set[int]] = {offer.id: set() for offer in offers}
    for period, (first, last) in keys.items():
        mine = [offer.id for offer in offers if period_of(offer) == period]
        if not mine:
            continue
        query = (
            select(links.c.offer_id, links.c.event_number)
            .select_from(a)
            .join(links, links.c.award_id == a.c.award_id)
            .where(
                a.c.contact_id.in_(contacts),
                a.c.offer_id.in_(mine),
                or_(a.c.period != period, a.c.period_key.between(first, last)),
            )
        )
        for offer_id, number in session.execute(query):
            found[offer_id].add(int(number))
    return found


class _ProductLine(msgspec.Struct):
    sku: str
    quantity: str | int | float
    total_amount: str | int | float


class _Products(msgspec.Struct):
    products: list[_ProductLine] = []


_PRODUCTS = msgspec.json.Decoder(_Products)


class _Quantity:
    """A purchase's quantity in thousandths of the lines matching one of the offer's
    products (SKU glob, line amount range), from its stored details (the same lines as
    its ``event_lines``, written together on intake): a lookup of its lines per purchase
    cost as much as the rest of the scan."""

    def __init__(self, offer: Offer) -> None:
        self.products = [
            (globs.to_regex(product.sku).fullmatch, _limits(product.amount))
            for product in offer.conditions.products or []
        ]
        # SKU -> whether its lines count: True (whatever their amount), False, or the
        # amount limits of the products it matches. SKUs repeat.
        self.by_sku: dict[str, bool | list[tuple[int | None, int | None]]] = {}

    def _rule(self, sku: str) -> bool | list[tuple[int | None, int | None]]:
        found = self.by_sku.get(sku)
        if found is None:
            if not self.products:
                found = True
            else:
                limits = [limits for matches, limits in self.products if matches(sku) is not None]
                found = (
                    True
                    if any(low is None and high is None for low, high in limits)
                    else (limits or False)
                )
            if len(self.by_sku) >= 10_000:
                self.by_sku.clear()
            self.by_sku[sku] = found
        return found

    def __call__(self, lines: list[_ProductLine]) -> int:
        total = 0
        for line in lines:
            rule = self._rule(line.sku)
            if rule is False:
                continue
            if rule is not True:
                cents = _line_cents(line.total_amount)
                if not any(_amount_within(cents, low, high) for low, high in rule):
                    continue
            total += _milli(line.quantity)
        return total


def _amount_within(cents: int, low: int | None, high: int | None) -> bool:
    return (low is None or cents >= low) and (high is None or cents <= high)


def _line_cents(value: str | int | float) -> int:
    """A line amount in cents as intake stored it in ``event_lines.total_cents``."""
    return to_cents(Decimal(str(value)))


_MILLI: dict[str | int | float, int] = {}  # quantity text -> thousandths (bounded)


def _milli(value: str | int | float) -> int:
    """A quantity in thousandths as intake stored it (``int(quantity * 1000)``)."""
    found = _MILLI.get(value)
    if found is None:
        found = int(Decimal(str(value)) * 1000)
        if len(_MILLI) >= 10_000:
            _MILLI.clear()
        _MILLI[value] = found
    return found


class _Sums:
    __slots__ = ("count", "members", "quantity", "total")

    def __init__(self) -> None:
        self.total = 0
        self.count = 0
        self.quantity = 0
        self.members: list[int] = []


def _measure(offer: Offer) -> Callable[[_Sums], int]:
    """The value the offer's range applies to, in hundredths, from a group's sums."""
    measure = _MEASURE[offer.classification]
    if measure == "total_amount":
        return lambda sums: sums.total
    if measure == "count":
        return lambda sums: sums.count * 100
    return lambda sums: (sums.quantity + 5) // 10  # hundredths, half-up from thousandths


def _in_range_groups(offer: Offer, found: dict[tuple[str, int], _Sums]) -> list[Group]:
    low, high = _limits(getattr(offer.conditions, _MEASURE[offer.classification]))
    measure = _measure(offer)
    groups = []
    for (contact, key), sums in sorted(found.items()):
        value = measure(sums)
        if (low is not None and value < low) or (high is not None and value > high):
            continue
        members = tuple(sorted(sums.members))
        groups.append(
            Group(
                contact_id=contact,
                key=key,
                total_cents=sums.total,
                count=sums.count,
                quantity_milli=sums.quantity,
                latest=members[-1],
                members=members,
            )
        )
    return groups


def in_range_groups(
    session: Session,
    offers: Sequence[Offer],
    rulesets: Rulesets,
    pending: Collection[tuple[str, str, int]],
    zone: ZoneInfo,
) -> dict[str, list[Group]]:
    """Per offer: the pending (period kind, contact, key) groups of its period kind
    whose aggregate is in the offer's range, in contact and period order, each with its
    contributions (the award's links).

    One scan of the purchases for every offer and period kind, summed here: a GROUP BY
    per offer and an ``INSERT ... SELECT`` of the links would read the same rows again
    for each (and reading them is the cost)."""
    if not pending or not offers:
        return {offer.id: [] for offer in offers}
    contacts = sorted({contact for _, contact, _ in pending})
    keys: dict[str, tuple[int, int]] = {}
    for period, _, key in pending:
        first, last = keys.get(period, (key, key))
        keys[period] = (min(first, key), max(last, key))
    scanned = [offer for offer in offers if period_of(offer) in keys]
    quantities = [
        _Quantity(offer) if offer.classification == "loyalty_item_quantity" else None
        for offer in scanned
    ]
    with_details = any(q is not None for q in quantities)
    query = _all_contributions(scanned, rulesets, contacts, keys, zone, with_details)
    linked = list(_linked(session, scanned, contacts, keys).values())
    # Per offer: its period kind's index in ``kinds`` (the key of a row is computed once
    # per kind, not per offer).
    kinds = list(keys)
    kind_of = [kinds.index(period_of(offer)) for offer in scanned]
    found: list[dict[tuple[str, int], _Sums]] = [{} for _ in scanned]
    offer_columns = list(enumerate(zip(found, kind_of, linked, quantities, strict=True), 6))
    result_rows = session.execute(query)
    for rows in result_rows.partitions(2000):  # fetchmany: less per row than iterating
        for row in rows:
            contact = row[0]
            day, week = row[1], row[2]
            groups = [
                group if (kind, *group) in pending else None
                for kind in kinds
                for group in ((contact, key_of(kind, day, week)),)
            ]
            number = row[3]
            amount = row[4] or 0
            lines: list[_ProductLine] | None = None
            for column, (by_group, kind, taken, measure) in offer_columns:
                group = groups[kind]
                if group is None or not row[column] or number in taken:
                    continue
                quantity = 0
                if measure is not None:
                    if lines is None:
                        lines = _PRODUCTS.decode(row[5]).products
                    quantity = measure(lines)
                    if quantity <= 0:
                        continue  # no matching line: the purchase does not count
                sums = by_group.get(group)
                if sums is None:
                    sums = by_group[group] = _Sums()
                sums.total += amount
                sums.count += 1
                sums.quantity += quantity
                sums.members.append(number)
    result: dict[str, list[Group]] = {offer.id: [] for offer in offers}
    for offer, by_group in zip(scanned, found, strict=True):
        result[offer.id] = _in_range_groups(offer, by_group)
    return result


def link_rows(offer_id: str, award_id: str, group: Group) -> list[tuple[int, str, str]]:
    """(event_number, offer_id, award_id) links of an award to every contribution."""
    return [(number, offer_id, award_id) for number in group.members]


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


def latest_free(group: Group, taken: set[int]) -> int | None:
    """The most recently recorded contribution of the group that did not carry an award
    of the offer before (None: every one did)."""
    return next((number for number in reversed(group.members) if number not in taken), None)


def totals(group: Group) -> tuple[Decimal, int, Decimal]:
    """(total amount, count, quantity) of a group for ``PeriodTotals``."""
    return Decimal(group.total_cents) / 100, group.count, Decimal(group.quantity_milli) / 1000
