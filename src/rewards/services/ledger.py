"""The append-only ledger. Every entry moves the wallet balance in the same transaction
with one conditional UPDATE ... RETURNING, so balance and ledger never drift apart."""

from __future__ import annotations

from sqlalchemy import select, update
from sqlmodel import Session

from rewards.db.tables import Wallet, WalletTransaction

REVERSAL_OF = {"award": "award_reversal", "spend": "spend_reversal"}


class InsufficientBalance(Exception):
    """A debit would take the wallet's available funds below zero (nothing was written)."""


def post_entry(
    session: Session,
    *,
    wallet_id: int,
    kind: str,
    amount_cents: int,
    event_id: str,
    offer_id: str | None = None,
    reverses_id: int | None = None,
    require_funds: bool = False,
) -> WalletTransaction:
    """Append one entry (signed amount) and move the balance in lock-step.

    With ``require_funds`` the balance update only happens when the balance covers the
    debit; otherwise :class:`InsufficientBalance` is raised and nothing changes.
    """
    statement = (
        update(Wallet)
        .where(Wallet.id == wallet_id)  # type: ignore[arg-type]
        .values(balance_cents=Wallet.balance_cents + amount_cents)
        .returning(Wallet.balance_cents)
    )
    if require_funds:
        statement = statement.where(Wallet.balance_cents + amount_cents >= 0)  # type: ignore[arg-type]
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
        reverses_id=reverses_id,
    )
    session.add(entry)
    session.flush()
    return entry


def reverse_event_entries(session: Session, event_id: str) -> list[WalletTransaction]:
    """Reverse every award and spend entry the event caused that is not reversed yet."""
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
    return [
        post_entry(
            session,
            wallet_id=entry.wallet_id,
            kind=REVERSAL_OF[entry.kind],
            amount_cents=-entry.amount_cents,
            event_id=event_id,
            offer_id=entry.offer_id,
            reverses_id=entry.id,
        )
        for entry in entries
    ]
