"""Event intake: identification, the per-type rules of DOMAIN.md, idempotency, the
evaluation seam, and cancellation. One call = one event, inside the caller's transaction."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from functools import cache
from typing import Any
from zoneinfo import ZoneInfo

import msgspec
from sqlalchemy import bindparam, delete, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from rewards import runs
from rewards.db.ids import time_ordered_id
from rewards.db.pages import decode_cursor, encode_cursor
from rewards.db.tables import (
    Contact,
    Event,
    EventLine,
    PurchaseClassification,
    Sku,
    Spend,
    StatementPeriod,
)
from rewards.domain import purchase as purchase_math
from rewards.domain.money import from_cents
from rewards.domain.payment_medium import automate
from rewards.errors import (
    AlreadyCancelled,
    ClassificationNotAllowed,
    DomainError,
    DuplicateStatement,
    EventNotFound,
    FieldError,
    IdempotencyConflict,
    PerformedInFuture,
    PurchaseNotFound,
    PurchaseNotPosted,
    ReferralLimitExceeded,
    SelfReferral,
    UnknownCurrency,
    refusal,
)
from rewards.intake import estimates
from rewards.intake.answers import decimal_text, money, render_event
from rewards.intake.identify import Identified, consume_otp, identify
from rewards.money import spending
from rewards.money.ledger import reverse_event_entries
from rewards.offers import evaluation
from rewards.runtime.context import Runtime
from rewards.runtime.metrics import metrics
from rewards.wire import (
    EVENT_BODIES,
    AchievementIn,
    BulkItemIn,
    BulkOut,
    BulkResult,
    CancelledEventOut,
    EstimateIn,
    EventIn,
    EventOut,
    EventPage,
    FinancialAchievementIn,
    FinancialStatementIn,
    ProblemOut,
    PurchaseIn,
    ReferralIn,
    ReversalOut,
    SocialMediaIn,
    SpendRequestIn,
    WebIn,
)

FUTURE_TOLERANCE = timedelta(minutes=5)
InvalidParameter = refusal("invalid_parameters", "Invalid request parameters", 400)
UnknownKpi = refusal("kpi_not_found", "KPI not declared in the definition")
DuplicateKpi = refusal("duplicate_kpi", "KPI listed twice for the same product")
_encoder = msgspec.json.Encoder(decimal_format="string")


@dataclass
class Draft:
    """Everything an event will write, computed before anything is written."""

    contact: Contact
    identified: list[tuple[Identified, str]]  # (identification, body path) whose OTPs get used
    amount_cents: int | None = None
    details: dict[str, Any] = field(default_factory=dict)
    lines: list[purchase_math.PricedLine] = field(default_factory=list)
    after_insert: list[Callable[[Session, Event], None]] = field(default_factory=list)
    spends: list[spending.MadeSpend] = field(default_factory=list)  # made by after_insert


@dataclass(frozen=True)
class Recorded:
    event: EventOut
    created: bool  # False: an idempotent replay of an earlier request


def request_hash(event_type: str, body: EventIn) -> str:
    return hashlib.sha256(event_type.encode() + b"\0" + _encoder.encode(body)).hexdigest()


# ---- per-type preparation -------------------------------------------------------------


def _contact(session: Session, runtime: Runtime, body: EventIn) -> Draft:
    assert body.contact is not None  # the schema requires it for every type but referral
    found = identify(session, runtime, body.contact, "/contact")
    return Draft(contact=found.contact, identified=[(found, "/contact")])


def declared_types(runtime: Runtime, code: str) -> set[str] | None:
    """The event types the definition declares a classification for (None: undeclared)."""
    for declared in runtime.rulesets.definition.event_classifications:
        if declared.code == code:
            return set(declared.types)
    return None


def _check_classification(runtime: Runtime, event_type: str, code: str | None) -> None:
    if code is None:
        return
    if event_type not in (declared_types(runtime, code) or ()):
        raise ClassificationNotAllowed(
            f"Classification {code!r} is not declared for {event_type} events.",
            errors=[
                FieldError(path="/classification", message=f"not declared for {event_type} events")
            ],
        )


@cache
def _insert_ignore_statement(dialect_name: str, table: Any) -> Any:
    """Built once per process and table: a statement built per call with ``.values(rows)``
    is compiled anew every time (about 2.5 ms per purchase on the reference machine)."""
    dialect = postgresql if dialect_name == "postgresql" else sqlite
    return dialect.insert(table).on_conflict_do_nothing()


def _insert_ignore(session: Session, table: Any, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    dialect_name = session.get_bind().dialect.name
    session.connection().execute(_insert_ignore_statement(dialect_name, table.__table__), rows)


def purchase_details(
    runtime: Runtime, body: PurchaseIn | EstimateIn
) -> tuple[purchase_math.PricedPurchase, dict[str, Any]]:
    """Totals (checked), conversion to the business currency and the payment medium after
    the definition's automation: the stored fields of a purchase (or an estimate)."""
    definition = runtime.rulesets.definition
    if body.classification is not None:
        declared_for = declared_types(runtime, body.classification)
        if declared_for is not None and "purchase" not in declared_for:
            _check_classification(runtime, "purchase", body.classification)
    priced = purchase_math.price(
        body.products, (body.net_amount, body.vat_amount, body.total_amount)
    )
    currency = body.currency or definition.currency
    details: dict[str, Any] = {"currency": definition.currency}
    if body.reference_number is not None:
        details["reference_number"] = body.reference_number
    if currency != definition.currency:
        rate = definition.exchange_rates.get(currency)
        if rate is None:
            raise UnknownCurrency(
                f"No exchange rate from {currency} to {definition.currency}.",
                errors=[FieldError(path="/currency", message=f"no exchange rate for {currency}")],
            )
        details["original_currency"] = currency
        details["original_total_amount"] = money(priced.total_cents)
        priced = purchase_math.convert(priced, rate)
    details |= {
        "products": [
            {
                "sku": line.sku,
                "quantity": decimal_text(line.quantity),
                "net_amount": money(line.net_cents),
                "vat_amount": money(line.vat_cents),
                "total_amount": money(line.total_cents),
            }
            for line in priced.lines
        ],
        "net_amount": money(priced.net_cents),
        "vat_amount": money(priced.vat_cents),
        "total_amount": money(priced.total_cents),
    }
    if body.payment_medium is not None:
        details["payment_medium"] = automate(
            msgspec.to_builtins(body.payment_medium), definition.payment_medium
        )
    return priced, details


def _prepare_purchase(session: Session, runtime: Runtime, body: PurchaseIn) -> Draft:
    priced, details = purchase_details(runtime, body)
    draft = _contact(session, runtime, body)
    draft.amount_cents = priced.total_cents
    draft.lines = priced.lines
    if body.estimate_id is not None:
        details["estimate_id"] = body.estimate_id
    draft.details = details
    otp = draft.identified[0][0].otp
    estimate = (
        estimates.usable(session, runtime, body.estimate_id, draft.contact.id)
        if body.estimate_id
        else None
    )

    def create_catalogue_entries(session: Session, _event: Event) -> None:
        _insert_ignore(
            session, Sku, [{"code": sku} for sku in sorted({line.sku for line in priced.lines})]
        )
        if body.classification is not None and declared_types(runtime, body.classification) is None:
            _insert_ignore(session, PurchaseClassification, [{"code": body.classification}])

    def identify_and_spend(session: Session, event: Event) -> None:
        """Before the purchase's own awards: a spend it carries, an OTP's spend amount,
        or an estimate's reservation."""
        if estimate is not None:
            estimates.consume(session, runtime, estimate, event.id)
        requested: int | None = None
        if body.spend is not None and body.spend.amount is not None:
            requested = purchase_math.exact_cents(body.spend.amount, "/spend/amount")
        elif otp is not None and otp.spend_amount_cents is not None:
            requested = otp.spend_amount_cents
        elif estimate is not None and body.spend is None:
            requested = min(estimate.reserved_cents, priced.total_cents) or None
            if requested is None:
                return
        elif body.spend is None:
            return
        spend = spending.spend_on_purchase(
            session,
            runtime,
            contact=draft.contact,
            purchase=event,
            event_id=event.id,
            performed_on=event.performed_on,
            ask=spending.SpendAsk(
                requested_cents=requested,
                path="/spend/amount",
                only_if_fully_covered=bool(body.spend and body.spend.only_if_fully_covered),
                otp=otp,
                excluding_estimate=estimate.id if estimate is not None else None,
            ),
        )
        draft.spends.append(spend)

    draft.after_insert += [create_catalogue_entries, identify_and_spend]
    return draft


def _business_day_bounds(runtime: Runtime, moment: datetime) -> tuple[datetime, datetime]:
    zone = ZoneInfo(runtime.rulesets.definition.time_zone)
    day = moment.astimezone(zone).date()
    start = datetime.combine(day, time.min, tzinfo=zone)
    return start, datetime.combine(day + timedelta(days=1), time.min, tzinfo=zone)


def _prepare_referral(session: Session, runtime: Runtime, body: ReferralIn) -> Draft:
    _check_classification(runtime, "referral", body.classification)
    referred = identify(session, runtime, body.referred, "/referred")
    referrer = identify(session, runtime, body.referred_by, "/referred_by")
    if referred.contact.id == referrer.contact.id:
        raise SelfReferral(
            "The referred contact and the referrer are the same contact.",
            errors=[FieldError(path="/referred", message="same contact as referred_by")],
        )
    # Serialise referrals of one referrer (PostgreSQL row lock; SQLite writers are serial).
    session.execute(select(Contact.id).where(Contact.id == referrer.contact.id).with_for_update())
    start, end = _business_day_bounds(runtime, body.performed_on)
    count = (
        session.scalar(
            select(func.count())
            .select_from(Event)
            .where(
                Event.type == "referral",
                Event.state == "posted",
                Event.contact_id == referrer.contact.id,
                Event.performed_on >= start,
                Event.performed_on < end,  # type: ignore[operator]
            )
        )
        or 0
    )
    limit = runtime.rulesets.definition.referrals_per_day
    if count >= limit:
        raise ReferralLimitExceeded(
            f"The referrer already made {count} referral(s) on {start.date()} (limit {limit}).",
            errors=[
                FieldError(
                    path="/referred_by", message=f"limit of {limit} referrals per day reached"
                )
            ],
        )
    return Draft(
        contact=referrer.contact,
        identified=[(referred, "/referred"), (referrer, "/referred_by")],
        details={
            "referred_contact_id": referred.contact.id,
            "referrer_contact_id": referrer.contact.id,
        },
    )


def _prepare_achievement(session: Session, runtime: Runtime, body: AchievementIn) -> Draft:
    _check_classification(runtime, "achievement", body.classification)
    return _contact(session, runtime, body)


def _prepare_financial_achievement(
    session: Session, runtime: Runtime, body: FinancialAchievementIn
) -> Draft:
    _check_classification(runtime, "financial_achievement", body.classification)
    amount = purchase_math.exact_cents(body.amount, "/amount")
    draft = _contact(session, runtime, body)
    draft.amount_cents = amount
    draft.details = {"amount": money(amount)}
    if body.product is not None:
        draft.details["product"] = body.product
    if body.payment_medium is not None:
        medium = msgspec.to_builtins(body.payment_medium)
        draft.details["payment_medium"] = automate(
            medium, runtime.rulesets.definition.payment_medium
        )
    return draft


def _prepare_financial_statement(
    session: Session, runtime: Runtime, body: FinancialStatementIn
) -> Draft:
    _check_classification(runtime, "financial_statement", body.classification)
    known = {kpi.code for kpi in runtime.rulesets.definition.kpis}
    seen: set[tuple[str, str | None]] = set()
    kpis = []
    for i, item in enumerate(body.kpis):
        if item.kpi not in known:
            raise UnknownKpi(
                f"KPI {item.kpi!r} is not declared.",
                errors=[FieldError(path=f"/kpis/{i}/kpi", message="unknown KPI")],
            )
        if (item.kpi, item.product) in seen:
            raise DuplicateKpi(
                f"KPI {item.kpi!r} appears twice for product {item.product!r}.",
                errors=[FieldError(path=f"/kpis/{i}", message="duplicate (kpi, product)")],
            )
        seen.add((item.kpi, item.product))
        purchase_math.exact_cents(item.value, f"/kpis/{i}/value")
        kpis.append(
            {
                "kpi": item.kpi,
                "value": decimal_text(item.value),
                **({"product": item.product} if item.product else {}),
            }
        )
    draft = _contact(session, runtime, body)
    draft.details = {"period": body.period, "kpis": kpis}

    def claim_period(session: Session, event: Event) -> None:
        try:
            with session.begin_nested():
                session.add(
                    StatementPeriod(
                        contact_id=event.contact_id,
                        classification=body.classification or "",
                        period=body.period,
                        event_id=event.id,
                    )
                )
        except IntegrityError:
            raise DuplicateStatement(
                f"A {body.classification or 'financial'} statement for {body.period} is already recorded.",
                errors=[
                    FieldError(
                        path="/period",
                        message="already recorded for this contact and classification",
                    )
                ],
            ) from None

    draft.after_insert.append(claim_period)
    return draft


def _prepare_social_media(session: Session, runtime: Runtime, body: SocialMediaIn) -> Draft:
    _check_classification(runtime, "social_media", body.classification)
    draft = _contact(session, runtime, body)
    draft.details = {
        "platform": body.platform,
        "action": body.action,
        **({"profile": body.profile} if body.profile else {}),
    }
    return draft


def _prepare_web(session: Session, runtime: Runtime, body: WebIn) -> Draft:
    _check_classification(runtime, "web", body.classification)
    draft = _contact(session, runtime, body)
    draft.details = {"website": body.website}
    return draft


def _prepare_spend_request(session: Session, runtime: Runtime, body: SpendRequestIn) -> Draft:
    _check_classification(runtime, "spend_request", body.classification)
    draft = _contact(session, runtime, body)
    purchase = session.scalars(select(Event).where(Event.id == body.purchase_event_id)).first()
    where = [
        FieldError(path="/purchase_event_id", message="no purchase of this contact with this id")
    ]
    if purchase is None or purchase.type != "purchase" or purchase.contact_id != draft.contact.id:
        raise PurchaseNotFound("No purchase of this contact with that id.", errors=where)
    if purchase.state != "posted":
        raise PurchaseNotPosted(
            "The purchase is cancelled.",
            errors=[FieldError(path="/purchase_event_id", message="purchase is cancelled")],
        )
    draft.details = {"purchase_event_id": purchase.id}
    requested = None
    if body.requested_amount is not None:
        requested = purchase_math.exact_cents(body.requested_amount, "/requested_amount")
        draft.details["requested_amount"] = money(requested)
    ask = spending.SpendAsk(
        requested_cents=requested, path="/requested_amount", otp=draft.identified[0][0].otp
    )

    def spend(session: Session, event: Event) -> None:
        made = spending.spend_on_purchase(
            session,
            runtime,
            contact=draft.contact,
            purchase=purchase,
            event_id=event.id,
            performed_on=event.performed_on,
            ask=ask,
        )
        draft.spends.append(made)

    draft.after_insert.append(spend)
    return draft


PREPARE: dict[str, Callable[[Session, Runtime, Any], Draft]] = {
    "purchase": _prepare_purchase,
    "referral": _prepare_referral,
    "achievement": _prepare_achievement,
    "financial_achievement": _prepare_financial_achievement,
    "financial_statement": _prepare_financial_statement,
    "social_media": _prepare_social_media,
    "web": _prepare_web,
    "spend_request": _prepare_spend_request,
}


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
def _event_by_external_reference() -> Any:
    """Built once per process on first use (building costs about as much as running)."""
    return select(Event).where(
        Event.external_system == bindparam("system"),
        Event.external_reference == bindparam("reference"),
    )


@cache
def _insert_lines() -> Any:
    return insert(EventLine.__table__)  # type: ignore[attr-defined]


@cache
def _insert_event_statement(dialect_name: str) -> Any:
    table = Event.__table__  # type: ignore[attr-defined]
    dialect = postgresql if dialect_name == "postgresql" else sqlite
    return (
        dialect.insert(table)
        .on_conflict_do_nothing(index_elements=["external_system", "external_reference"])
        .returning(table.c.number)
    )


def _insert_event(session: Session, event: Event) -> bool:
    """INSERT the event row (Core, no ORM flush or savepoint) and set its ``number``;
    False when the unique (external_system, external_reference) already holds a row: a
    concurrent twin committed first (PostgreSQL waits for it), so the caller replays."""
    columns = Event.__table__.columns  # type: ignore[attr-defined]
    row = {
        column.name: getattr(event, column.name) for column in columns if column.name != "number"
    }
    statement = _insert_event_statement(session.get_bind().dialect.name)
    number = session.connection().execute(statement, row).scalar_one_or_none()
    if number is None:
        return False
    event.number = number
    return True


def _find_external(session: Session, system: str, reference: str) -> Event | None:
    return session.scalars(
        _event_by_external_reference(), {"system": system, "reference": reference}
    ).first()


def record_event(session: Session, runtime: Runtime, event_type: str, body: EventIn) -> Recorded:
    """Record one event (201) or replay the one its external reference names (200)."""
    digest = request_hash(event_type, body)
    system = body.external_system or ""
    if body.external_reference is not None and (
        existing := _find_external(session, system, body.external_reference)
    ):
        return _replay(session, runtime, existing, digest)
    now = runtime.now()
    if body.performed_on > now + FUTURE_TOLERANCE:
        raise PerformedInFuture(
            "performed_on is more than 5 minutes in the future.",
            errors=[FieldError(path="/performed_on", message="more than 5 minutes in the future")],
        )
    draft = PREPARE[event_type](session, runtime, body)
    definition = runtime.rulesets.definition
    process_immediately = body.process_immediately or event_type in definition.immediate_event_types
    event = Event(
        id=time_ordered_id(),  # UUID v7: indexes keyed by event id append
        type=event_type,
        contact_id=draft.contact.id,
        classification=body.classification,
        performed_on=body.performed_on,
        performed_by_unit=body.performed_by_unit,
        description=body.description,
        external_system=system,
        external_reference=body.external_reference,
        request_hash=digest,
        process_immediately=process_immediately,
        evaluated=evaluation.evaluates_on_intake(event_type, process_immediately),
        amount_cents=draft.amount_cents,
        details=draft.details,
        created_at=now,
    )
    if not _insert_event(session, event):  # a concurrent twin got there first
        existing = _find_external(session, system, body.external_reference or "")
        if existing is None:  # pragma: no cover - only the external reference is unique
            raise RuntimeError(f"event {event.id} conflicted with no event")
        return _replay(session, runtime, existing, digest)
    for identified, path in draft.identified:
        consume_otp(session, identified, path, now)
    if draft.lines:  # one executemany; the ORM would build an object per line
        session.connection().execute(
            _insert_lines(),
            [
                {
                    "event_id": event.id,
                    "line_no": i,
                    "sku": line.sku,
                    "quantity_milli": int(line.quantity * 1000),
                    "net_cents": line.net_cents,
                    "vat_cents": line.vat_cents,
                    "total_cents": line.total_cents,
                }
                for i, line in enumerate(draft.lines)
            ],
        )
    for step in draft.after_insert:
        step(session, event)
    awards = evaluation.evaluate_on_intake(session, runtime, event, draft.contact) or []
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
    event = session.scalars(select(Event).where(Event.id == event_id)).first()
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


def parse_timestamp(name: str, value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise InvalidParameter(
            f"{name}: not an RFC 3339 timestamp with zone",
            errors=[FieldError(path=name, message="not an RFC 3339 timestamp with zone")],
        )
    return moment


def list_events(
    session: Session, runtime: Runtime, where: EventFilter, limit: int, cursor: str | None
) -> EventPage:
    """Newest first; ``performed_from`` inclusive, ``performed_to`` exclusive."""
    performed_from = parse_timestamp("performed_from", where.performed_from)
    performed_to = parse_timestamp("performed_to", where.performed_to)
    query = select(Event)
    if where.type:
        query = query.where(Event.type == where.type)
    if where.contact_id:
        query = query.where(Event.contact_id == where.contact_id)
    if where.state:
        query = query.where(Event.state == where.state)
    if performed_from:
        query = query.where(Event.performed_on >= performed_from)  # type: ignore[operator]
    if performed_to:
        query = query.where(Event.performed_on < performed_to)  # type: ignore[operator]
    if (before := decode_cursor(cursor)) is not None:
        query = query.where(Event.number < before)  # type: ignore[operator]
    rows = session.scalars(query.order_by(Event.number.desc()).limit(limit + 1)).all()  # type: ignore[union-attr]
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
            .join(Spend, Spend.event_id == Event.id)
            .where(
                Spend.purchase_event_id == event.id, Event.id != event.id, Event.state == "posted"
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
                kind=entry.kind,  # type: ignore[arg-type]
                amount=from_cents(entry.amount_cents),
                balance_after=from_cents(entry.balance_after_cents),
                reverses_id=entry.reverses_id,
                offer_id=entry.offer_id,
            )
            for entry in reversals
        ],
    )


def _cancel(session: Session, event: Event, now: datetime) -> list[Any]:
    changed = session.execute(
        update(Event)
        .where(Event.id == event.id, Event.state == "posted")
        .values(state="cancelled", cancelled_at=now)
    ).rowcount
    if changed != 1:
        raise AlreadyCancelled(f"Event {event.id} is already cancelled.")
    session.refresh(event)
    if event.type == "financial_statement":
        session.execute(delete(StatementPeriod).where(StatementPeriod.event_id == event.id))
    return reverse_event_entries(session, event.id)
