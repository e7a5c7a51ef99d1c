"""Offers evaluated against a freshly recorded event (immediate evaluation).

Facts are built from the event and the database (contact segments, awards already given
in each offer's ``max_awards`` window); the rules engine decides the matching offers and
amounts; each award is written with its ledger credit in the caller's transaction. The
unique (offer, event, beneficiary) constraint makes a second award impossible.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlmodel import Session

from rewards.db.tables import Award, Contact, Event, Wallet
from rewards.domain.money import to_cents
from rewards.engine import AwardDecision, EventFacts, KpiValue, ProductLine
from rewards.services.ledger import post_entry
from rewards.services.metrics import metrics
from rewards.services.runtime import Runtime

NOT_EVALUATED = frozenset({"spend_request"})  # spend requests never earn


def build_facts(
    session: Session, event: Event, segments: list[str], awards_in_window: dict[str, int]
) -> EventFacts:
    """The flat, stateless description of ``event`` the engine evaluates."""
    details: dict[str, Any] = event.details
    medium = details.get("payment_medium") or {}
    return EventFacts(
        event_type=event.type,
        performed_on=event.performed_on,
        classification=event.classification,
        unit=event.performed_by_unit,
        segments=segments,
        awards_in_window=awards_in_window,
        total_amount=Decimal(details["total_amount"]) if "total_amount" in details else None,
        products=[
            ProductLine(
                sku=line["sku"],
                quantity=Decimal(line["quantity"]),
                total_amount=Decimal(line["total_amount"]),
            )
            for line in details.get("products", [])
        ],
        payment_brand=medium.get("brand"),
        payment_type=medium.get("type"),
        amount=Decimal(details["amount"]) if "amount" in details else None,
        kpis=[
            KpiValue(kpi=item["kpi"], product=item.get("product"), value=Decimal(item["value"]))
            for item in details.get("kpis", [])
        ],
        platform=details.get("platform"),
        action=details.get("action"),
        website=details.get("website"),
    )


def awards_in_window(session: Session, runtime: Runtime, event: Event) -> dict[str, int]:
    """Per offer with ``max_awards``: awards the contact got from it within the window
    (the days before ``performed_on``), counting only events still posted. Takes the
    contact's row lock so two events of one contact are decided one after the other."""
    windows = runtime.rulesets.award_windows(event.type)
    if not windows:
        return {}
    # Serialise award decisions of one contact (PostgreSQL row lock; SQLite writers are serial).
    session.execute(select(Contact.id).where(Contact.id == event.contact_id).with_for_update())
    return count_awards_in_windows(session, windows, event)


def count_awards_in_windows(
    session: Session, windows: dict[str, int], event: Event, *, excluding_own: bool = False
) -> dict[str, int]:
    """offer id -> awards of ``event``'s contact within that offer's window (read only);
    ``excluding_own`` leaves the event's own awards out (explaining a recorded event)."""
    if not windows:
        return {}
    since = event.performed_on - timedelta(days=max(windows.values()))
    conditions = [
        Award.contact_id == event.contact_id,
        Award.offer_id.in_(tuple(windows)),  # type: ignore[attr-defined]
        Award.beneficiary != "referred",
        Award.performed_on > since,  # type: ignore[operator]
        Award.performed_on <= event.performed_on,  # type: ignore[operator]
        Event.state == "posted",
    ]
    if excluding_own:
        conditions.append(Award.event_id != event.id)
    rows = session.execute(
        select(Award.offer_id, Award.performed_on)
        .join(Event, Event.id == Award.event_id)
        .where(*conditions)
    ).all()
    counts: dict[str, int] = {}
    for offer_id, performed_on in rows:
        if performed_on > event.performed_on - timedelta(days=windows[offer_id]):
            counts[offer_id] = counts.get(offer_id, 0) + 1
    return counts


def _beneficiary(event: Event, decision: AwardDecision) -> str:
    if decision.beneficiary == "referred":
        return str(event.details["referred_contact_id"])
    if decision.beneficiary == "referrer":
        return str(event.details["referrer_contact_id"])
    return event.contact_id


def persist_award(session: Session, event: Event, decision: AwardDecision) -> Award:
    """One award record and its ledger credit, in the caller's transaction."""
    contact_id = _beneficiary(event, decision)
    wallet_id = session.scalars(select(Wallet.id).where(Wallet.contact_id == contact_id)).one()
    amount = to_cents(decision.amount)
    award_id = str(uuid.uuid4())
    entry = post_entry(
        session,
        wallet_id=wallet_id,
        kind="award",
        amount_cents=amount,
        event_id=event.id,
        offer_id=decision.offer_id,
        award_id=award_id,
    )
    award = Award(
        id=award_id,
        event_id=event.id,
        offer_id=decision.offer_id,
        offer_name=decision.offer_name,
        classification=decision.classification,
        beneficiary=decision.beneficiary,
        contact_id=contact_id,
        amount_cents=amount,
        lines=[
            {"index": line.index, "sku": line.sku, "amount": str(line.amount)}
            for line in decision.lines
        ]
        if decision.lines is not None
        else None,
        instant_spend=decision.instant_spend,
        ruleset_version=decision.ruleset_version,
        performed_on=event.performed_on,
        ledger_entry_id=entry.id or 0,
    )
    session.add(award)
    metrics().awards.labels(offer_id=decision.offer_id).inc()
    metrics().awarded_cents.inc(amount)
    return award


def evaluate_on_intake(session: Session, runtime: Runtime, event: Event) -> list[Award] | None:
    """Evaluate immediate offers for ``event`` when it asks for it (or its type is
    always immediate): the awards made, or None when no evaluation took place."""
    if not event.process_immediately or event.type in NOT_EVALUATED:
        return None
    evaluator = runtime.evaluator  # one ruleset version for the whole evaluation
    contact = session.get(Contact, event.contact_id)
    assert contact is not None
    facts = build_facts(
        session, event, list(contact.segments), awards_in_window(session, runtime, event)
    )
    with metrics().engine_seconds.time():
        decisions = evaluator.evaluate(facts, mode="immediate")
    awards = [persist_award(session, event, decision) for decision in decisions]
    session.flush()
    return awards
