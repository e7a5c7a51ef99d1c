"""A wallet as answers show it: code, balance, what open reservations hold and what is
available; its ledger, page by page."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from functools import cache

from sqlalchemy import Connection, bindparam, select
from sqlalchemy.engine import Dialect
from sqlmodel import Session, col

from rewards.db.driver import DriverStatement, driver_cursor
from rewards.db.pages import decode_cursor, encode_cursor
from rewards.db.tables import Wallet, WalletTransaction
from rewards.db.types import UTCDateTime, table_of
from rewards.domain.money import from_cents
from rewards.errors import WalletNotFound
from rewards.money.ledger import open_reservations
from rewards.runtime.context import Runtime
from rewards.wire import EventWallet, LedgerEntry, LedgerPage, WalletOut, WalletWithContact


@cache
def _wallet_of_contact(dialect: Dialect) -> DriverStatement:
    """Code, balance and open reservations of a contact's wallet in one statement,
    compiled once per process and dialect (run on the driver, ``db.driver``)."""
    wallets = table_of(Wallet)
    statement = select(
        wallets.c.code,
        wallets.c.balance_cents,
        open_reservations(wallets.c.id, bindparam("now", type_=UTCDateTime())),
    ).where(wallets.c.contact_id == bindparam("contact"))
    return DriverStatement(statement, dialect)


def event_wallet(session: Session | Connection, contact_id: str, now: datetime) -> EventWallet:
    """The wallet an event's answer shows (in the caller's transaction)."""
    connection = session.connection() if isinstance(session, Session) else session
    cursor = driver_cursor(connection)
    found = (
        _wallet_of_contact(connection.dialect)
        .run(cursor, {"contact": contact_id, "now": now})
        .fetchone()
    )
    if found is None:
        raise WalletNotFound(f"Contact {contact_id} has no wallet.")
    code, balance, reserved = found
    return EventWallet(
        code=code, balance=from_cents(balance), available=from_cents(balance - int(reserved))
    )


def reserved_cents(session: Session, wallet: Wallet, now: datetime) -> int:
    """Funds held by open (unexpired, unconsumed) purchase-estimate reservations."""
    assert wallet.id is not None
    return int(session.scalar(select(open_reservations(wallet.id, now))) or 0)


def wallet_out(session: Session, wallet: Wallet, now: datetime) -> WalletOut:
    reserved = reserved_cents(session, wallet, now)
    return WalletOut(
        code=wallet.code,
        currency=wallet.currency,
        balance=from_cents(wallet.balance_cents),
        reserved=from_cents(reserved),
        available=from_cents(wallet.balance_cents - reserved),
    )


def _wallet_by_code(session: Session, code: str) -> Wallet:
    wallet = session.scalars(select(Wallet).where(col(Wallet.code) == code)).first()
    if wallet is None:
        raise WalletNotFound(f"No wallet with code {code!r}.")
    return wallet


def get_wallet(session: Session, runtime: Runtime, code: str) -> WalletWithContact:
    wallet = _wallet_by_code(session, code)
    view = wallet_out(session, wallet, runtime.now())
    return WalletWithContact(
        contact_id=wallet.contact_id, **{f: getattr(view, f) for f in view.__struct_fields__}
    )


def _entry(row: WalletTransaction) -> LedgerEntry:
    return LedgerEntry(
        id=row.id or 0,
        kind=row.kind,  # type: ignore[arg-type]  # str column of these kinds only; no per-row cast
        amount=from_cents(row.amount_cents),
        balance_after=from_cents(row.balance_after_cents),
        event_id=row.event_id,
        offer_id=row.offer_id,
        created_at=row.created_at,
    )


def entries_of_events(session: Session, event_ids: Sequence[str]) -> dict[str, list[LedgerEntry]]:
    """The ledger entries each event caused (awards, spends and their reversals), oldest
    first: an activity feed's money movements, one query per page."""
    rows = session.scalars(
        select(WalletTransaction)
        .where(col(WalletTransaction.event_id).in_(list(event_ids)))
        .order_by(col(WalletTransaction.id))
    ).all()
    found: dict[str, list[LedgerEntry]] = {event_id: [] for event_id in event_ids}
    for row in rows:
        found[row.event_id].append(_entry(row))
    return found


def wallet_transactions(
    session: Session, runtime: Runtime, code: str, limit: int, cursor: str | None
) -> LedgerPage:
    wallet = _wallet_by_code(session, code)
    before = decode_cursor(cursor)
    query = select(WalletTransaction).where(col(WalletTransaction.wallet_id) == wallet.id)
    if before is not None:
        query = query.where(col(WalletTransaction.id) < before)
    rows = session.scalars(query.order_by(col(WalletTransaction.id).desc()).limit(limit + 1)).all()
    items = [_entry(row) for row in rows[:limit]]
    next_cursor = encode_cursor(items[-1].id) if len(rows) > limit else None
    return LedgerPage(items=items, next_cursor=next_cursor)
