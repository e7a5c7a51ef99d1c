"""The append-only ledger. Every entry moves the wallet balance in the same transaction
with one conditional UPDATE ... RETURNING, so balance and ledger never drift apart, and a
debit that would take *available* funds (balance minus open reservations) below zero
changes nothing."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cache, lru_cache
from typing import Any, NamedTuple

from sqlalchemy import (
    ColumnElement,
    Connection,
    ScalarSelect,
    bindparam,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm.attributes import set_committed_value
from sqlmodel import Session, col

from rewards.db import outbox
from rewards.db.bulk import BulkInsert
from rewards.db.driver import DriverStatement, driver_cursor
from rewards.db.tables import Estimate, Wallet, WalletTransaction
from rewards.db.types import table_of, utcnow
from rewards.money.notices import ledger_notices

REVERSAL_OF = {"award": "award_reversal", "spend": "spend_reversal"}


class InsufficientBalance(Exception):
    """A debit would take the wallet's available funds below zero (nothing was written)."""


def open_reservations(
    wallet_id: int | ColumnElement[int],
    now: datetime | ColumnElement[datetime],
    excluding_estimate: str | None = None,
) -> ScalarSelect[int]:
    """SQL: the cents held by the wallet's unexpired, unconsumed estimate reservations."""
    query = select(func.coalesce(func.sum(Estimate.reserved_cents), 0)).where(
        col(Estimate.wallet_id) == wallet_id,
        col(Estimate.consumed_at).is_(None),
        col(Estimate.expires_at) > now,
    )
    if excluding_estimate is not None:
        query = query.where(col(Estimate.id) != excluding_estimate)
    return query.scalar_subquery()


@cache
def _held_by(dialect: Dialect, count: int) -> DriverStatement:
    estimates = table_of(Estimate).c
    statement = (
        select(estimates.wallet_id, func.sum(estimates.reserved_cents))
        .where(
            estimates.wallet_id.in_([bindparam(f"w{i}") for i in range(count)]),
            estimates.consumed_at.is_(None),
            estimates.expires_at > bindparam("now", type_=estimates.expires_at.type),
        )
        .group_by(estimates.wallet_id)
    )
    return DriverStatement(statement, dialect)


def held_by(connection: Connection, wallet_ids: Sequence[int], now: datetime) -> dict[int, int]:
    """Wallet id -> cents held by its open reservations (absent: none), in one query."""
    ordered = sorted(set(wallet_ids))
    if not ordered:
        return {}
    parameters: dict[str, Any] = {f"w{i}": wallet_id for i, wallet_id in enumerate(ordered)}
    parameters["now"] = now
    found = _held_by(connection.dialect, len(ordered)).run(driver_cursor(connection), parameters)
    return {int(wallet_id): int(cents) for wallet_id, cents in found.fetchall()}


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
    move: DriverStatement  # balance += amount, RETURNING the new balance and the contact
    move_if_covered: DriverStatement  # the same, only while balance + amount - held >= 0
    move_if_covered_excluding: DriverStatement  # ... held leaving one estimate out
    append: DriverStatement  # INSERT of the entry, RETURNING its id


@cache
def _statements(dialect: Dialect) -> _Statements:
    """Compiled once per process and dialect, run on the driver (``db.driver``)."""
    wallets = table_of(Wallet)
    estimates = table_of(Estimate)
    ledger = table_of(WalletTransaction)
    move = (
        update(wallets)
        .where(wallets.c.id == bindparam("wallet"))
        .values(balance_cents=wallets.c.balance_cents + bindparam("amount"))
        .returning(wallets.c.balance_cents, wallets.c.contact_id)
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

    def covered(reserved: Any) -> DriverStatement:
        statement = move.where(wallets.c.balance_cents + bindparam("amount") - reserved >= 0)
        return DriverStatement(statement, dialect)

    return _Statements(
        move=DriverStatement(move, dialect),
        move_if_covered=covered(held()),
        move_if_covered_excluding=covered(held(estimates.c.id != bindparam("excluding"))),
        append=DriverStatement(
            insert(ledger).returning(ledger.c.id), dialect, columns=_ENTRY_COLUMNS
        ),
    )


_ENTRY_COLUMNS = (
    "wallet_id", "kind", "amount_cents", "balance_after_cents", "event_id", "offer_id",
    "award_id", "spend_id", "reverses_id", "created_at",
)  # fmt: skip


def post_entry(
    session: Session | Connection,
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
    created_at: datetime | None = None,
) -> Entry:
    """Append one entry (signed amount) and move the balance in lock-step, in the
    transaction of ``session`` (or of a connection: the intake's group commit).

    ``created_at`` defaults to the wall clock (a run's reversal passes its own clock).
    With ``funds_checked_at`` the update only happens while balance minus the open
    reservations at that moment (except ``excluding_estimate``, the one being consumed)
    covers the debit; otherwise :class:`InsufficientBalance` and nothing changes.
    """
    connection = session.connection() if isinstance(session, Session) else session
    statements = _statements(connection.dialect)
    parameters: dict[str, Any] = {"wallet": wallet_id, "amount": amount_cents}
    if funds_checked_at is None:
        statement = statements.move
    elif excluding_estimate is None:
        statement = statements.move_if_covered
        parameters["now"] = funds_checked_at
    else:
        statement = statements.move_if_covered_excluding
        parameters |= {"now": funds_checked_at, "excluding": excluding_estimate}
    cursor = driver_cursor(connection)
    moved = statement.run(cursor, parameters).fetchone()
    if moved is None:
        raise InsufficientBalance
    balance_after, contact_id = moved[0], moved[1]
    if isinstance(session, Session):
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
    stamp = {"created_at": created_at or utcnow()}
    entry_id = statements.append.run(cursor, row | stamp).fetchone()[0]
    entry = Entry(id=entry_id, **row)
    # Told in the same transaction, after the wallet's row lock: the contact's
    # notifications are in commit order (db.notify_tables).
    outbox.emit(connection, ledger_notices([entry], {wallet_id: contact_id}), stamp["created_at"])
    return entry


def partly_reversed_cents(session: Session, award_id: str) -> int:
    """Cents of an award already reversed by returns (negative or zero)."""
    total = session.scalar(
        select(func.coalesce(func.sum(WalletTransaction.amount_cents), 0)).where(
            col(WalletTransaction.award_id) == award_id,
            col(WalletTransaction.kind) == "award_reversal",
        )
    )
    return int(total or 0)


def reverse_event_entries(session: Session, event_id: str) -> list[Entry]:
    """Reverse what is left of every award and spend entry the event caused (returns may
    already have reversed part of an award). ``reverses_id`` is unique: at most once."""
    reversed_ids = select(col(WalletTransaction.reverses_id)).where(
        col(WalletTransaction.reverses_id).is_not(None)
    )
    entries = session.scalars(
        select(WalletTransaction)
        .where(col(WalletTransaction.event_id) == event_id)
        .where(col(WalletTransaction.kind).in_(tuple(REVERSAL_OF)))
        .where(col(WalletTransaction.id).not_in(reversed_ids))
        .order_by(col(WalletTransaction.id))
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


class Credit(NamedTuple):
    """One entry of a bulk: ``cents`` (signed; > 0 for an award) to the wallet of
    ``contact_id``."""

    contact_id: str
    cents: int
    event_id: str
    offer_id: str | None
    award_id: str | None
    kind: str = "award"  # award | spend
    spend_id: str | None = None


_LEDGER_COLUMNS = (
    "id", "wallet_id", "kind", "amount_cents", "balance_after_cents", "event_id", "offer_id",
    "reverses_id", "award_id", "spend_id", "created_at",
)  # fmt: skip


class Posted(NamedTuple):
    """What ``BulkCredits.post`` wrote: the entries in the order given, and each locked
    wallet's balance before them (contact -> cents)."""

    entries: list[Entry]
    balances_before: dict[str, int]


class BulkCredits:
    """Entries of many wallets at once (evaluation runs' award credits; the intake's
    awards and instant spends of a batch of purchases): each wallet locked and read once,
    every debit checked against the wallet's available funds, the entries in one
    multi-row insert (ids taken up front), each balance moved once by the sum. Built once
    per run worker or intake writer (statements and bind processors)."""

    def __init__(self, dialect: Any) -> None:
        self.dialect = dialect
        self.postgres = dialect.name == "postgresql"
        self.entries = BulkInsert(dialect, table_of(WalletTransaction), _LEDGER_COLUMNS)
        wallets = table_of(Wallet).c
        self.move = DriverStatement(
            update(table_of(Wallet))
            .where(wallets.id == bindparam("wallet"))
            .values(balance_cents=wallets.balance_cents + bindparam("delta")),
            dialect,
        )
        ledger = table_of(WalletTransaction).c
        if self.postgres:
            sequence = func.pg_get_serial_sequence("wallet_transactions", "id")
            self.next_ids = DriverStatement(
                select(func.nextval(sequence)).select_from(
                    func.generate_series(1, bindparam("count"))
                ),
                dialect,
            )
        else:  # the write transaction is exclusive: the next rowids are ours
            self.top_id = DriverStatement(select(func.max(ledger.id)), dialect)

    @lru_cache(maxsize=64)  # noqa: B019 - one instance per writer, a handful of sizes
    def _lock(self, count: int) -> DriverStatement:
        """Wallets of ``count`` contacts (``:c0``...), locked (PostgreSQL), in id order."""
        w = table_of(Wallet).c
        contacts: list[Any] = [bindparam(f"c{i}") for i in range(count)]
        statement = (
            select(w.contact_id, w.id, w.balance_cents)
            .where(w.contact_id.in_(contacts))
            .order_by(w.id)
            .with_for_update()
        )
        return DriverStatement(statement, self.dialect)

    def _entry_ids(self, cursor: Any, count: int) -> list[int]:
        if self.postgres:
            return [row[0] for row in self.next_ids.run(cursor, {"count": count}).fetchall()]
        top = self.top_id.run(cursor, {}).fetchone()[0] or 0
        return list(range(top + 1, top + 1 + count))

    def post(
        self,
        target: Session | Connection,
        credits: Sequence[Credit],
        now: datetime,
        *,
        also_read: Sequence[str] = (),
        reserved: Mapping[str, int] | None = None,
    ) -> Posted:
        """Append an entry per credit, in order, and move the balances. ``also_read``:
        contacts whose wallet is locked and read even without an entry; ``reserved``:
        contact -> cents held by open reservations, which no debit may touch (a debit
        not covered raises :class:`InsufficientBalance` before anything is written)."""
        if not credits and not also_read:
            return Posted([], {})
        connection = target.connection() if isinstance(target, Session) else target
        cursor = driver_cursor(connection)
        contacts = sorted({credit.contact_id for credit in credits} | set(also_read))
        wallets: dict[str, list[int]] = {}  # contact -> [wallet id, balance, balance before]
        for start in range(0, len(contacts), 1000):
            some = contacts[start : start + 1000]
            lock = self._lock(len(some))
            rows = lock.run(cursor, {f"c{i}": contact for i, contact in enumerate(some)})
            for contact_id, wallet_id, balance in rows.fetchall():
                wallets[contact_id] = [wallet_id, balance, balance]
        held = reserved or {}
        made: list[Entry] = []
        for credit in credits:
            wallet = wallets[credit.contact_id]
            wallet[1] += credit.cents
            if credit.cents < 0 and wallet[1] - held.get(credit.contact_id, 0) < 0:
                raise InsufficientBalance
            made.append(
                Entry(0, wallet[0], credit.kind, credit.cents, wallet[1], credit.event_id,
                      credit.offer_id, credit.award_id, credit.spend_id, None)
            )  # fmt: skip
        if made:
            ids = self._entry_ids(cursor, len(made))
            made = [entry._replace(id=entry_id) for entry, entry_id in zip(made, ids, strict=True)]
            self.entries.run(
                target,
                [
                    (e.id, e.wallet_id, e.kind, e.amount_cents, e.balance_after_cents, e.event_id,
                     e.offer_id, None, e.award_id, e.spend_id, now)
                    for e in made
                ],
            )  # fmt: skip
            moves = [
                {"wallet": wallet_id, "delta": after - before}
                for wallet_id, after, before in wallets.values()
                if after != before
            ]
            self.move.many(cursor, moves)
            contact_of_wallet = {wallet[0]: contact for contact, wallet in wallets.items()}
            outbox.emit(target, ledger_notices(made, contact_of_wallet), now)
        return Posted(made, {contact: wallet[2] for contact, wallet in wallets.items()})
