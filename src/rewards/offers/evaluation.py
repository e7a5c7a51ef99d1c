"""Offers evaluated against a freshly recorded event (immediate evaluation).

Facts are built from the event and the database (contact segments, awards already given
in each offer's ``max_awards`` window); the rules engine decides the matching offers and
amounts; each award is written with its ledger credit in the caller's transaction. The
unique (offer, event, beneficiary) constraint makes a second award impossible.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from functools import cache
from typing import Any, NamedTuple

from sqlalchemy import bindparam, insert, select
from sqlmodel import Session

from rewards.db.ids import time_ordered_id
from rewards.db.tables import Award, Contact, Event, Wallet
from rewards.db.types import utcnow
from rewards.domain.money import to_cents
from rewards.engine import AwardDecision, EventFacts, KpiValue, ProductLine
from rewards.money.ledger import post_entry
from rewards.runtime.context import Runtime
from rewards.runtime.metrics import metrics

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
    # Serialise award decisions of one contact: a row lock on PostgreSQL; SQLite writers
    # are serial already (and would run the SELECT for nothing: it has no FOR UPDATE).
    if session.get_bind().dialect.name == "postgresql":
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


class MadeAward(NamedTuple):
    """An award as written (the row of ``awards``), plus its beneficiary's wallet."""

    id: str
    event_id: str
    offer_id: str
    offer_name: str
    classification: str
    beneficiary: str
    contact_id: str
    wallet_id: int
    amount_cents: int
    lines: list[dict[str, Any]] | None
    instant_spend: bool
    ledger_entry_id: int


@dataclass(frozen=True)
class _Statements:
    wallet_of: Any  # the wallet id of a contact
    insert_award: Any


@cache
def _statements() -> _Statements:
    """Built once per process, on first use (building costs more than running)."""
    wallets = Wallet.__table__  # type: ignore[attr-defined]
    return _Statements(
        wallet_of=select(wallets.c.id).where(wallets.c.contact_id == bindparam("contact")),
        insert_award=insert(Award.__table__),  # type: ignore[attr-defined]
    )


def wallet_id_of(session: Session, contact_id: str) -> int:
    wallet_id: int = (
        session.connection().execute(_statements().wallet_of, {"contact": contact_id}).scalar_one()
    )
    return wallet_id


def persist_award(
    session: Session, event: Event, decision: AwardDecision, wallet_id: int | None = None
) -> MadeAward:
    """One award record and its ledger credit, in the caller's transaction
    (``wallet_id``: the beneficiary's wallet when the caller knows it)."""
    contact_id = _beneficiary(event, decision)
    if wallet_id is None:
        wallet_id = wallet_id_of(session, contact_id)
    amount = to_cents(decision.amount)
    award_id = time_ordered_id()
    entry = post_entry(
        session,
        wallet_id=wallet_id,
        kind="award",
        amount_cents=amount,
        event_id=event.id,
        offer_id=decision.offer_id,
        award_id=award_id,
    )
    award = MadeAward(
        id=award_id,
        event_id=event.id,
        offer_id=decision.offer_id,
        offer_name=decision.offer_name,
        classification=decision.classification,
        beneficiary=decision.beneficiary,
        contact_id=contact_id,
        wallet_id=wallet_id,
        amount_cents=amount,
        lines=[
            {"index": line.index, "sku": line.sku, "amount": str(line.amount)}
            for line in decision.lines
        ]
        if decision.lines is not None
        else None,
        instant_spend=decision.instant_spend,
        ledger_entry_id=entry.id,
    )
    row = award._asdict()
    del row["wallet_id"]
    row |= {
        "ruleset_version": decision.ruleset_version,
        "performed_on": event.performed_on,
        "created_at": utcnow(),
    }
    session.connection().execute(_statements().insert_award, row)
    metrics().awards.labels(offer_id=decision.offer_id).inc()
    metrics().awarded_cents.inc(amount)
    return award


def evaluates_on_intake(event_type: str, process_immediately: bool) -> bool:
    """Whether ``evaluate_on_intake`` evaluates such an event (known before it is written,
    so ``events.evaluated`` is written with the row)."""
    return process_immediately and event_type not in NOT_EVALUATED


def evaluate_on_intake(
    session: Session, runtime: Runtime, event: Event, contact: Contact
) -> list[MadeAward] | None:
    """Evaluate immediate offers for ``event`` (of ``contact``) when it asks for it (or
    its type is always immediate): the awards made, or None when no evaluation took place."""
    if not evaluates_on_intake(event.type, event.process_immediately):
        return None
    evaluator = runtime.evaluator  # one ruleset version for the whole evaluation
    facts = build_facts(
        session, event, list(contact.segments), awards_in_window(session, runtime, event)
    )
    with metrics().engine_seconds.time():
        decisions = evaluator.evaluate(facts, mode="immediate")
    wallets: dict[str, int] = {}
    awards = []
    for decision in decisions:
        beneficiary = _beneficiary(event, decision)
        if beneficiary not in wallets:
            wallets[beneficiary] = wallet_id_of(session, beneficiary)
        awards.append(persist_award(session, event, decision, wallets[beneficiary]))
    return awards
