"""Rendering stored events as the wire ``EventOut``."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

import msgspec
from sqlalchemy import select
from sqlmodel import Session

from rewards.db.tables import Award, Event, Spend, Wallet
from rewards.domain.money import from_cents
from rewards.services.contacts import reserved_cents
from rewards.wire import AwardOut, EventOut, EventWallet, LineAwardOut, SpendOut


def money(cents: int) -> str:
    """Amounts inside ``Event.details`` are decimal strings (exact in JSON columns)."""
    return str(from_cents(cents))


def decimal_text(value: Decimal) -> str:
    return str(value)


def event_wallet(session: Session, contact_id: str, now: datetime) -> EventWallet:
    wallet = session.scalars(select(Wallet).where(Wallet.contact_id == contact_id)).one()
    reserved = reserved_cents(session, wallet, now)
    return EventWallet(
        code=wallet.code,
        balance=from_cents(wallet.balance_cents),
        available=from_cents(wallet.balance_cents - reserved),
    )


def awards_of(session: Session, event: Event) -> list[AwardOut]:
    """Awards the event earned, in the order they were made."""
    awards = session.scalars(
        select(Award).where(Award.event_id == event.id).order_by(Award.ledger_entry_id)
    ).all()
    return [
        AwardOut(
            offer_id=award.offer_id,
            offer_name=award.offer_name,
            classification=award.classification,
            amount=from_cents(award.amount_cents),
            contact_id=award.contact_id,
            lines=[
                LineAwardOut(index=line["index"], sku=line["sku"], amount=Decimal(line["amount"]))
                for line in award.lines
            ]
            if award.lines is not None
            else None,
        )
        for award in awards
    ]


def spends_of(session: Session, event: Event) -> list[SpendOut]:
    """A purchase: every spend against it; a spend request: the spend it made."""
    column = Spend.purchase_event_id if event.type == "purchase" else Spend.event_id
    spends = session.scalars(
        select(Spend).where(column == event.id).order_by(Spend.ledger_entry_id)
    ).all()
    return [
        SpendOut(id=spend.id, amount=from_cents(spend.amount_cents), instant=spend.instant)
        for spend in spends
    ]


def render_event(session: Session, event: Event, now: datetime, **extra: Any) -> EventOut:
    fields: dict[str, Any] = {
        "id": event.id,
        "number": event.number,
        "type": event.type,
        "state": event.state,
        "contact_id": event.contact_id,
        "performed_on": event.performed_on,
        "created_at": event.created_at,
        "evaluated": event.evaluated,
        "process_immediately": event.process_immediately,
        "performed_by_unit": event.performed_by_unit,
        "classification": event.classification,
        "description": event.description,
        "external_system": event.external_system or None,
        "external_reference": event.external_reference,
        "cancelled_at": event.cancelled_at,
        **event.details,
    }
    fields["awards"] = awards_of(session, event)
    fields["spends"] = spends_of(session, event)
    fields["wallet"] = event_wallet(session, event.contact_id, now)
    return msgspec.convert(fields | extra, EventOut, strict=False)
