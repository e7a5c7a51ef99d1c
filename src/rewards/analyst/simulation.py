"""Simulations: an event evaluated against a ruleset folder, with no writes, explained.

A simulation is ``{"type": ..., "event": {...}}`` (the body of ``POST /v1/events/<type>``;
a purchase's ``reference_number`` may be left out)
plus the contact context the server would otherwise read from the database:
``segments`` (for a referral, the referrer's), ``prior_awards`` (offer id -> awards the
contact already received from that offer within its ``max_awards`` window; a bare number
counts for every offer) and ``period_totals`` (for the period aggregate offers). The event needs no real contact:
its identifier may be left out and is never looked up.

The event is checked like the server checks it (its JSON Schema, totals against the
lines, currency conversion, declared classifications and KPIs, payment medium rules)
and turned into the same ``EventFacts``; a refusal is the same problem (422 with its
``code`` and ``errors`` under ``/event``). Unlike the server, a simulation accepts a
``performed_on`` in the future, so analysts can try an offer before it starts. What the
server accepts without a word but is likely a typing mistake (a store that is not a unit
of the definition, a segment or an offer id it does not know) comes back in the answer's
``warnings``; the awards stay what the server would give.
Nothing touches the database; ``explain_event`` only reads it.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any, Literal

import msgspec
from sqlalchemy import select
from sqlmodel import Session, col

from rewards.analyst import history
from rewards.db.tables import Award, Contact, Event
from rewards.domain import purchase as purchase_math
from rewards.domain.decisions import Explanation
from rewards.domain.money import from_cents
from rewards.domain.payment_medium import automate
from rewards.engine import EventFacts, KpiValue, PeriodTotals, ProductLine, Rulesets
from rewards.engine.evaluator import Evaluator
from rewards.engine.explain import explain
from rewards.engine.model import AGGREGATE_CLASSIFICATIONS
from rewards.errors import (
    ClassificationNotAllowed,
    DomainError,
    EventNotFound,
    FieldError,
    UnknownCurrency,
    ValidationFailed,
)
from rewards.intake import terminals
from rewards.intake.prepare import check_kpis
from rewards.offers.budgets import mark_exhausted
from rewards.offers.evaluation import NOT_EVALUATED, count_awards_in_windows
from rewards.offers.facts import build_facts
from rewards.runtime.context import Runtime
from rewards.runtime.history import stored_evaluator
from rewards.schemas import SchemaRegistry
from rewards.wire import (
    EVENT_BODIES,
    AchievementIn,
    EventIn,
    FinancialAchievementIn,
    FinancialStatementIn,
    PurchaseIn,
    SocialMediaIn,
    WebIn,
)

SCHEMA = "simulation"
SimulatedType = Literal[
    "purchase",
    "referral",
    "achievement",
    "financial_achievement",
    "financial_statement",
    "social_media",
    "web",
]
# Identifiers put in when the event leaves its contact out: never looked up.
_PLACEHOLDERS = {
    "contact": {"contact_code": "simulation"},
    "referred": {"contact_code": "simulation-referred"},
    "referred_by": {"contact_code": "simulation-referrer"},
}


class PeriodTotalsIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    total_amount: Decimal = Decimal(0)
    count: int = 0
    quantity: Decimal = Decimal(0)


class SimulationIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Body of ``POST /v1/simulations`` and one line of ``rewards simulate``."""

    type: SimulatedType
    event: dict[str, Any]
    segments: list[str] = []
    prior_awards: dict[str, int] | int = {}
    period_totals: PeriodTotalsIn | None = None
    mode: Literal["all", "immediate", "batch"] = "all"


class SimulationOut(Explanation, kw_only=True, frozen=True):
    """The answer of a simulation: the explanation, and what looks like a mistake in the
    simulation although the server would accept it (``warnings``, in words)."""

    warnings: list[str] = []


def _given_prior_awards(rulesets: Rulesets, value: dict[str, int] | int) -> dict[str, int]:
    """A bare number counts for every offer; a mapping names the offers."""
    if isinstance(value, int):
        return {offer.id: value for offer in rulesets.offers}
    return dict(value)


def simulation_warnings(rulesets: Rulesets, item: SimulationIn) -> list[str]:
    """What the server would accept without a word but is likely a mistake."""
    warnings = []
    unit = item.event.get("performed_by_unit")
    if isinstance(unit, str) and rulesets.unit(unit) is None:
        warnings.append(
            f"performed_by_unit '{unit}' is not a unit of the definition: offers limited to "
            "units or merchants do not apply to it (the server would accept the event as it is)"
        )
    declared = rulesets.definition.segments
    if declared is not None and not declared.allow_unknown:
        codes = {segment.code for segment in declared.codes}
        for segment in item.segments:
            if segment not in codes:
                warnings.append(
                    f"segment '{segment}' is not declared in the definition's segments: "
                    "no offer names it"
                )
    if isinstance(item.prior_awards, dict):
        for offer_id in item.prior_awards:
            if rulesets.offer(offer_id) is None:
                warnings.append(f"prior_awards: no offer has the id '{offer_id}'")
    return warnings


def _under_event(error: DomainError) -> DomainError:
    """The same refusal with its error paths moved under ``/event``."""
    errors = [FieldError(path=f"/event{e.path}", message=e.message) for e in error.errors or []]
    detail = f"/event{error.detail}" if error.detail.startswith("/") else error.detail
    return type(error)(detail, errors=errors or None)


def _check_classification(rulesets: Rulesets, event_type: str, code: str | None) -> None:
    """As the server: a classification must be declared for the event type, except that an
    undeclared purchase classification is accepted (the server creates it)."""
    if code is None:
        return
    declared = {c.code: c.types for c in rulesets.definition.event_classifications}
    if event_type == "purchase" and code not in declared:
        return
    if event_type not in declared.get(code, ()):
        raise ClassificationNotAllowed(
            f"Classification {code!r} is not declared for {event_type} events.",
            errors=[
                FieldError(path="/classification", message=f"not declared for {event_type} events")
            ],
        )


def _medium(rulesets: Rulesets, body: PurchaseIn | FinancialAchievementIn) -> dict[str, Any]:
    if body.payment_medium is None:
        return {}
    medium = msgspec.to_builtins(body.payment_medium)
    return automate(medium, rulesets.definition.payment_medium)


def _facts(rulesets: Rulesets, event_type: str, body: EventIn, item: SimulationIn) -> EventFacts:
    definition = rulesets.definition
    _check_classification(rulesets, event_type, body.classification)
    if isinstance(body, PurchaseIn):
        body = terminals.at_unit(rulesets, body)  # as intake: the terminal's merchant's unit
    facts = EventFacts(
        event_type=event_type,
        performed_on=body.performed_on,
        classification=body.classification,
        unit=body.performed_by_unit,
        segments=list(item.segments),
        awards_in_window=_given_prior_awards(rulesets, item.prior_awards),
    )
    if isinstance(body, PurchaseIn):
        priced = purchase_math.price(
            body.products, (body.net_amount, body.vat_amount, body.total_amount)
        )
        currency = body.currency or definition.currency
        if currency != definition.currency:
            rate = definition.exchange_rates.get(currency)
            if rate is None:
                raise UnknownCurrency(
                    f"No exchange rate from {currency} to {definition.currency}.",
                    errors=[
                        FieldError(path="/currency", message=f"no exchange rate for {currency}")
                    ],
                )
            priced = purchase_math.convert(priced, rate)
        facts.products = [
            ProductLine(
                sku=line.sku, quantity=line.quantity, total_amount=from_cents(line.total_cents)
            )
            for line in priced.lines
        ]
        facts.total_amount = from_cents(priced.total_cents)
        medium = _medium(rulesets, body)
        facts.payment_brand, facts.payment_type = medium.get("brand"), medium.get("type")
        if item.period_totals is not None:
            totals = PeriodTotals(
                total_amount=item.period_totals.total_amount,
                count=item.period_totals.count,
                quantity=item.period_totals.quantity,
            )
            facts.period_totals = {
                offer.id: totals
                for offer in rulesets.offers
                if offer.classification in AGGREGATE_CLASSIFICATIONS
            }
    elif isinstance(body, FinancialAchievementIn):
        facts.amount = from_cents(purchase_math.exact_cents(body.amount, "/amount"))
        medium = _medium(rulesets, body)
        facts.payment_brand, facts.payment_type = medium.get("brand"), medium.get("type")
    elif isinstance(body, FinancialStatementIn):
        check_kpis(definition, body)
        facts.kpis = [KpiValue(kpi=k.kpi, product=k.product, value=k.value) for k in body.kpis]
    elif isinstance(body, SocialMediaIn):
        facts.platform, facts.action = body.platform, body.action
    elif isinstance(body, WebIn):
        facts.website = body.website
    else:
        assert isinstance(body, AchievementIn) or event_type == "referral"
    try:  # a timestamp at the edge of the calendar cannot be taken to the business zone
        body.performed_on.astimezone(rulesets.time_zone)
    except OverflowError:
        raise ValidationFailed.at("/performed_on", "out of the supported date range") from None
    return facts


def simulation_facts(rulesets: Rulesets, schemas: SchemaRegistry, item: SimulationIn) -> EventFacts:
    """The ``EventFacts`` the server would evaluate for this event (raises ``DomainError``
    with paths under ``/event``)."""
    event = dict(item.event)
    keys = ("referred", "referred_by") if item.type == "referral" else ("contact",)
    for key in keys:
        event.setdefault(key, _PLACEHOLDERS[key])
    if item.type == "purchase":
        event.setdefault("reference_number", "simulation")
    try:
        body = schemas.convert(f"events/{item.type}", event, EVENT_BODIES[item.type])
        return _facts(rulesets, item.type, body, item)
    except DomainError as error:
        raise _under_event(error) from None


def simulate(
    rulesets: Rulesets,
    schemas: SchemaRegistry,
    item: SimulationIn,
    *,
    evaluator: Evaluator | None = None,
    budgets_in: Session | None = None,
) -> SimulationOut:
    """Awards and per-offer explanation of one simulated event (no side effects); with
    ``budgets_in``, offers whose budget for the event's period is used up there are
    shown as not applied."""
    facts = simulation_facts(rulesets, schemas, item)
    explanation = explain(
        rulesets,
        facts,
        mode=item.mode,
        aggregates=item.period_totals is not None,
        evaluator=evaluator,
    )
    if budgets_in is not None:
        explanation = mark_exhausted(budgets_in, rulesets, explanation, facts.performed_on)
    fields = {name: getattr(explanation, name) for name in explanation.__struct_fields__}
    return SimulationOut(**fields, warnings=simulation_warnings(rulesets, item))


def simulate_request(runtime: Runtime, item: SimulationIn, session: Session) -> SimulationOut:
    """``POST /v1/simulations``: against the rulesets serving now (one version throughout)
    and the offers' budgets as they stand."""
    evaluator = runtime.evaluator
    return simulate(
        evaluator.rulesets, runtime.schemas, item, evaluator=evaluator, budgets_in=session
    )


def read_simulations(
    lines: Iterator[str], schemas: SchemaRegistry
) -> Iterator[tuple[int, SimulationIn | DomainError]]:
    """``rewards simulate`` input: one JSON object per line (blank lines and lines starting
    with ``#`` are skipped) -> (line number, simulation or the problem with it)."""
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        try:
            yield number, schemas.decode(SCHEMA, text.encode(), SimulationIn)
        except DomainError as error:
            yield number, error


# --- recorded events ------------------------------------------------------------------


def _prior_awards(session: Session, rulesets: Rulesets, event: Event) -> dict[str, int]:
    """Like ``evaluation.awards_in_window`` but read-only (no row lock) and leaving out the
    event's own awards, so a recorded event is explained as it was decided."""
    return count_awards_in_windows(
        session, rulesets.award_windows(event.type), event, excluding_own=True
    )


def explain_event(session: Session, runtime: Runtime, event_id: str) -> Explanation:
    """Why each offer did or did not apply to a recorded event, under the ruleset version
    that evaluated it (``GET /v1/events/{id}?explain=true``; ``analyst.history``
    ``evaluating_version``), compiled from the ruleset history when it is not the one
    serving; under the serving version when that version is not known or not stored,
    and the explanation says so. Reads only. Every per-event offer (mode ``all``:
    immediate and batch) is explained; the period aggregates are left to runs."""
    event = session.scalars(select(Event).where(col(Event.id) == event_id)).first()
    if event is None:
        raise EventNotFound(f"No event with id {event_id!r}.")
    serving = runtime.evaluator
    version, chosen_by = (
        (None, "serving")
        if event.type in NOT_EVALUATED
        else history.evaluating_version(session, event)
    )
    evaluator = None if version is None else stored_evaluator(session, runtime, version)
    if event.type in NOT_EVALUATED:
        note = f"the serving version: offers never evaluate {event.type} events"
    elif version is None:
        note = "the serving version: no recorded version evaluated this event yet"
    elif evaluator is None:
        note = (
            f"the serving version: version {version}, which evaluated this event, is not "
            "in the ruleset history"
        )
        chosen_by = "serving"
    else:
        note = {
            "awards": f"version {version}, which made this event's awards",
            "loaded_when_recorded": f"version {version}, serving when the event was recorded "
            "(it has no award to pin the version: inferred from the ruleset history)",
            "evaluation_run": f"version {version}, of the evaluation run that evaluated it",
        }[chosen_by]
    evaluator = evaluator or serving
    rulesets = evaluator.rulesets
    if event.type in NOT_EVALUATED:
        explanation = Explanation(
            ruleset_version=rulesets.version,
            event_type=event.type,
            mode="all",
            awards=[],
            total_awarded=Decimal("0.00"),
            offers=[],
        )
    else:
        contact = session.get(Contact, event.contact_id)
        segments = list(contact.segments) if contact is not None else []
        facts = build_facts(session, event, segments, _prior_awards(session, rulesets, event))
        explanation = explain(rulesets, facts, mode="all", aggregates=False, evaluator=evaluator)
        awarded = set(
            session.scalars(select(col(Award.offer_id)).where(col(Award.event_id) == event.id))
        )
        explanation = mark_exhausted(session, rulesets, explanation, event.performed_on, awarded)
    return msgspec.structs.replace(
        explanation,
        ruleset_serving=rulesets.version == serving.rulesets.version,
        ruleset_chosen_by=chosen_by,
        ruleset_note=note,
    )


__all__ = [
    "SimulationIn",
    "SimulationOut",
    "explain_event",
    "read_simulations",
    "simulate",
    "simulate_request",
    "simulation_facts",
]
