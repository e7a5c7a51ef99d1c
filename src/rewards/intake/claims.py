"""Self-service claims (PLATFORM.md): a customer claims a card transaction no contact was
known for, by merchant, date, amount and the card's last four digits. Exactly one fit
becomes the claimant's purchase and links the card; failed claims are counted per
contact (at most ``FAILED_CLAIMS.limit`` a day, on the counters every process shares),
against guessing."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta

from sqlalchemy import select, update
from sqlmodel import Session, col

from rewards.db import outbox
from rewards.db.database import Database
from rewards.db.tables import ProcessorRoute, ProcessorTransaction
from rewards.domain.money import to_cents
from rewards.errors import (
    AlreadyClaimed,
    AmbiguousClaim,
    FieldError,
    NoMatchingTransaction,
    TooManyFailedClaims,
    UnknownMerchant,
)
from rewards.intake import events, processor
from rewards.intake.contacts import link_payment_card
from rewards.intake.identify import identify
from rewards.runtime.context import Runtime
from rewards.runtime.rate_counters import Counter, Limit, RateCounters
from rewards.wire import TransactionClaimAccepted, TransactionClaimIn, TransactionClaimOut

FAILED_CLAIMS = Limit("failed-claims-contact", 10, 86_400)  # per contact and UTC day
CLAIMABLE = ("unclaimed", "unidentified")
CLAIM_DAYS = 60  # transactions older than this cannot be claimed
_SLACK = timedelta(days=1)


def claim_transaction(
    database: Database, counters: RateCounters, runtime: Runtime, body: TransactionClaimIn
) -> TransactionClaimOut:
    """Identify the claimant, take one of its failed claims for the day (429 when none is
    left), try the claim in one transaction, and give the failure back unless the claim
    missed (no fit, or claimed already)."""
    with database.transaction(write=False) as session:
        contact_id = identify(session, runtime, body.contact, "/contact").contact.id
    now = runtime.now()
    taken = counters.take([Counter.at(FAILED_CLAIMS, contact_id, now)], 1, 1)
    if not taken.count:
        raise TooManyFailedClaims(
            f"{FAILED_CLAIMS.limit} failed claims today; try again in "
            f"{taken.fullest.reset_in(now)} s.",
        )
    missed = False
    try:
        return database.write_retrying(lambda session: claim(session, runtime, contact_id, body))
    except (NoMatchingTransaction, AlreadyClaimed):
        missed = True
        raise
    finally:
        if not missed:
            counters.give_back(taken, 1)


def _window(runtime: Runtime, performed_on: str) -> tuple[datetime, datetime]:
    """A date is the whole business day; either way one day of slack on each side."""
    if len(performed_on) == 10:
        day = date.fromisoformat(performed_on)
        start = datetime.combine(day, time(), runtime.rulesets.time_zone)
        return start - _SLACK, start + timedelta(days=1) + _SLACK
    moment = datetime.fromisoformat(performed_on.upper())
    return moment - _SLACK, moment + _SLACK


def claim(
    session: Session, runtime: Runtime, contact_id: str, body: TransactionClaimIn
) -> TransactionClaimOut:
    merchant = runtime.rulesets.merchant(body.merchant_id)
    if merchant is None:
        raise UnknownMerchant(
            f"No merchant {body.merchant_id!r} in the definition.",
            errors=[FieldError(path="/merchant_id", message="no merchant with this id")],
        )
    start, end = _window(runtime, body.performed_on)
    start = max(start, runtime.now() - timedelta(days=CLAIM_DAYS))
    fits = session.execute(
        select(ProcessorRoute, ProcessorTransaction)
        .join(ProcessorTransaction, col(ProcessorTransaction.id) == ProcessorRoute.transaction_id)
        .where(
            col(ProcessorRoute.merchant_id) == merchant.id,
            col(ProcessorRoute.amount_cents) == to_cents(body.amount),
            col(ProcessorRoute.card_last4) == body.last4,
            col(ProcessorRoute.performed_on) >= start,
            col(ProcessorRoute.performed_on) < end,
            col(ProcessorRoute.status).in_([*CLAIMABLE, "claimed"]),
        )
    ).all()
    open_fits = [(route, row) for route, row in fits if route.status in CLAIMABLE]
    if not open_fits:
        if fits:
            raise AlreadyClaimed("The transaction matching the claim is already claimed.")
        raise NoMatchingTransaction(
            f"No unclaimed transaction of {merchant.id} for {body.amount} with card ending "
            f"{body.last4} within a day of {body.performed_on} (and not older than "
            f"{CLAIM_DAYS} days).",
            errors=[FieldError(path="/amount", message="no unclaimed transaction matches")],
        )
    if len(open_fits) > 1:
        raise AmbiguousClaim(
            f"{len(open_fits)} transactions match; send the time of the purchase in performed_on.",
            errors=[FieldError(path="/performed_on", message="several transactions match")],
        )
    route, row = open_fits[0]
    taken = session.exec(
        update(ProcessorRoute)
        .where(col(ProcessorRoute.id) == route.id, col(ProcessorRoute.status).in_(CLAIMABLE))
        .values(status="claimed", claimed_by=contact_id, updated_at=runtime.now())
    ).rowcount
    if taken != 1:  # a concurrent claim of the same transaction won
        raise AlreadyClaimed("The transaction matching the claim was just claimed.")
    event_id = processor.record_purchase(session, runtime, row, merchant, contact_id)
    session.exec(
        update(ProcessorRoute).where(col(ProcessorRoute.id) == route.id).values(event_id=event_id)
    )
    linked = link_payment_card(session, contact_id, row.card_token)
    told = TransactionClaimAccepted(
        processor=row.processor,
        transaction_id=row.transaction_id,
        merchant_id=merchant.id,
        contact_id=contact_id,
        event_id=event_id,
    )
    outbox.emit(session, [outbox.notice("transaction_claim.accepted", contact_id, told)])
    event = events.get_event(session, runtime, event_id)
    return TransactionClaimOut(
        transaction_id=row.id, merchant_id=merchant.id, card_linked=linked, event=event
    )
