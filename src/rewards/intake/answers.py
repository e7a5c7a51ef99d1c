"""Rendering stored events as the wire ``EventOut``."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Protocol

import msgspec
from sqlalchemy import select
from sqlmodel import Session, col

from rewards.db.tables import Award, Event, Spend
from rewards.domain.money import from_cents
from rewards.intake.matching import matched_transaction
from rewards.money.wallets import event_wallet
from rewards.wire import AwardOut, EventOut, EventWallet, LineAwardOut, SpendOut


class AwardLike(Protocol):
    """An ``Award`` row or a ``MadeAward`` (read-only members: a NamedTuple fits)."""

    @property
    def offer_id(self) -> str: ...
    @property
    def offer_name(self) -> str: ...
    @property
    def classification(self) -> str: ...
    @property
    def amount_cents(self) -> int: ...
    @property
    def contact_id(self) -> str: ...
    @property
    def lines(self) -> list[dict[str, Any]] | None: ...


class SpendLike(Protocol):
    """A ``Spend`` row or a ``MadeSpend``."""

    @property
    def id(self) -> str: ...
    @property
    def amount_cents(self) -> int: ...
    @property
    def instant(self) -> bool: ...


def award_out(award: AwardLike) -> AwardOut:
    return AwardOut(
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


def spend_out(spend: SpendLike) -> SpendOut:
    return SpendOut(id=spend.id, amount=from_cents(spend.amount_cents), instant=spend.instant)


def awards_of(session: Session, event: Event) -> list[AwardOut]:
    """Awards the event earned, in the order they were made."""
    awards = session.scalars(
        select(Award).where(col(Award.event_id) == event.id).order_by(col(Award.ledger_entry_id))
    ).all()
    return [award_out(award) for award in awards]


def spends_of(session: Session, event: Event) -> list[SpendOut]:
    """A purchase: every spend against it; a spend request: the spend it made."""
    column = col(Spend.purchase_event_id) if event.type == "purchase" else col(Spend.event_id)
    spends = session.scalars(
        select(Spend).where(column == event.id).order_by(col(Spend.ledger_entry_id))
    ).all()
    return [spend_out(spend) for spend in spends]


def render_event(
    session: Session | None,
    event: Event,
    now: datetime,
    *,
    made: tuple[Sequence[AwardLike], Sequence[SpendLike]] | None = None,
    wallet: EventWallet | None = None,
    **extra: Any,
) -> EventOut:
    """The event as stored. ``made``: the awards and spends of an event recorded by this
    very request, in the order they were written (they are all it has), so the answer
    does not read back what the request just wrote; ``wallet``: its wallet as that
    request left it. With both, nothing is read (``session`` may be None)."""
    fields: dict[str, Any] = {
        "id": event.id,
        "number": event.number,
        "type": event.type,
        "state": event.state,
        "contact_id": event.contact_id,
        # In UTC like every stored timestamp: a 201, its replay and a GET say the same.
        "performed_on": event.performed_on.astimezone(UTC),
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
    if made is None:
        assert session is not None, "an answer read from the database needs a session"
        fields["awards"] = awards_of(session, event)
        fields["spends"] = spends_of(session, event)
    else:
        awards, spends = made
        fields["awards"] = [award_out(award) for award in awards]
        fields["spends"] = [spend_out(spend) for spend in spends]
    if wallet is None:
        assert session is not None, "an answer read from the database needs a session"
        wallet = event_wallet(session, event.contact_id, now)
    fields["wallet"] = wallet
    if event.type == "purchase" and session is not None:
        fields["matched_transaction_id"] = matched_transaction(session, event.id)
    return msgspec.convert(fields | extra, EventOut, strict=False)
