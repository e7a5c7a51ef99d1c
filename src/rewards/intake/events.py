"""Event intake: recording one event or a bulk of them (idempotency, the per-type
preparation of ``prepare``, the offers' decisions written by ``money``), reading them
back, and cancellation. One call = one event, inside the caller's transaction."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import cast

import msgspec
from sqlalchemy import Select, bindparam, delete, select, update
from sqlmodel import Session, col

from rewards import runs
from rewards.db import outbox
from rewards.db.ids import time_ordered_id
from rewards.db.pages import decode_cursor, encode_cursor
from rewards.db.tables import (
    Event,
    Spend,
    StatementPeriod,
)
from rewards.db.types import unsaved_row
from rewards.domain.details import EventDetails
from rewards.domain.money import from_cents
from rewards.errors import (
    AlreadyCancelled,
    DomainError,
    EventNotFound,
    FieldError,
    IdempotencyConflict,
    PerformedInFuture,
    ValidationFailed,
    refusal,
)
from rewards.intake import rows, terminals
from rewards.intake.answers import render_event
from rewards.intake.identify import consume_otp
from rewards.intake.prepare import PREPARE
from rewards.money import spending
from rewards.money.awards import write_awards
from rewards.money.ledger import Entry, reverse_event_entries
from rewards.offers import evaluation
from rewards.runtime.context import Runtime
from rewards.runtime.metrics import metrics
from rewards.wire import (
    EVENT_BODIES,
    BulkItemIn,
    BulkOut,
    BulkResult,
    CancelledEventOut,
    EventCancelled,
    EventIn,
    EventOut,
    EventPage,
    ProblemOut,
    PurchaseIn,
    ReversalKind,
    ReversalOut,
)

FUTURE_TOLERANCE = timedelta(minutes=5)
# The earliest business timestamp an event may carry: the schemas' patterns allow the
# years 2000-2999 in the timestamp's own offset, so 2000-01-01T00:00:00+23:59 is the
# earliest instant. Older dates are typing errors, and the calendar arithmetic of runs
# must never meet year 1 (docs/decisions.md).
EARLIEST_BUSINESS_TIME = datetime(1999, 12, 31, 0, 1, tzinfo=UTC)
InvalidParameter = refusal("invalid_parameters", "Invalid request parameters", 400)
_encoder = msgspec.json.Encoder(decimal_format="string")


@dataclass(frozen=True)
class Recorded:
    event: EventOut
    created: bool  # False: an idempotent replay of an earlier request


def request_hash(event_type: str, body: EventIn) -> str:
    return hashlib.sha256(event_type.encode() + b"\0" + _encoder.encode(body)).hexdigest()


# ---- recording ------------------------------------------------------------------------


def _replay(session: Session, runtime: Runtime, existing: Event, digest: str) -> Recorded:
    if existing.request_hash != digest:
        raise IdempotencyConflict(
            f"external_reference {existing.external_reference!r} of system {existing.external_system!r} "
            f"was used for event {existing.id} with a different body.",
            errors=[
                FieldError(path="/external_reference", message="already used with a different body")
            ],
        )
    return Recorded(event=render_event(session, existing, runtime.now()), created=False)


@cache
def _event_by_external_reference() -> Select[Event]:
    """Built once per process on first use (building costs about as much as running)."""
    return select(Event).where(
        col(Event.external_system) == bindparam("system"),
        col(Event.external_reference) == bindparam("reference"),
    )


def _find_external(session: Session, system: str, reference: str) -> Event | None:
    return session.scalars(
        _event_by_external_reference(), {"system": system, "reference": reference}
    ).first()


def check_business_time(body: EventIn, now: datetime) -> None:
    """A business timestamp lies between ``EARLIEST_BUSINESS_TIME`` and 5 minutes from now."""
    check_performed_on(body.performed_on, now)


def check_performed_on(moment: datetime, now: datetime, path: str = "/performed_on") -> None:
    if moment > now + FUTURE_TOLERANCE:
        raise PerformedInFuture(
            f"{path[1:]} is more than 5 minutes in the future.",
            errors=[FieldError(path=path, message="more than 5 minutes in the future")],
        )
    if moment < EARLIEST_BUSINESS_TIME:
        raise ValidationFailed.at(path, "before 2000-01-01")


def new_event(
    runtime: Runtime,
    event_type: str,
    body: EventIn,
    digest: str,
    contact_id: str,
    amount_cents: int | None,
    details: EventDetails,
    now: datetime,
) -> Event:
    """The event row (not yet written) of a request whose contact and details are known."""
    definition = runtime.rulesets.definition
    process_immediately = body.process_immediately or event_type in definition.immediate_event_types
    return unsaved_row(
        Event,
        {
            "number": None,  # set by rows.insert_event
            "id": time_ordered_id(),  # UUID v7: indexes keyed by event id append
            "type": event_type,
            "state": "posted",
            "contact_id": contact_id,
            "classification": body.classification,
            "performed_on": body.performed_on,
            "performed_by_unit": body.performed_by_unit,
            "description": body.description,
            "external_system": body.external_system or "",
            "external_reference": body.external_reference,
            "request_hash": digest,
            "process_immediately": process_immediately,
            "evaluated": evaluation.evaluates_on_intake(event_type, process_immediately),
            "amount_cents": amount_cents,
            "details": msgspec.to_builtins(details),
            "created_at": now,
            "cancelled_at": None,
        },
    )


def replay_existing(session: Session, runtime: Runtime, body: EventIn, digest: str) -> Recorded:
    """The answer to a request whose external reference is already recorded."""
    system = body.external_system or ""
    existing = _find_external(session, system, body.external_reference or "")
    if existing is None:  # pragma: no cover - only the external reference is unique
        raise RuntimeError(
            f"external reference {body.external_reference!r} conflicted with no event"
        )
    return _replay(session, runtime, existing, digest)


def record_event(session: Session, runtime: Runtime, event_type: str, body: EventIn) -> Recorded:
    """Record one event (201) or replay the one its external reference names (200)."""
    digest = request_hash(event_type, body)
    if isinstance(body, PurchaseIn):
        body = terminals.at_unit(runtime.rulesets, body)
    system = body.external_system or ""
    if body.external_reference is not None and (
        existing := _find_external(session, system, body.external_reference)
    ):
        return _replay(session, runtime, existing, digest)
    now = runtime.now()
    check_business_time(body, now)
    draft = PREPARE[event_type](session, runtime, body)
    event = new_event(
        runtime, event_type, body, digest, draft.contact.id, draft.amount_cents, draft.details, now
    )
    connection = session.connection()
    if not rows.insert_event(connection, event):  # a concurrent twin got there first
        return replay_existing(session, runtime, body, digest)
    for identified, path in draft.identified:
        consume_otp(session, identified, path, now)
    if draft.lines:
        rows.insert_lines(connection, event.id, draft.lines)
    for step in draft.after_insert:
        step(session, event)
    decided = evaluation.decide_on_intake(session, runtime, event, draft.contact) or []
    awards = write_awards(session, event, decided)
    spends = draft.spends
    if awards and event.type == "purchase":
        already = sum(spend.amount_cents for spend in spends)
        spends += spending.instant_spends(session, runtime, event, awards, already)
    session.flush()
    metrics().events.labels(type=event_type).inc()
    return Recorded(event=render_event(session, event, now, made=(awards, spends)), created=True)


def record_bulk(session: Session, runtime: Runtime, items: list[BulkItemIn]) -> BulkOut:
    """Each item validated and recorded on its own (a savepoint each): one bad item
    does not sink the others. Results come back in input order."""
    results = []
    for i, item in enumerate(items):
        try:
            with session.begin_nested():
                body = runtime.schemas.convert(
                    f"events/{item.type}", item.event, EVENT_BODIES[item.type]
                )
                recorded = record_event(session, runtime, item.type, body)
            results.append(
                BulkResult(status=201 if recorded.created else 200, event=recorded.event)
            )
        except DomainError as error:
            problem = msgspec.to_builtins(error.to_problem())
            for entry in problem.get("errors") or []:
                entry["path"] = f"/{i}/event{entry['path']}"
            results.append(
                BulkResult(status=error.status, problem=msgspec.convert(problem, ProblemOut))
            )
    return BulkOut(items=results)


# ---- reading --------------------------------------------------------------------------


def _event(session: Session, event_id: str) -> Event:
    event = session.scalars(select(Event).where(col(Event.id) == event_id)).first()
    if event is None:
        raise EventNotFound(f"No event with id {event_id!r}.")
    return event


def get_event(session: Session, runtime: Runtime, event_id: str) -> EventOut:
    return render_event(session, _event(session, event_id), runtime.now())


@dataclass(frozen=True)
class EventFilter:
    type: str | None = None
    contact_id: str | None = None
    state: str | None = None
    performed_from: str | None = None  # RFC 3339 with zone
    performed_to: str | None = None
    merchant_id: str | None = None  # events at the merchant's units; unknown merchant: none


def parse_timestamp(name: str, value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value.upper())  # RFC 3339 allows "t" and "z"
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise InvalidParameter(
            f"{name}: not an RFC 3339 timestamp with zone",
            errors=[FieldError(path=name, message="not an RFC 3339 timestamp with zone")],
        )
    try:
        return moment.astimezone(UTC)
    except OverflowError:  # an offset past the calendar's end (9999-12-31, west of UTC)
        # or start (year 1, east of UTC): as a bound that is the calendar's end or start.
        edge = datetime.max if moment.year == datetime.max.year else datetime.min
        return edge.replace(tzinfo=UTC)


def list_events(
    session: Session, runtime: Runtime, where: EventFilter, limit: int, cursor: str | None
) -> EventPage:
    """Newest first; ``performed_from`` inclusive, ``performed_to`` exclusive."""
    performed_from = parse_timestamp("performed_from", where.performed_from)
    performed_to = parse_timestamp("performed_to", where.performed_to)
    query = select(Event)
    if where.type:
        query = query.where(col(Event.type) == where.type)
    if where.contact_id:
        query = query.where(col(Event.contact_id) == where.contact_id)
    if where.state:
        query = query.where(col(Event.state) == where.state)
    if where.merchant_id is not None:
        units = runtime.rulesets.merchant_units(where.merchant_id)
        query = query.where(col(Event.performed_by_unit).in_(units))
    if performed_from:
        query = query.where(col(Event.performed_on) >= performed_from)
    if performed_to:
        query = query.where(col(Event.performed_on) < performed_to)
    if (before := decode_cursor(cursor)) is not None:
        query = query.where(col(Event.number) < before)
    rows = session.scalars(query.order_by(col(Event.number).desc()).limit(limit + 1)).all()
    now = runtime.now()
    items = [render_event(session, row, now) for row in rows[:limit]]
    return EventPage(
        items=items, next_cursor=encode_cursor(items[-1].number) if len(rows) > limit else None
    )


# ---- cancellation ---------------------------------------------------------------------


def cancel_event(session: Session, runtime: Runtime, event_id: str) -> CancelledEventOut:
    """State -> cancelled and a reversal of what is left of every award and spend the
    event caused, in the caller's transaction; a purchase takes its spend requests with
    it. The conditional update makes a second cancel a 409."""
    event = _event(session, event_id)
    now = runtime.now()
    # A purchase that contributed to a period-aggregate award takes that award back whole.
    reversals = runs.on_event_cancelled(session, runtime, event) if event.state == "posted" else []
    reversals += _cancel(session, event, now)
    if event.type == "purchase":
        dependants = session.scalars(
            select(Event)
            .join(Spend, col(Spend.event_id) == Event.id)
            .where(
                col(Spend.purchase_event_id) == event.id,
                col(Event.id) != event.id,
                col(Event.state) == "posted",
            )
        ).all()
        for dependant in dependants:
            reversals += _cancel(session, dependant, now)
    rendered = render_event(session, event, now)
    return CancelledEventOut(
        **{name: getattr(rendered, name) for name in rendered.__struct_fields__},
        reversals=[
            ReversalOut(
                id=entry.id or 0,
                kind=cast("ReversalKind", entry.kind),  # reversals only, see reverse_event_entries
                amount=from_cents(entry.amount_cents),
                balance_after=from_cents(entry.balance_after_cents),
                reverses_id=entry.reverses_id,
                offer_id=entry.offer_id,
            )
            for entry in reversals
        ],
    )


def _cancel(session: Session, event: Event, now: datetime) -> list[Entry]:
    changed = session.exec(
        update(Event)
        .where(col(Event.id) == event.id, col(Event.state) == "posted")
        .values(state="cancelled", cancelled_at=now)
    ).rowcount
    if changed != 1:
        raise AlreadyCancelled(f"Event {event.id} is already cancelled.")
    session.refresh(event)
    if event.type == "financial_statement":
        session.execute(delete(StatementPeriod).where(col(StatementPeriod.event_id) == event.id))
    reversals = reverse_event_entries(session, event.id)
    told = EventCancelled(
        contact_id=event.contact_id,
        event_id=event.id,
        event_type=event.type,
        number=event.number or 0,
        reversals=len(reversals),
    )
    outbox.emit(session, [outbox.notice("event.cancelled", event.contact_id, told)], now)
    return reversals
