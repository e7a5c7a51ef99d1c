"""The append-only ledger. Every entry moves the wallet balance in the same transaction
with one conditional UPDATE ... RETURNING, so balance and ledger never drift apart, and a
debit that would take *available* funds (balance minus open reservations) below zero
changes nothing."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any, NamedTuple

from sqlalchemy import bindparam, func, insert, select, update
from sqlalchemy.orm.attributes import set_committed_value
from sqlmodel import Session

from rewards.db.tables import Estimate, Wallet, WalletTransaction
from rewards.db.types import utcnow

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


class Entry(NamedTuple):
    """A ledger entry as written (the row of ``wallet_transactions``)."""

    id: int
    wallet_id: int
    kind: str
    amount_cents: int
    balance_after_cents: int
    event_id: str
    offer_id: str | None
    award_id: str | None
    spend_id: str | None
    reverses_id: int | None


@dataclass(frozen=True)
class _Statements:
    move: Any  # balance += amount, RETURNING the new balance
    move_if_covered: Any  # the same, only while balance + amount - held >= 0
    move_if_covered_excluding: Any  # ... held leaving one estimate out
    append: Any  # INSERT of the entry, RETURNING its id


@cache
def _statements() -> _Statements:
    """Built once per process, on first use: building a statement and computing its cache
    key costs more than running it (docs/performance.md)."""
    wallets = Wallet.__table__  # type: ignore[attr-defined]
    estimates = Estimate.__table__  # type: ignore[attr-defined]
    ledger = WalletTransaction.__table__  # type: ignore[attr-defined]
    move = (
        update(wallets)
        .where(wallets.c.id == bindparam("wallet"))
        .values(balance_cents=wallets.c.balance_cents + bindparam("amount"))
        .returning(wallets.c.balance_cents)
    )

    def held(*more: Any) -> Any:
        return (
            select(func.coalesce(func.sum(estimates.c.reserved_cents), 0))
            .where(
                estimates.c.wallet_id == bindparam("wallet"),
                estimates.c.consumed_at.is_(None),
                estimates.c.expires_at > bindparam("now", type_=estimates.c.expires_at.type),
                *more,
            )
            .scalar_subquery()
        )

    def covered(reserved: Any) -> Any:
        return move.where(wallets.c.balance_cents + bindparam("amount") - reserved >= 0)

    return _Statements(
        move=move,
        move_if_covered=covered(held()),
        move_if_covered_excluding=covered(held(estimates.c.id != bindparam("excluding"))),
        append=insert(ledger).returning(ledger.c.id),
    )


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
) -> Entry:
    """Append one entry (signed amount) and move the balance in lock-step.

    With ``funds_checked_at`` the update only happens while balance minus the open
    reservations at that moment (except ``excluding_estimate``, the one being consumed)
    covers the debit; otherwise :class:`InsufficientBalance` and nothing changes.
    """
    statements = _statements()
    parameters: dict[str, Any] = {"wallet": wallet_id, "amount": amount_cents}
    if funds_checked_at is None:
        statement = statements.move
    elif excluding_estimate is None:
        statement = statements.move_if_covered
        parameters["now"] = funds_checked_at
    else:
        statement = statements.move_if_covered_excluding
        parameters |= {"now": funds_checked_at, "excluding": excluding_estimate}
    connection = session.connection()
    balance_after = connection.execute(statement, parameters).scalar_one_or_none()
    if balance_after is None:
        raise InsufficientBalance
    # A Wallet this session already loaded must not keep the old balance (the ORM's
    # own UPDATE would have synchronised it; this UPDATE bypasses the ORM).
    loaded = session.identity_map.get(Session.identity_key(Wallet, wallet_id))
    if loaded is not None:
        set_committed_value(loaded, "balance_cents", balance_after)
    row = {
        "wallet_id": wallet_id,
        "kind": kind,
        "amount_cents": amount_cents,
        "balance_after_cents": balance_after,
        "event_id": event_id,
        "offer_id": offer_id,
        "award_id": award_id,
        "spend_id": spend_id,
        "reverses_id": reverses_id,
    }
    entry_id = connection.execute(statements.append, row | {"created_at": utcnow()}).scalar_one()
    return Entry(id=entry_id, **row)


def partly_reversed_cents(session: Session, award_id: str) -> int:
    """Cents of an award already reversed by returns (negative or zero)."""
    total = session.scalar(
        select(func.coalesce(func.sum(WalletTransaction.amount_cents), 0)).where(
            WalletTransaction.award_id == award_id,
            WalletTransaction.kind == "award_reversal",
        )
    )
    return int(total or 0)


def reverse_event_entries(session: Session, event_id: str) -> list[Entry]:
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
