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
:mod:`rewards.runs`); the range is applied here first, only so that groups out
of range never reach the engine.

Reading the contributions is the cost. A run aggregates one closed period at a time
(``Slice``: a period and a range of the contacts that have it pending) and reads the
period's purchases once for every offer of its kind (``in_range_groups``): in time order
through the ``performed_on`` index (consecutive pages) for a slice of many contacts,
through the contacts' index (a random page per purchase, but only theirs) for a few
(``reads_in_time_order``). They are summed here per offer and contact, and each group
keeps its contributions, which become the award's links (written by the run from them:
a GROUP BY and an ``INSERT ... SELECT`` of the links would read every row again per
offer). Which of the purchases read are linked already is looked up by ranges of event
numbers (``_linked``), and loyalty_item_quantity quantities come from the purchase's
stored details (``_Quantity``), not from a lookup per purchase.

``aggregate_pending.changed`` counts the cancellations that touched a pending period
(``repend``, ``touch_pending``): a run that planned a chunk outside its write transaction
writes it only if the count did not move.

Only closed periods are aggregated: a period that ended at or before the run's
``as_of`` (an open month can still change, and a range with a ``max`` would misfire).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
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
    func,
    literal,
    or_,
    select,
    true,
)
from sqlalchemy.sql import Select
from sqlmodel import Session

from rewards.db.run_tables import AggregateAward, AggregateLink, AggregatePending, EvaluatedEvent
from rewards.db.tables import Event
from rewards.db.types import table_of
from rewards.domain.money import to_cents
from rewards.engine import globs
from rewards.engine.model import AGGREGATE_CLASSIFICATIONS, WEEKDAYS, Offer, Range
from rewards.engine.rulesets import Rulesets

PERIODS = ("day", "week", "month", "year")
_MEASURE = {
    "loyalty_transaction_amount": "total_amount",
    "loyalty_transaction_number": "count",
    "loyalty_item_quantity": "quantity",
}

m = table_of(EvaluatedEvent).alias("m")
e = table_of(Event).alias("e")
_links = table_of(AggregateLink)
_aggregate_awards = table_of(AggregateAward)


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


# The key of a day, month or year period: the business day (YYYYMMDD) divided by this.
_DAY_DIVISOR = {"day": 1, "month": 100, "year": 10000}


def key_of(period: str, local_day: int, local_week: int) -> int:
    """The period key of a business day: YYYYMMDD (day; week: its Monday), YYYYMM, YYYY."""
    return local_week if period == "week" else local_day // _DAY_DIVISOR[period]


def periods_of(
    periods: Iterable[str], purchases: Iterable[tuple[str, int, int]]
) -> dict[tuple[str, int], set[str]]:
    """(period kind, key) -> contacts, of each (contact, business day, week) of purchases
    (``key_of`` for each period kind in ``periods``)."""
    found: dict[tuple[str, int], set[str]] = defaultdict(set)
    for period in periods:  # key_of, one period kind at a time (a call per purchase costs)
        if period == "week":
            for contact, _, week in purchases:
                found[(period, week)].add(contact)
        else:
            divisor = _DAY_DIVISOR[period]
            for contact, day, _ in purchases:
                found[(period, day // divisor)].add(contact)
    return found


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


def _shifted(moment: datetime, days: int) -> datetime:
    """``moment`` moved by whole days, held at the calendar's ends: a stored event of year
    1 (older data; intake refuses such dates now) must not stop every run."""
    try:
        return moment + timedelta(days=days)
    except OverflowError:
        return (datetime.min if days < 0 else datetime.max).replace(tzinfo=UTC)


def period_end(period: str, key: int, zone: ZoneInfo) -> datetime:
    """First instant after a period (business time zone)."""
    start = period_start(period, key, zone)
    if period == "day":
        day = start.date() + timedelta(days=1)
    elif period == "week":
        day = start.date() + timedelta(days=7)
    elif period == "month":
        day = date(start.year + start.month // 12, start.month % 12 + 1, 1)
    elif start.year < 9999:
        day = date(start.year + 1, 1, 1)
    else:  # the calendar's last year: it ends with the calendar
        return datetime.max.replace(tzinfo=UTC)
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

_pending = table_of(AggregatePending)


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
    change (see ``pending_of``)."""
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


@dataclass(frozen=True)
class Slice:
    """A chunk of the aggregate phase: one closed period (``period`` kind, ``key``) of the
    contacts after ``after`` up to ``last`` (in id order) that have it pending."""

    period: str
    key: int
    after: str
    last: str


def pending_keys(
    session: Session, closed: Closed, zone: ZoneInfo, partition: ColumnElement[bool] | None = None
) -> list[tuple[str, int]]:
    """The closed (period kind, key) pairs with pending contacts, in the order the periods
    start (periods of one offer in time order: max_awards windows count the earlier
    ones)."""
    p = _pending.c
    found: list[tuple[str, int]] = []
    for period, before in closed.items():
        query = (
            select(p.period_key)
            .where(p.period == period, p.period_key < before)
            .group_by(p.period_key)
        )
        if partition is not None:
            query = query.where(partition)
        found += [(period, int(key)) for key in session.scalars(query)]
    return sorted(found, key=lambda pair: (period_start(pair[0], pair[1], zone), pair[0]))


def next_slice(
    session: Session,
    period: str,
    key: int,
    after: str,
    limit: int,
    partition: ColumnElement[bool] | None = None,
) -> Slice | None:
    """The next ``limit`` contacts after ``after`` with (period, key) pending (None: no
    contact is left)."""
    p = _pending.c
    query = (
        select(p.contact_id)
        .where(p.period == period, p.period_key == key, p.contact_id > after)
        .order_by(p.contact_id)
        .offset(limit - 1)
        .limit(1)
    )
    first = select(p.contact_id).where(
        p.period == period, p.period_key == key, p.contact_id > after
    )
    if partition is not None:
        query = query.where(partition)
        first = first.where(partition)
    last = session.scalar(query)
    if last is None:  # fewer than ``limit`` left: up to the last one
        last = session.scalar(first.order_by(p.contact_id.desc()).limit(1))
        if last is None:
            return None
    return Slice(period, key, after, last)


Pending = dict[str, int]  # contact -> changes (equal counts: nothing cancelled since)


def _in_slice(piece: Slice, partition: ColumnElement[bool] | None) -> list[ColumnElement[bool]]:
    p = _pending.c
    tests = [
        p.period == piece.period,
        p.period_key == piece.key,
        p.contact_id > piece.after,
        p.contact_id <= piece.last,
    ]
    return tests if partition is None else [*tests, partition]


def pending_of(
    session: Session, piece: Slice, partition: ColumnElement[bool] | None = None
) -> Pending:
    """The contacts of the slice with its period pending, each with its count of changes."""
    p = _pending.c
    rows = session.execute(select(p.contact_id, p.changed).where(*_in_slice(piece, partition)))
    return {contact: int(changed) for contact, changed in rows.fetchall()}


def pending_summary(
    session: Session, piece: Slice, partition: ColumnElement[bool] | None = None
) -> tuple[int, int]:
    """(rows, sum of their changes) of the slice's pending rows: equal to a ``pending_of``
    taken earlier when no row was added or changed since (only the run deletes rows)."""
    p = _pending.c
    query = select(func.count(), func.coalesce(func.sum(p.changed), 0)).where(
        *_in_slice(piece, partition)
    )
    rows, changes = session.execute(query).one()
    return int(rows), int(changes)


def clear_pending(
    session: Session, piece: Slice, partition: ColumnElement[bool] | None = None
) -> None:
    """The slice's period is aggregated for its contacts."""
    session.execute(_pending.delete().where(*_in_slice(piece, partition)))


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


# A slice of at least this many contacts, and at least this share of the contacts that
# have its period pending (in every partition of the run), reads every purchase of the
# period in time order (the events' performed_on index: consecutive pages, a few
# microseconds per purchase) and keeps its contacts' ones; a smaller slice reads its
# contacts' purchases through the (contact, type, performed_on) index: a random page per
# purchase, several times the cost of a purchase read in time order (measured: 5 against
# 15-40 us on the 1M bench), but only those of its contacts.
TIME_SCAN_CONTACTS = 200
TIME_SCAN_SHARE = 1 / 8


def reads_in_time_order(contacts: int, period_contacts: int) -> bool:
    """Whether a slice of ``contacts`` of the ``period_contacts`` that have its period
    pending reads the period's purchases in time order."""
    return contacts >= TIME_SCAN_CONTACTS and contacts >= TIME_SCAN_SHARE * period_contacts


def count_pending(session: Session, period: str, key: int) -> int:
    """How many contacts have the period pending, in every partition."""
    p = _pending.c
    query = select(func.count()).where(p.period == period, p.period_key == key)
    return int(session.scalar(query) or 0)


def _contributions(
    offers: Sequence[Offer],
    rulesets: Rulesets,
    piece: Slice,
    contacts: Collection[str],
    zone: ZoneInfo,
    with_details: bool,
    time_order: bool,
) -> Select[Any]:
    """The posted purchases in the slice's period with, per offer, whether its event-level
    conditions hold (1 or 0): contact, business day, week, event number, amount, the
    details as stored (``with_details``: for the quantities of loyalty_item_quantity
    offers, see ``_Quantity``), then one column per offer. The business keys decide; the
    performed_on bounds (a day wider on each side) only narrow the index range."""
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
    tests = [
        e.c.performed_on >= _shifted(period_start(piece.period, piece.key, zone), -1),
        e.c.performed_on < _shifted(period_end(piece.period, piece.key, zone), 1),
        e.c.state == "posted",
        *key_between(piece.period, piece.key, piece.key),
    ]
    query = select(*columns).select_from(e).join(m, m.c.event_number == e.c.number)
    if not time_order:
        return query.where(e.c.contact_id.in_(sorted(contacts)), e.c.type == "purchase", *tests)
    # Through the performed_on index: the type is tested as an expression no index
    # serves, and the slice's contacts (a range of ids) on the mark, so that neither
    # index of the event's type or contact competes (SQLite's planner has no statistics
    # and would take the type's).
    return query.where(
        func.coalesce(e.c.type, "") == "purchase",
        *tests,
        m.c.contact_id > piece.after,
        m.c.contact_id <= piece.last,
    )


# Linked purchases are looked up by ranges of event numbers where the purchases read are
# this dense (in time order, a period's purchases are mostly consecutive numbers), else
# by lists of numbers.
_RANGE_GAP = 64
_RANGE_MIN = 32


def _linked(session: Session, offer_ids: Sequence[str], numbers: list[int]) -> dict[str, set[int]]:
    """Per offer: which of these purchases (sorted numbers) are linked to a standing award
    of it (links are deleted when their award is reversed): a purchase counts once
    towards an offer, whatever period its award was for (the offer's period may have
    been edited since)."""
    links = _links.c
    found: dict[str, set[int]] = {offer_id: set() for offer_id in offer_ids}
    if not numbers or not offer_ids:
        return found
    wanted = set(numbers)
    ranges: list[tuple[int, int]] = []
    scattered: list[int] = []
    run = [numbers[0]]
    for number in [*numbers[1:], None]:
        if number is not None and number - run[-1] <= _RANGE_GAP:
            run.append(number)
            continue
        if len(run) >= _RANGE_MIN:
            ranges.append((run[0], run[-1]))
        else:
            scattered += run
        if number is not None:
            run = [number]
    queries = [
        select(links.event_number, links.offer_id).where(
            links.event_number.between(low, high), links.offer_id.in_(offer_ids)
        )
        for low, high in ranges
    ] + [
        select(links.event_number, links.offer_id).where(
            links.event_number.in_(scattered[start : start + 1000]),
            links.offer_id.in_(offer_ids),
        )
        for start in range(0, len(scattered), 1000)
    ]
    for query in queries:
        for number, offer_id in session.execute(query).fetchall():
            if number in wanted:
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


def _in_range_groups(offer: Offer, key: int, found: dict[str, _Sums]) -> list[Group]:
    low, high = _limits(getattr(offer.conditions, _MEASURE[offer.classification]))
    measure = _measure(offer)
    groups = []
    for contact, sums in sorted(found.items()):
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
    piece: Slice,
    contacts: Collection[str],
    zone: ZoneInfo,
    period_contacts: int | None = None,
) -> dict[str, list[Group]]:
    """Per offer (of the slice's period kind): the groups of these contacts (the slice's
    pending ones) whose aggregate is in the offer's range, in contact order, each with
    its contributions (the award's links). ``period_contacts``: how many contacts have
    the period pending in every partition (``reads_in_time_order``; default: these).

    One read of the purchases for every offer, summed here in batches: a GROUP BY per
    offer and an ``INSERT ... SELECT`` of the links would read the same rows again for
    each (and reading them is the cost)."""
    result: dict[str, list[Group]] = {offer.id: [] for offer in offers}
    if not contacts or not offers:
        return result
    wanted = contacts if isinstance(contacts, set | frozenset) else set(contacts)
    quantities = [
        _Quantity(offer) if offer.classification == "loyalty_item_quantity" else None
        for offer in offers
    ]
    with_details = any(q is not None for q in quantities)
    time_order = reads_in_time_order(
        len(wanted), len(wanted) if period_contacts is None else period_contacts
    )
    query = _contributions(offers, rulesets, piece, wanted, zone, with_details, time_order)
    offer_ids = [offer.id for offer in offers]
    found: list[dict[str, _Sums]] = [{} for _ in offers]
    for batch in session.execute(query).partitions(5000):
        # The query's business-day bounds are the period's own: only the contact is left
        # to test (a read in time order meets every contact's purchases).
        rows = [row for row in batch if row[0] in wanted]
        if not rows:
            continue
        linked = _linked(session, offer_ids, sorted(row[3] for row in rows))
        offer_columns = list(
            enumerate(zip(found, (linked[i] for i in offer_ids), quantities, strict=True), 6)
        )
        for row in rows:
            contact, number = row[0], row[3]
            amount = row[4] or 0
            lines: list[_ProductLine] | None = None
            for column, (by_contact, taken, measure) in offer_columns:
                if not row[column] or number in taken:
                    continue
                quantity = 0
                if measure is not None:
                    if lines is None:
                        lines = _PRODUCTS.decode(row[5]).products
                    quantity = measure(lines)
                    if quantity <= 0:
                        continue  # no matching line: the purchase does not count
                sums = by_contact.get(contact)
                if sums is None:
                    sums = by_contact[contact] = _Sums()
                sums.total += amount
                sums.count += 1
                sums.quantity += quantity
                sums.members.append(number)
    for offer, by_contact in zip(offers, found, strict=True):
        result[offer.id] = _in_range_groups(offer, piece.key, by_contact)
    return result


def link_rows(offer_id: str, award_id: str, group: Group) -> list[tuple[int, str, str]]:
    """(event_number, offer_id, award_id) links of an award to every contribution."""
    return [(number, offer_id, award_id) for number in group.members]


def reversed_events(session: Session, offer: Offer, piece: Slice) -> set[int]:
    """Event numbers of the slice's contacts that carried an award of the offer that has
    been reversed since (awards are unique per (offer, event): they cannot carry
    another), found through the partial index of reversed aggregate awards."""
    from rewards.db.tables import Award

    awards = table_of(Award)
    a = _aggregate_awards.c
    query = (
        select(e.c.number)
        .select_from(_aggregate_awards)
        .join(awards, awards.c.id == a.award_id)
        .join(e, e.c.id == awards.c.event_id)
        .where(
            a.offer_id == offer.id,
            a.reversed_at.is_not(None),
            a.contact_id > piece.after,
            a.contact_id <= piece.last,
        )
    )
    return {int(n) for n in session.scalars(query)}


def latest_free(group: Group, taken: set[int]) -> int | None:
    """The most recently recorded contribution of the group that did not carry an award
    of the offer before (None: every one did)."""
    return next((number for number in reversed(group.members) if number not in taken), None)
