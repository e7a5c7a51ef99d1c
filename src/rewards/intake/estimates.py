"""Purchase estimates: the awards a purchase would earn (same code path as a real
purchase, no writes but the estimate itself), what the contact could spend, and an
optional reservation of that amount. An expired reservation never counts: expiry is a
timestamp compared whenever reservations are summed, so no background job is needed."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

import msgspec
from sqlalchemy import update
from sqlmodel import Session, col

from rewards.db.tables import Estimate, Event
from rewards.domain.money import from_cents, to_cents
from rewards.errors import (
    EstimateConsumed,
    EstimateExpired,
    EstimateNotApproved,
    EstimateNotFound,
    EstimateUnknown,
    FieldError,
)
from rewards.intake.identify import identify
from rewards.intake.purchases import purchase_details  # shared with real purchases
from rewards.money import spending
from rewards.offers.evaluation import awards_in_window
from rewards.offers.facts import build_facts
from rewards.runtime.context import Runtime
from rewards.wire import (
    AwardOut,
    EstimateIn,
    EstimateOut,
    LineAwardOut,
)


def status_of(estimate: Estimate, now: datetime) -> str:
    if estimate.consumed_at is not None:
        return "consumed"
    if estimate.expires_at <= now:
        return "expired"
    if estimate.requires_approval and estimate.approved_at is None:
        return "pending"
    return "approved"


def _render(estimate: Estimate, now: datetime) -> EstimateOut:
    result = dict(estimate.result)
    result |= {
        "id": estimate.id,
        "status": status_of(estimate, now),
        "requires_approval": estimate.requires_approval,
        "expires_at": estimate.expires_at,
        "consumed_by_event_id": estimate.consumed_by,
        "created_at": estimate.created_at,
    }
    return msgspec.convert(result, EstimateOut, strict=False)


def create_estimate(session: Session, runtime: Runtime, body: EstimateIn) -> EstimateOut:
    now = runtime.now()
    performed_on = body.performed_on or now
    contact = identify(session, runtime, body.contact, "/contact").contact
    priced, details = purchase_details(runtime, body)
    probe = Event(  # never added to the session: the purchase as it would be recorded
        id=str(uuid.uuid4()),
        type="purchase",
        contact_id=contact.id,
        classification=body.classification,
        performed_on=performed_on,
        performed_by_unit=body.performed_by_unit,
        request_hash="",
        process_immediately=True,
        amount_cents=priced.total_cents,
        details=msgspec.to_builtins(details),
    )
    facts = build_facts(
        session, probe, list(contact.segments), awards_in_window(session, runtime, probe)
    )
    decisions = runtime.evaluator.evaluate(facts, mode="immediate")
    awards = [
        AwardOut(
            offer_id=d.offer_id,
            offer_name=d.offer_name,
            classification=d.classification,
            amount=d.amount,
            contact_id=contact.id,
            lines=[
                LineAwardOut(index=line.index, sku=line.sku, amount=line.amount) for line in d.lines
            ]
            if d.lines is not None
            else None,
        )
        for d in decisions
    ]
    rules = runtime.rulesets.definition.spend_requests
    wallet = spending.locked_wallet(session, contact.id)  # serialises reservations of one wallet
    available = spending.available_cents(session, wallet, now)
    requested = (
        to_cents(body.spend.amount)
        if body.spend is not None and body.spend.amount is not None
        else None
    )
    spendable = max(
        0,
        min(
            available,
            priced.total_cents,
            requested if requested is not None else priced.total_cents,
        ),
    )
    if rules.max_amount is not None:
        spendable = min(spendable, to_cents(rules.max_amount))
    low = to_cents(rules.min_amount) if rules.min_amount is not None else 1
    allow = not contact.spend_blocked and spendable >= low
    reserved = spendable if body.reserve and allow else 0
    expires_at = now + timedelta(seconds=body.reserve_ttl_seconds)
    result: dict[str, Any] = {
        "contact_id": contact.id,
        "awards": msgspec.to_builtins(awards),
        "total_award": str(sum((d.amount for d in decisions), start=from_cents(0))),
        "instant_spend": str(
            sum((d.amount for d in decisions if d.instant_spend), start=from_cents(0))
        ),
        "total_amount": str(from_cents(priced.total_cents)),
        "spendable": {
            "amount": str(from_cents(spendable)),
            "min_spend": str(rules.min_amount) if rules.min_amount is not None else None,
            "max_spend": str(rules.max_amount) if rules.max_amount is not None else None,
        },
        "allow_spending": allow,
        "wallet": {
            "code": wallet.code,
            "balance": str(from_cents(wallet.balance_cents)),
            "available": str(from_cents(available - reserved)),
        },
        "reservation": {"amount": str(from_cents(reserved)), "expires_at": expires_at.isoformat()}
        if reserved
        else None,
    }
    estimate = Estimate(
        id=str(uuid.uuid4()),
        contact_id=contact.id,
        wallet_id=wallet.id or 0,
        result=result,
        reserved_cents=reserved,
        requires_approval=body.requires_approval,
        expires_at=expires_at,
        created_at=now,
    )
    session.add(estimate)
    session.flush()
    return _render(estimate, now)


def _estimate(session: Session, estimate_id: str) -> Estimate:
    estimate = session.get(Estimate, estimate_id)
    if estimate is None:
        raise EstimateNotFound(f"No estimate with id {estimate_id!r}.")
    return estimate


def get_estimate(session: Session, runtime: Runtime, estimate_id: str) -> EstimateOut:
    return _render(_estimate(session, estimate_id), runtime.now())


def approve_estimate(session: Session, runtime: Runtime, estimate_id: str) -> EstimateOut:
    """The consumer approves; 409 once expired or consumed (approving twice is fine)."""
    estimate = _estimate(session, estimate_id)
    now = runtime.now()
    changed = session.exec(
        update(Estimate)
        .where(
            col(Estimate.id) == estimate.id,
            col(Estimate.consumed_at).is_(None),
            col(Estimate.expires_at) > now,
        )
        .values(approved_at=estimate.approved_at or now)
    ).rowcount
    session.refresh(estimate)
    if changed != 1:
        _refuse_state(estimate, now)
    return _render(estimate, now)


def _refuse_state(estimate: Estimate, now: datetime) -> None:
    if estimate.consumed_at is not None:
        raise EstimateConsumed(
            f"Estimate {estimate.id} was used by purchase {estimate.consumed_by}."
        )
    if estimate.expires_at <= now:
        raise EstimateExpired(
            f"Estimate {estimate.id} expired at {estimate.expires_at.isoformat()}."
        )


def usable(session: Session, runtime: Runtime, estimate_id: str, contact_id: str) -> Estimate:
    """The estimate a purchase names: of the same contact, open, approved if required."""
    estimate = session.get(Estimate, estimate_id)
    if estimate is None or estimate.contact_id != contact_id:
        raise EstimateUnknown(
            "No estimate of this contact with that id.",
            errors=[FieldError(path="/estimate_id", message="no estimate of this contact")],
        )
    now = runtime.now()
    _refuse_state(estimate, now)
    if estimate.requires_approval and estimate.approved_at is None:
        raise EstimateNotApproved(
            f"Estimate {estimate.id} requires approval before a purchase may use it."
        )
    return estimate


def consume(session: Session, runtime: Runtime, estimate: Estimate, purchase_id: str) -> None:
    """Mark the estimate used by ``purchase_id``; a concurrent second use gets a 409."""
    changed = session.exec(
        update(Estimate)
        .where(col(Estimate.id) == estimate.id, col(Estimate.consumed_at).is_(None))
        .values(consumed_at=runtime.now(), consumed_by=purchase_id)
    ).rowcount
    if changed != 1:
        raise EstimateConsumed(f"Estimate {estimate.id} was used by another purchase.")
