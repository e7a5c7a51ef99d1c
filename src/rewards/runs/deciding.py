"""Reading chunks (events, or contacts with closed periods) and deciding them with the
rules engine, outside any write transaction (``Reader``, ``Decider``)."""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

from sqlalchemy import bindparam, select, tuple_
from sqlmodel import Session, col

from rewards.db.database import Database
from rewards.db.run_tables import EvaluationRun
from rewards.db.tables import Award, Contact, Event
from rewards.db.types import table_of
from rewards.domain.decisions import Mode
from rewards.domain.money import from_cents
from rewards.engine import AwardDecision, Evaluator, PeriodTotals
from rewards.engine.compiler import (
    PreparedEvent,
    add_period_totals,
    build_fact,
    prepare,
    prepare_fact,
)
from rewards.engine.model import AGGREGATE_CLASSIFICATIONS, EVENT_TYPES, Offer
from rewards.engine.rulesets import Rulesets
from rewards.offers.facts import build_facts, purchase_fact
from rewards.runs import aggregates
from rewards.runs.records import (
    EventRecord,
    event_columns,
    partition_filter,
    pending_events_filter,
    read_records,
)

log = logging.getLogger("rewards.runs")

_E = table_of(Event).c

# The mode an item is decided in; "": items rebuilt from the read-ahead wire, which are
# only re-checked (max_awards counts), never decided.
ItemMode = Mode | Literal[""]

SEGMENT_CACHE = 200_000  # contacts whose segments a worker keeps


@dataclass
class NewAward:
    """An award decided in a chunk, not written yet."""

    event: EventRecord
    decision: AwardDecision
    group: aggregates.Group | None = None  # aggregate awards: the period group
    period: str | None = None

    @property
    def beneficiary_id(self) -> str:
        if self.decision.beneficiary == "referred":
            return str(self.event.details["referred_contact_id"])
        if self.decision.beneficiary == "referrer":
            return str(self.event.details["referrer_contact_id"])
        return self.event.contact_id


@dataclass
class Item:
    """One engine evaluation: an event (per-event phase), or the aggregate fact of a
    period group (its latest purchase with the period totals of one offer)."""

    event: EventRecord
    mode: ItemMode
    offer: str | None = None  # aggregate items: the only offer they decide
    totals: PeriodTotals | None = None
    group: aggregates.Group | None = None
    period: str | None = None
    wave: int = 0
    db_counts: dict[str, int] = field(default_factory=dict)


@dataclass
class Chunk:
    """A chunk of events read (outside the write transaction), not decided yet: its
    items carry their max_awards counts from the database."""

    after: tuple[datetime, int] | None  # where it was read from (None: the first chunk)
    rows: list[EventRecord]
    items: list[Item]
    segments: dict[str, list[str]]  # of the items' contacts

    @property
    def cursor(self) -> tuple[datetime, int]:
        """Where the next chunk starts (after this one's last event)."""
        return self.rows[-1].performed_on, self.rows[-1].number


@dataclass
class Decided:
    """A chunk of events read and decided outside the write transaction."""

    after: tuple[datetime, int] | None  # where it was read from (None: the first chunk)
    cursor: tuple[datetime, int]  # where the next chunk starts (its last event)
    marks: list[Mark]  # one per event
    windowed: list[Item]  # the items with max_awards windows (re-checked when written)
    awards: list[NewAward]

    def joined(self, following: Decided) -> Decided:
        """This chunk and the one right after it, as one chunk."""
        return Decided(
            self.after,
            following.cursor,
            self.marks + following.marks,
            self.windowed + following.windowed,
            self.awards + following.awards,
        )


# (event number, contact, event type, business day, week, weekday, minute of the day)
Mark = tuple[int, str, str, int, int, int, int]


@dataclass
class Plan:
    """What one slice (a closed period of a range of contacts) earns from the period
    aggregates of its kind; written in parts of at most ``contacts_per_chunk`` contacts
    (``parts``), each in its own transaction."""

    piece: aggregates.Slice
    pending: aggregates.Pending  # what it was decided on (its contacts' pending rows)
    awards: list[NewAward]
    groups: int  # groups in range (awarded or not)
    windowed: list[Item] = field(default_factory=list)  # decided with max_awards counts

    def parts(self, contacts_per_part: int) -> list[Plan]:
        """The plan cut into consecutive slices of at most ``contacts_per_part`` of its
        contacts (the last part ends where the slice does)."""
        contacts = sorted(self.pending)
        if len(contacts) <= contacts_per_part:
            return [self]
        piece = self.piece
        parts: list[Plan] = []
        after = piece.after
        for start in range(0, len(contacts), contacts_per_part):
            mine = contacts[start : start + contacts_per_part]
            last = piece.last if start + contacts_per_part >= len(contacts) else mine[-1]
            part = aggregates.Slice(piece.period, piece.key, after, last)
            inside = set(mine)
            awards = [a for a in self.awards if a.event.contact_id in inside]
            parts.append(
                Plan(
                    part,
                    {c: self.pending[c] for c in mine},
                    awards,
                    len(awards),
                    [i for i in self.windowed if i.event.contact_id in inside],
                )
            )
            after = last
        # Groups in range without an award (max_awards, segments) count in the first part.
        parts[0].groups += self.groups - sum(p.groups for p in parts)
        return parts


Windows = dict[str, dict[str, int]]  # event type -> offer id -> window days


def award_windows(rulesets: Rulesets, offers: list[Offer]) -> Windows:
    """The max_awards windows of ``offers`` by event type (Rulesets.award_windows' shape)."""
    ids = {offer.id for offer in offers}
    found = {
        t: {o: d for o, d in rulesets.award_windows(t).items() if o in ids} for t in EVENT_TYPES
    }
    return {t: w for t, w in found.items() if w}


class Timer:
    """Adds the seconds of a ``with`` block to ``timings[name]`` (no-op without timings)."""

    __slots__ = ("name", "start", "timings")

    def __init__(self, timings: dict[str, float] | None, name: str) -> None:
        self.timings = timings
        self.name = name
        self.start = 0.0

    def __enter__(self) -> None:
        if self.timings is not None:
            self.start = time.perf_counter()

    def __exit__(self, *_: object) -> None:
        if self.timings is not None:
            spent = time.perf_counter() - self.start
            self.timings[self.name] = self.timings.get(self.name, 0.0) + spent


_GC_LOCK = threading.Lock()
_GC_USERS = [0]
# Container allocations (net of those freed) between young collections during a run
# (default 700). A chunk's live rows, facts and decisions pass 20,000 every few
# thousand events, and each young collection then traversed them all: measured with
# gc.callbacks on the 250k bench, 366 collections took 7.9 s of the run's CPU; with
# 200,000, three took 0.4 s. A run's data has no reference cycles to collect early.
GC_FIRST_GENERATION = 200_000


@contextmanager
def fewer_collections() -> Iterator[None]:
    """A run allocates and frees a few hundred thousand objects per chunk (rows, facts,
    decisions). With the default thresholds the cyclic collector ran every 700
    allocations and, every so often, traversed every long-lived object of the process
    (about 15% of a run). While any run works in this process: the objects alive when it
    started are frozen (left out of collections) and the youngest generation is
    collected every ``GC_FIRST_GENERATION`` allocations; the first run to start and the
    last to end set and restore both."""
    with _GC_LOCK:
        _GC_USERS[0] += 1
        if _GC_USERS[0] == 1:
            previous = gc.get_threshold()
            gc.freeze()
            gc.set_threshold(max(previous[0], GC_FIRST_GENERATION), *previous[1:])
            _GC_PREVIOUS[:] = previous
    try:
        yield
    finally:
        with _GC_LOCK:
            _GC_USERS[0] -= 1
            if _GC_USERS[0] == 0:
                gc.set_threshold(*_GC_PREVIOUS)
                gc.unfreeze()


_GC_PREVIOUS: list[int] = []


@dataclass
class EventQueries:
    """A partition's chunk queries by (from a cursor, up to a cursor): the events after
    ``(:after_on, :after_number)`` up to ``(:until_on, :until_number)``, at most a chunk
    (row-value keysets: both databases walk the performed_on index); and by (from a
    cursor) the query of a chunk's last event."""

    chunks: dict[tuple[bool, bool], Any] = field(default_factory=dict)
    bounds: dict[bool, Any] = field(default_factory=dict)


class Reader:
    """Reads chunks of events and decides their awards (``Decider``); writes nothing.
    Every worker has one; a big run's worker has a second one in the read-ahead
    process."""

    def __init__(
        self,
        database: Database,
        evaluator: Evaluator,
        run: EvaluationRun,
        chunk_size: int,
        contacts_per_chunk: int,
        timings: dict[str, float] | None,
    ) -> None:
        self.database = database
        self.evaluator = evaluator
        self.run = run
        self.chunk_size = chunk_size
        self.timings = timings
        rulesets = evaluator.rulesets
        self.offers = {offer.id: offer for offer in rulesets.offers}
        per_event = [
            o for o in rulesets.offers if o.classification not in AGGREGATE_CLASSIFICATIONS
        ]
        by_type = {
            t: [o for o in rulesets.offers_for_event_type(t) if o in per_event] for t in EVENT_TYPES
        }
        self.all_types = {t for t, found in by_type.items() if found}
        self.batch_types = {
            t for t, found in by_type.items() if any(o.evaluation == "batch" for o in found)
        }
        self.batch_groups = any(o.exclusive_group for o in per_event if o.evaluation == "batch")
        # max_awards windows (offer id -> days) per event type: the per-event offers' for
        # the per-event phase, the aggregate offers' for the aggregate phase.
        self.event_windows = award_windows(rulesets, per_event)
        self.aggregate_windows = award_windows(rulesets, aggregates.aggregate_offers(rulesets))
        self.decider = Decider(evaluator, timings)
        self.rulesets = rulesets
        self.zone = rulesets.time_zone
        self.aggregate_offers = aggregates.aggregate_offers(rulesets)
        self.contacts_per_chunk = contacts_per_chunk
        self.text_times = database.write_engine.dialect.name == "sqlite"
        self.event_columns = event_columns(self.text_times)
        self.queries: dict[int, EventQueries] = {}
        self.scopes: dict[int, tuple[aggregates.Closed, Any]] = {}
        self.period_contacts: dict[tuple[str, int], int] = {}  # see plan_aggregates
        self.segment_cache: dict[str, list[str]] = {}

    def _time(self, name: str) -> Timer:
        return Timer(self.timings, name)

    def records(self, session: Session, query: Any, params: dict[str, Any]) -> list[EventRecord]:
        return read_records(session, query, self.text_times, params)

    # -- the per-event phase --

    def _event_queries(self, partition: int) -> EventQueries:
        """The partition's queries (``EventQueries``), built once."""
        found = self.queries.get(partition)
        if found is not None:
            return found
        where = pending_events_filter(self.run.as_of)
        mine = partition_filter(_E.contact_id, self.run.partitions, partition)
        if mine is not None:
            where.append(mine)
        order = (_E.performed_on, _E.number)
        after_on = bindparam("after_on", type_=_E.performed_on.type)
        after_number = bindparam("after_number", type_=_E.number.type)
        until_on = bindparam("until_on", type_=_E.performed_on.type)
        until_number = bindparam("until_number", type_=_E.number.type)
        after = [_E.performed_on >= after_on, tuple_(*order) > tuple_(after_on, after_number)]
        until = [_E.performed_on <= until_on, tuple_(*order) <= tuple_(until_on, until_number)]
        queries = EventQueries()
        for starts in (False, True):
            for ends in (False, True):
                bounds = (after if starts else []) + (until if ends else [])
                queries.chunks[(starts, ends)] = (
                    select(*self.event_columns)
                    .where(*where, *bounds)
                    .order_by(*order)
                    .limit(self.chunk_size)
                )
            # The bound is the chunk-size-th event at all (not the chunk-size-th pending
            # one): the index on performed_on alone finds it, without reading an event
            # row or a mark (which the chunk's read does anyway). A chunk then holds at
            # most a chunk of events, fewer where some were evaluated already.
            queries.bounds[starts] = (
                select(*order)
                .where(
                    _E.performed_on <= self.run.as_of,
                    *([] if mine is None else [mine]),
                    *(after if starts else []),
                )
                .order_by(*order)
                .offset(self.chunk_size - 1)
                .limit(1)
            )
        self.queries[partition] = queries
        return queries

    def event_bound(
        self, partition: int, after: tuple[datetime, int] | None
    ) -> tuple[datetime, int] | None:
        """The last event of the chunk after ``after`` (a chunk of events, pending or not):
        None when fewer than a chunk are left (that chunk is the partition's last)."""
        query = self._event_queries(partition).bounds[after is not None]
        params = {} if after is None else {"after_on": after[0], "after_number": after[1]}
        with self.database.session(write=False) as session, self._time("read"):
            row = session.execute(query, params).first()
        return None if row is None else (row[0], int(row[1]))

    def read_events(
        self,
        partition: int,
        after: tuple[datetime, int] | None,
        until: tuple[datetime, int] | None = None,
    ) -> Decided | None:
        """The partition's chunk after ``after`` (None: its first) up to ``until`` (None:
        a chunk), read and decided here, outside any write transaction; None when no
        event is left."""
        chunk = self.read_chunk(partition, after, until)
        if chunk is None:
            return None
        return self.finish(
            chunk, self.decider.decide(chunk.items, chunk.segments, self.event_windows)
        )

    def read_chunk(
        self,
        partition: int,
        after: tuple[datetime, int] | None,
        until: tuple[datetime, int] | None = None,
    ) -> Chunk | None:
        """The partition's chunk after ``after`` (up to ``until``) with what deciding it
        needs from the database (segments, max_awards counts); None when no event is
        left."""
        query = self._event_queries(partition).chunks[(after is not None, until is not None)]
        params: dict[str, Any] = {}
        if after is not None:
            params.update(after_on=after[0], after_number=after[1])
        if until is not None:
            params.update(until_on=until[0], until_number=until[1])
        with self.database.session(write=False) as reader:
            with self._time("read"):
                rows = self.records(reader, query, params)
            if not rows:
                return None
            items = []
            for row in rows:
                if row.evaluated:
                    if row.type in self.batch_types:
                        items.append(Item(event=row, mode="batch"))
                elif row.type in self.all_types:
                    items.append(Item(event=row, mode="all"))
            with self._time("segments"):
                cache = self.segments(reader, (item.event.contact_id for item in items))
                segments = {
                    item.event.contact_id: cache.get(item.event.contact_id, []) for item in items
                }
            self.count_windows(reader, items, self.event_windows)
        return Chunk(after, rows, items, segments)

    def finish(self, chunk: Chunk, decisions: list[list[AwardDecision]]) -> Decided:
        """The chunk's awards from its items' decisions, less those an exclusive group
        already took on intake."""
        awards = [
            NewAward(item.event, decision, item.group, item.period)
            for item, found in zip(chunk.items, decisions, strict=True)
            for decision in found
        ]
        if self.batch_groups and awards:
            batch = {item.event.number for item in chunk.items if item.mode == "batch"}
            with self.database.session(write=False) as reader:
                awards = self._drop_grouped(reader, awards, batch)
        windowed = [item for item in chunk.items if item.event.type in self.event_windows]
        marks = [
            (
                row.number,
                row.contact_id,
                row.type,
                *aggregates.local_fields(row.performed_on, self.zone),
            )
            for row in chunk.rows
        ]
        return Decided(chunk.after, chunk.cursor, marks, windowed, awards)

    def _drop_grouped(
        self, session: Session, awards: list[NewAward], batch_numbers: set[int]
    ) -> list[NewAward]:
        """A batch offer does not award an event that an offer of its exclusive group
        already awarded (on intake)."""

        def group(award: NewAward) -> str | None:
            return self.offers[award.decision.offer_id].exclusive_group

        candidates = sorted(
            {a.event.id for a in awards if a.event.number in batch_numbers and group(a)}
        )
        if not candidates:
            return awards
        taken: dict[str, set[str]] = defaultdict(set)
        rows = session.execute(
            select(col(Award.event_id), col(Award.offer_id)).where(
                col(Award.event_id).in_(candidates)
            )
        )
        for event_id, offer_id in rows:
            offer = self.offers.get(offer_id)
            if offer is not None and offer.exclusive_group:
                taken[event_id].add(offer.exclusive_group)
        return [
            a
            for a in awards
            if a.event.number not in batch_numbers or group(a) not in taken.get(a.event.id, ())
        ]

    # -- the aggregate phase --

    def aggregate_scope(self, partition: int) -> tuple[aggregates.Closed, Any]:
        """(per period kind in use: the key of the period holding as_of, the partition's
        filter of pending rows), built once."""
        found = self.scopes.get(partition)
        if found is None:
            closed = {
                period: aggregates.current_key(period, self.run.as_of, self.zone)
                for period in aggregates.periods_in_use(self.rulesets)
            }
            mine = partition_filter(
                aggregates.pending_partition_column(), self.run.partitions, partition
            )
            found = self.scopes[partition] = (closed, mine)
        return found

    def aggregate_keys(self, session: Session, partition: int) -> list[tuple[str, int]]:
        """The closed (period kind, key) pairs with pending contacts, in period order."""
        closed, mine = self.aggregate_scope(partition)
        with self._time("aggregate groups"):
            return aggregates.pending_keys(session, closed, self.zone, mine)

    def next_slice(
        self, session: Session, partition: int, period: str, key: int, after: str, size: int
    ) -> aggregates.Slice | None:
        """The next slice of at most ``size`` contacts (after ``after``) with the period
        (``period``, ``key``) pending."""
        _, mine = self.aggregate_scope(partition)
        with self._time("aggregate groups"):
            return aggregates.next_slice(session, period, key, after, size, mine)

    def read_plan(self, partition: int, piece: aggregates.Slice) -> Plan:
        """``plan_aggregates`` outside any write transaction."""
        with self.database.session(write=False) as session:
            return self.plan_aggregates(session, partition, piece)

    def plan_aggregates(self, session: Session, partition: int, piece: aggregates.Slice) -> Plan:
        """The awards the slice's period earns its pending contacts (the offers of its
        kind): each group in range is decided by the engine on the aggregate fact of its
        latest purchase not used by a reversed award of the offer (reads only)."""
        _, mine = self.aggregate_scope(partition)
        offers = [o for o in self.aggregate_offers if aggregates.period_of(o) == piece.period]
        with self._time("aggregate groups"):
            pending = aggregates.pending_of(session, piece, mine)
            period_contacts = self.period_contacts.get((piece.period, piece.key))
            if period_contacts is None:  # counted once: only a share is asked for
                period_contacts = aggregates.count_pending(session, piece.period, piece.key)
                self.period_contacts[(piece.period, piece.key)] = period_contacts
            by_offer = aggregates.in_range_groups(
                session, offers, self.rulesets, piece, set(pending), self.zone, period_contacts
            )
        planned: list[tuple[Offer, aggregates.Group, int]] = []
        skipped = 0
        for offer in offers:
            groups = by_offer[offer.id]
            with self._time("aggregate groups"):
                taken = aggregates.reversed_events(session, offer, piece) if groups else set()
            for group in groups:
                carrier: int | None = group.latest
                if carrier in taken:  # it carried an award of this offer that was reversed
                    carrier = aggregates.latest_free(group, taken)
                if carrier is None:
                    skipped += 1
                    log.warning(
                        "offer %s, contact %s, %s %s: every purchase already carried an award "
                        "of this offer (reversed since); none is left to carry a new one",
                        offer.id,
                        group.contact_id,
                        piece.period,
                        group.key,
                    )
                    continue
                planned.append((offer, group, carrier))
        numbers = sorted({carrier for *_, carrier in planned})
        events: dict[int, EventRecord] = {}
        with self._time("read"):
            for start in range(0, len(numbers), 1000):
                query = select(*self.event_columns).where(
                    _E.number.in_(numbers[start : start + 1000])
                )
                events.update((row.number, row) for row in self.records(session, query, {}))
        items = [
            Item(
                event=events[carrier],
                mode="batch",
                offer=offer.id,
                totals=PeriodTotals(
                    total_amount=from_cents(group.total_cents),
                    count=group.count,
                    quantity=Decimal(group.quantity_milli) / 1000,
                ),
                group=group,
                period=piece.period,
            )
            for offer, group, carrier in planned
        ]
        segments = self.segments(session, {group.contact_id for _, group, _ in planned})
        awards = self.decide(session, items, segments, self.aggregate_windows)
        windowed = [item for item in items if item.event.type in self.aggregate_windows]
        return Plan(piece, pending, awards, len(planned) + skipped, windowed)

    def windows_moved(self, session: Session, items: list[Item], windows: Windows) -> bool:
        """Whether the max_awards counts the items were decided on changed since."""
        if not items:
            return False
        again = self.window_awards(session, items, windows)
        return any(self.counts(item, again, windows) != item.db_counts for item in items)

    # -- facts and decisions (both phases) --

    def segments(self, session: Session, contact_ids: Iterable[str]) -> dict[str, list[str]]:
        """The contacts' segments, read once per reader (a run sees a contact's segments
        as they were when it first met the contact); the cache is bounded."""
        cache = self.segment_cache
        missing = sorted({c for c in contact_ids if c not in cache})
        if len(cache) + len(missing) > SEGMENT_CACHE:
            cache.clear()
        for start in range(0, len(missing), 1000):
            rows = session.execute(
                select(col(Contact.id), col(Contact.segments)).where(
                    col(Contact.id).in_(missing[start : start + 1000])
                )
            )
            for contact_id, segments in rows:
                cache[contact_id] = list(segments or [])
        return cache

    def window_awards(
        self, session: Session, items: Sequence[Item], windows: Windows
    ) -> dict[tuple[str, str], list[datetime]]:
        """The awards that count towards these items' max_awards windows, by (contact,
        offer): the rules of evaluation.awards_in_window (the contact's awards of the
        offer, not as the referred contact, of events still posted)."""
        windowed = [item for item in items if item.event.type in windows]
        if not windowed:
            return {}
        offers = sorted({o for item in windowed for o in windows[item.event.type]})
        longest = max(d for item in windowed for d in windows[item.event.type].values())
        since = min(item.event.performed_on for item in windowed) - timedelta(days=longest)
        until = max(item.event.performed_on for item in windowed)
        awards = table_of(Award).c
        found: dict[tuple[str, str], list[datetime]] = defaultdict(list)
        contacts = sorted({item.event.contact_id for item in windowed})
        for start in range(0, len(contacts), 500):
            rows = session.execute(
                select(awards.contact_id, awards.offer_id, awards.performed_on)
                .join(table_of(Event), _E.id == awards.event_id)
                .where(
                    awards.contact_id.in_(contacts[start : start + 500]),
                    awards.offer_id.in_(offers),
                    awards.beneficiary != "referred",
                    awards.performed_on > since,
                    awards.performed_on <= until,
                    _E.state == "posted",
                )
            )
            for contact_id, offer_id, performed_on in rows:
                found[(contact_id, offer_id)].append(performed_on)
        return found

    @staticmethod
    def counts(
        item: Item, awards: dict[tuple[str, str], list[datetime]], windows: Windows
    ) -> dict[str, int]:
        """Per windowed offer: the awards within its window before the item's event."""
        moment = item.event.performed_on
        counts: dict[str, int] = {}
        for offer_id, days in windows.get(item.event.type, {}).items():
            since = moment - timedelta(days=days)
            found = awards.get((item.event.contact_id, offer_id), ())
            n = sum(1 for p in found if since < p <= moment)
            if n:
                counts[offer_id] = n
        return counts

    def count_windows(self, session: Session, items: list[Item], windows: Windows) -> None:
        """Each windowed item's max_awards counts from the database (``db_counts``)."""
        windowed = [item for item in items if item.event.type in windows]
        if windowed:
            db_awards = self.window_awards(session, windowed, windows)
            for item in windowed:
                item.db_counts = self.counts(item, db_awards, windows)

    def decide(
        self,
        session: Session,
        items: list[Item],
        segments: dict[str, list[str]],
        windows: Windows,
    ) -> list[NewAward]:
        """Evaluate the items here; the awards they earn (not written yet)."""
        self.count_windows(session, items, windows)
        decisions = self.decider.decide(items, segments, windows)
        return [
            NewAward(item.event, decision, item.group, item.period)
            for item, found in zip(items, decisions, strict=True)
            for decision in found
        ]


class Decider:
    """Decides items (``Item`` with their database counts) with the rules engine; reads
    nothing from the database."""

    def __init__(self, evaluator: Evaluator, timings: dict[str, float] | None) -> None:
        self.evaluator = evaluator
        self.compiled = evaluator.rulesets.compiled
        self.timings = timings
        # An aggregate offer in an exclusive group can lose to a per-event offer of that
        # group matched on the same (carrier) purchase: only then are those evaluated too.
        self.aggregates_grouped = any(
            o.exclusive_group for o in aggregates.aggregate_offers(evaluator.rulesets)
        )
        self.ruleset_of = {item.offer.id: item.ruleset for item in self.compiled.offers}
        # Per-event facts go through the rulesets merged per event type (one assertion
        # per event instead of one per classification).
        self.merged = evaluator.merged()

    def _time(self, name: str) -> Timer:
        return Timer(self.timings, name)

    def decide(
        self, items: list[Item], segments: dict[str, list[str]], windows: Windows
    ) -> list[list[AwardDecision]]:
        """Each item's decisions (an aggregate item's: of its own offer only). Items of
        one contact with max_awards windows go in successive waves (performed_on order),
        so each sees the awards the earlier ones earned in this chunk."""
        result: list[list[AwardDecision]] = [[] for _ in items]
        if not items:
            return result
        windowed = [item for item in items if item.event.type in windows]
        if windowed:
            seen: dict[str, int] = defaultdict(int)
            for item in sorted(windowed, key=lambda i: (i.event.performed_on, i.event.number)):
                item.wave = seen[item.event.contact_id]
                seen[item.event.contact_id] += 1
        chunk_awards: dict[tuple[str, str], list[datetime]] = defaultdict(list)
        for wave in sorted({item.wave for item in items}):
            by_kind: dict[tuple[ItemMode, bool], list[tuple[int, PreparedEvent]]]
            by_kind = defaultdict(list)
            with self._time("facts"):
                for index, item in enumerate(items):
                    if item.wave != wave:
                        continue
                    counts = item.db_counts
                    if chunk_awards and item.event.type in windows:
                        counts = dict(counts)
                        for offer_id, n in Reader.counts(item, chunk_awards, windows).items():
                            counts[offer_id] = counts.get(offer_id, 0) + n
                    prepared = self._prepare(item, segments, counts)
                    by_kind[(item.mode, item.offer is not None)].append((index, prepared))
            for (mode, aggregate), pairs in by_kind.items():
                assert mode, "items without a mode are only re-checked, never decided"
                with self._time("engine"):
                    decided = self.evaluator.evaluate_prepared(
                        [prepared for _, prepared in pairs],
                        mode=mode,
                        aggregates=aggregate,
                    )
                for (index, _), decisions in zip(pairs, decided, strict=True):
                    item = items[index]
                    for decision in decisions:
                        if aggregate and decision.offer_id != item.offer:
                            continue  # an aggregate fact only decides its own offer
                        result[index].append(decision)
                        if decision.beneficiary != "referred" and item.event.type in windows:
                            key = (item.event.contact_id, decision.offer_id)
                            chunk_awards[key].append(item.event.performed_on)
        return result

    def _prepare(
        self, item: Item, segments: dict[str, list[str]], counts: dict[str, int]
    ) -> PreparedEvent:
        """The item's facts flattened for the engine: a purchase's straight from its
        stored details; an aggregate item's with the period totals of its offer (and only
        the aggregate rulesets when no aggregate offer is in an exclusive group)."""
        event = item.event
        contact_segments = segments.get(event.contact_id, [])
        compiled = self.compiled
        if event.type == "purchase" and (item.offer is None or item.totals is not None):
            fact = purchase_fact(compiled, event, contact_segments, counts)
            if fact is not None:
                if item.offer is None:
                    return prepare_fact(compiled, fact, merged=self.merged)
                assert item.totals is not None
                add_period_totals(compiled, fact, {item.offer: item.totals})
                return self._prepare_aggregate(fact, item.offer)
        facts = build_facts(None, event, contact_segments, counts)
        if item.offer is None or item.totals is None:
            return prepare(compiled, facts, merged=self.merged)
        facts.period_totals = {item.offer: item.totals}
        return self._prepare_aggregate(build_fact(compiled, facts, aggregates=True), item.offer)

    def _prepare_aggregate(self, fact: dict[str, Any], offer_id: str) -> PreparedEvent:
        """An aggregate fact: into its offer's ruleset only, unless an aggregate offer is in
        an exclusive group (then the per-event rulesets too, see ``aggregates_grouped``)."""
        if self.aggregates_grouped:
            return prepare_fact(self.compiled, fact, aggregates=True)
        return prepare_fact(
            self.compiled, fact, aggregates=True, per_event=False, only=self.ruleset_of[offer_id]
        )
