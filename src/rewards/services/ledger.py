"""The append-only ledger. Every entry moves the wallet balance in the same transaction
with one conditional UPDATE ... RETURNING, so balance and ledger never drift apart, and a
debit that would take *available* funds (balance minus open reservations) below zero
changes nothing."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select, update
from sqlmodel import Session

from rewards.db.tables import Estimate, Wallet, WalletTransaction

REVERSAL_OF = {"award": "award_reversal", "spend": "spend_reversal"}


class InsufficientBalance(Exception):
    """A debit would take the wallet's available funds below zero (nothing was written)."""


def open_reservations(wallet_id: int, now: datetime, excluding_estimate: str | None = None):  # type: ignore[no-untyped-def]
    """SQL: the cents held by the wallet's unexpired, unconsumed estimate reservations."""
    query = select(func.coalesce(func.sum(Estimate.reserved_cents), 0)).where(
        Estimate.wallet_id == wallet_id,
        Estimate.consumed_at.is_(None),  # type: ignore[union-attr]
        Estimate.expires_at > now,  # type: ignore[operator]
    )
    if excluding_estimate is not None:
        query = query.where(Estimate.id != excluding_estimate)
    return query.scalar_subquery()


def post_entry(
    session: Session,
    *,
    wallet_id: int,
    kind: str,
    amount_cents: int,
    event_id: str,
    offer_id: str | None = None,
    award_id: str | None = None,
    spend_id: str | None = None,
    reverses_id: int | None = None,
    funds_checked_at: datetime | None = None,
    excluding_estimate: str | None = None,
) -> WalletTransaction:
    """Append one entry (signed amount) and move the balance in lock-step.

    With ``funds_checked_at`` the update only happens while balance minus the open
    reservations at that moment (except ``excluding_estimate``, the one being consumed)
    covers the debit; otherwise :class:`InsufficientBalance` and nothing changes.
    """
    statement = (
        update(Wallet)
        .where(Wallet.id == wallet_id)  # type: ignore[arg-type]
        .values(balance_cents=Wallet.balance_cents + amount_cents)
        .returning(Wallet.balance_cents)
    )
    if funds_checked_at is not None:
        held = open_reservations(wallet_id, funds_checked_at, excluding_estimate)
        statement = statement.where(Wallet.balance_cents + amount_cents - held >= 0)  # type: ignore[arg-type]
    balance_after = session.execute(statement).scalar_one_or_none()
    if balance_after is None:
        raise InsufficientBalance
    entry = WalletTransaction(
        wallet_id=wallet_id,
        kind=kind,
        amount_cents=amount_cents,
        balance_after_cents=balance_after,
        event_id=event_id,
        offer_id=offer_id,
        award_id=award_id,
        spend_id=spend_id,
        reverses_id=reverses_id,
    )
    session.add(entry)
    session.flush()
    return entry


def partly_reversed_cents(session: Session, award_id: str) -> int:
    """Cents of an award already reversed by returns (negative or zero)."""
    total = session.scalar(
        select(func.coalesce(func.sum(WalletTransaction.amount_cents), 0)).where(
            WalletTransaction.award_id == award_id,
            WalletTransaction.kind == "award_reversal",
        )
    )
    return int(total or 0)


def reverse_event_entries(session: Session, event_id: str) -> list[WalletTransaction]:
    """Reverse what is left of every award and spend entry the event caused (returns may
    already have reversed part of an award). ``reverses_id`` is unique: at most once."""
    reversed_ids = select(WalletTransaction.reverses_id).where(
        WalletTransaction.reverses_id.is_not(None)  # type: ignore[union-attr]
    )
    entries = session.scalars(
        select(WalletTransaction)
        .where(WalletTransaction.event_id == event_id)
        .where(WalletTransaction.kind.in_(tuple(REVERSAL_OF)))  # type: ignore[attr-defined]
        .where(WalletTransaction.id.not_in(reversed_ids))  # type: ignore[union-attr]
        .order_by(WalletTransaction.id)  # type: ignore[arg-type]
    ).all()
    reversals = []
    for entry in entries:
        left = entry.amount_cents
        if entry.kind == "award" and entry.award_id is not None:
            left += partly_reversed_cents(session, entry.award_id)
        if left == 0:
            continue
        reversals.append(
            post_entry(
                session,
                wallet_id=entry.wallet_id,
                kind=REVERSAL_OF[entry.kind],
                amount_cents=-left,
                event_id=event_id,
                offer_id=entry.offer_id,
                award_id=entry.award_id,
                spend_id=entry.spend_id,
                reverses_id=entry.id,
            )
        )
    return reversals
