"""Offers evaluated against a freshly recorded event (immediate evaluation).

Facts are built from the event and the database (contact segments, awards already given
in each offer's ``max_awards`` window); the rules engine decides the matching offers and
amounts. Nothing here writes: ``money.awards`` writes each award with its ledger credit
in the caller's transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any, NamedTuple

from sqlalchemy import Connection, select
from sqlmodel import Session, col

from rewards.db.tables import Award, Contact, Event
from rewards.engine import AwardDecision, Evaluator
from rewards.engine.compiler import prepare_fact
from rewards.offers.facts import build_facts
from rewards.runtime.context import Runtime
from rewards.runtime.metrics import metrics

NOT_EVALUATED = frozenset({"spend_request"})  # spend requests never earn


def awards_in_window(
    session: Session | Connection, runtime: Runtime, event: Event, *, lock: bool = True
) -> dict[str, int]:
    """Per offer with ``max_awards``: awards the contact got from it within the window
    (the days before ``performed_on``), counting only events still posted. ``lock``
    takes the contact's row lock so two events of one contact are decided one after the
    other (a plan made before the write transaction counts without it)."""
    windows = runtime.rulesets.award_windows(event.type)
    if not windows:
        return {}
    # Serialise award decisions of one contact: a row lock on PostgreSQL; SQLite writers
    # are serial already (and would run the SELECT for nothing: it has no FOR UPDATE).
    dialect = session.get_bind().dialect if isinstance(session, Session) else session.dialect
    if lock and dialect.name == "postgresql":
        session.execute(
            select(col(Contact.id)).where(col(Contact.id) == event.contact_id).with_for_update()
        )
    return count_awards_in_windows(session, windows, event)


def count_awards_in_windows(
    session: Session | Connection,
    windows: dict[str, int],
    event: Event,
    *,
    excluding_own: bool = False,
) -> dict[str, int]:
    """offer id -> awards of ``event``'s contact within that offer's window (read only);
    ``excluding_own`` leaves the event's own awards out (explaining a recorded event)."""
    if not windows:
        return {}
    since = event.performed_on - timedelta(days=max(windows.values()))
    conditions = [
        col(Award.contact_id) == event.contact_id,
        col(Award.offer_id).in_(tuple(windows)),
        col(Award.beneficiary) != "referred",
        col(Award.performed_on) > since,
        col(Award.performed_on) <= event.performed_on,
        col(Event.state) == "posted",
    ]
    if excluding_own:
        conditions.append(col(Award.event_id) != event.id)
    rows = session.execute(
        select(col(Award.offer_id), col(Award.performed_on))
        .join(Event, col(Event.id) == Award.event_id)
        .where(*conditions)
    ).all()
    counts: dict[str, int] = {}
    for offer_id, performed_on in rows:
        if performed_on > event.performed_on - timedelta(days=windows[offer_id]):
            counts[offer_id] = counts.get(offer_id, 0) + 1
    return counts


def beneficiary_of(event: Event, decision: AwardDecision) -> str:
    """The contact an award goes to (a referral's awards go to either party)."""
    if decision.beneficiary == "referred":
        return str(event.details["referred_contact_id"])
    if decision.beneficiary == "referrer":
        return str(event.details["referrer_contact_id"])
    return event.contact_id


def evaluates_on_intake(event_type: str, process_immediately: bool) -> bool:
    """Whether ``decide_on_intake`` evaluates such an event (known before it is written,
    so ``events.evaluated`` is written with the row)."""
    return process_immediately and event_type not in NOT_EVALUATED


class Decided(NamedTuple):
    """An award decided for an event, with the contact it goes to."""

    decision: AwardDecision
    contact_id: str


def decide_on_intake(
    session: Session, runtime: Runtime, event: Event, contact: Contact
) -> list[Decided] | None:
    """The immediate offers' awards for ``event`` (of ``contact``) when it asks for
    evaluation (or its type is always immediate), or None when no evaluation takes place.
    Decides only: ``money.awards`` writes them."""
    if not evaluates_on_intake(event.type, event.process_immediately):
        return None
    evaluator = runtime.evaluator  # one ruleset version for the whole evaluation
    facts = build_facts(
        session, event, list(contact.segments), awards_in_window(session, runtime, event)
    )
    with metrics().engine_seconds.time():
        decisions = evaluator.evaluate(facts, mode="immediate")
    return [Decided(decision, beneficiary_of(event, decision)) for decision in decisions]


def decide_facts(
    evaluator: Evaluator, facts: Sequence[dict[str, Any]]
) -> list[list[AwardDecision]]:
    """The immediate offers' decisions for engine facts built by ``facts``' functions
    (``priced_purchase_fact``), in one trip to the engine thread."""
    compiled = evaluator.rulesets.compiled
    return evaluator.evaluate_prepared(
        [prepare_fact(compiled, fact) for fact in facts], mode="immediate"
    )
