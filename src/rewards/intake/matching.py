"""Matching card transactions to POS purchases (merchants in ``processor_mode:
matching``, PLATFORM.md). A transaction and a purchase fit when they are at one of the
merchant's units, for the same total to the cent, within the merchant's window of each
other, and the purchase is the card's contact's or paid with a card ending in the
transaction's ``last4``. Each side looks for the other under the merchant's lock, so a
purchase and its transaction arriving together are matched exactly once: whichever
commits second sees the first (SQLite: write transactions are serial anyway). The
route's unique ``event_id`` backs it: a purchase is matched to one transaction at most.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import exists, select, text, update
from sqlmodel import Session, col

from rewards.db.tables import Event, ProcessorRoute, ProcessorTransaction
from rewards.engine import Rulesets
from rewards.engine.model import Merchant
from rewards.intake.contacts import payment_card_owner
from rewards.runtime.context import Runtime


def is_matched_on_intake(rulesets: Rulesets, unit: str | None) -> bool:
    """Whether a purchase at this unit is looked up against awaiting transactions."""
    merchant = rulesets.merchant_of_unit(unit)
    return merchant is not None and merchant.processor_mode == "matching"


def lock_merchant(session: Session, merchant_id: str) -> None:
    """Serialise matching for one merchant until the transaction ends (PostgreSQL: an
    advisory transaction lock; SQLite write transactions hold the database already)."""
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        connection.execute(
            text("SELECT pg_advisory_xact_lock(hashtext(:key))"), {"key": f"merchant:{merchant_id}"}
        )


def card_last4(payment_medium: object) -> str | None:
    """The last four characters of a stored payment medium's identifier (after the
    definition's masking), when it has four."""
    if not isinstance(payment_medium, dict):
        return None
    identifier = payment_medium.get("identifier")
    if not isinstance(identifier, str) or len(identifier) < 4:
        return None
    return identifier[-4:]


def match_purchase(session: Session, runtime: Runtime, event: Event) -> str | None:
    """After a POS purchase is inserted: the awaiting transaction of its merchant that it
    fits becomes ``matched`` to it (the closest in time). Returns the transaction's id."""
    merchant = runtime.rulesets.merchant_of_unit(event.performed_by_unit)
    if merchant is None or merchant.processor_mode != "matching" or event.amount_cents is None:
        return None
    lock_merchant(session, merchant.id)
    window = timedelta(minutes=merchant.match_window_minutes)
    candidates = session.execute(
        select(ProcessorRoute, col(ProcessorTransaction.card_token))
        .join(ProcessorTransaction, col(ProcessorTransaction.id) == ProcessorRoute.transaction_id)
        .where(
            col(ProcessorRoute.merchant_id) == merchant.id,
            col(ProcessorRoute.status) == "awaiting_match",
            col(ProcessorRoute.amount_cents) == event.amount_cents,
            col(ProcessorRoute.performed_on) >= event.performed_on - window,
            col(ProcessorRoute.performed_on) <= event.performed_on + window,
        )
    ).all()
    last4 = card_last4(event.details.get("payment_medium"))
    for route, token in sorted(candidates, key=lambda row: _distance(row[0].performed_on, event)):
        if (last4 is None or route.card_last4 != last4) and payment_card_owner(
            session, token
        ) != event.contact_id:
            continue
        matched = session.exec(
            update(ProcessorRoute)
            .where(
                col(ProcessorRoute.id) == route.id, col(ProcessorRoute.status) == "awaiting_match"
            )
            .values(status="matched", event_id=event.id, updated_at=runtime.now())
        ).rowcount
        if matched == 1:
            return route.transaction_id
    return None


def find_purchase(
    session: Session,
    merchant: Merchant,
    transaction: ProcessorTransaction,
    contact_id: str | None,
) -> Event | None:
    """For a transaction routed to a matching merchant (the caller holds the merchant's
    lock): the POS purchase it fits that no transaction is matched to yet."""
    window = timedelta(minutes=merchant.match_window_minutes)
    taken = exists().where(col(ProcessorRoute.event_id) == Event.id)
    purchases = session.scalars(
        select(Event).where(
            col(Event.type) == "purchase",
            col(Event.state) == "posted",
            col(Event.performed_by_unit).in_(merchant.units),
            col(Event.amount_cents) == transaction.amount_cents,
            col(Event.performed_on) >= transaction.performed_on - window,
            col(Event.performed_on) <= transaction.performed_on + window,
            ~taken,
        )
    ).all()
    fits = [
        event
        for event in purchases
        if (contact_id is not None and event.contact_id == contact_id)
        or (
            transaction.card_last4 is not None
            and card_last4(event.details.get("payment_medium")) == transaction.card_last4
        )
    ]
    fits.sort(key=lambda event: _distance(transaction.performed_on, event))
    return fits[0] if fits else None


def matched_transaction(session: Session, event_id: str) -> str | None:
    """The processor transaction matched to this POS purchase, if any."""
    return session.scalars(
        select(col(ProcessorRoute.transaction_id)).where(
            col(ProcessorRoute.event_id) == event_id, col(ProcessorRoute.status) == "matched"
        )
    ).first()


def _distance(moment: datetime, event: Event) -> tuple[float, int]:
    return abs((event.performed_on - moment).total_seconds()), event.number or 0
