"""Awards written: the award rows and their ledger credits (``ledger`` moves the
balances). One award at a time on intake (``write_awards``), in bulk for evaluation runs
(``BulkAwards``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any, NamedTuple

import msgspec
from sqlalchemy import Connection, bindparam, insert, select
from sqlalchemy.engine import Dialect
from sqlmodel import Session

from rewards.db.bulk import BulkInsert
from rewards.db.driver import DriverStatement, driver_cursor
from rewards.db.ids import time_ordered_id
from rewards.db.tables import Award, Event, Wallet
from rewards.db.types import table_of, utcnow
from rewards.domain.decisions import AwardDecision
from rewards.domain.money import to_cents
from rewards.money import budgets
from rewards.money.ledger import BulkCredits, Credit, post_entry
from rewards.offers.evaluation import Decided
from rewards.runtime.metrics import metrics


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
    wallet_of: DriverStatement  # the wallet id of a contact
    insert_award: DriverStatement


_INSERT_COLUMNS = (
    "id", "event_id", "offer_id", "offer_name", "classification", "beneficiary", "contact_id",
    "amount_cents", "lines", "instant_spend", "ledger_entry_id", "ruleset_version",
    "performed_on", "created_at",
)  # fmt: skip


@cache
def _statements(dialect: Dialect) -> _Statements:
    """Compiled once per process and dialect, run on the driver (``db.driver``)."""
    wallets = table_of(Wallet)
    return _Statements(
        wallet_of=DriverStatement(
            select(wallets.c.id).where(wallets.c.contact_id == bindparam("contact")), dialect
        ),
        insert_award=DriverStatement(insert(table_of(Award)), dialect, columns=_INSERT_COLUMNS),
    )


def stored_lines(decision: AwardDecision) -> list[dict[str, Any]] | None:
    """``awards.lines``: per line its index, SKU and amount as decimal text."""
    if decision.lines is None:
        return None
    return [
        {"index": line.index, "sku": line.sku, "amount": str(line.amount)}
        for line in decision.lines
    ]


def _connection(session: Session | Connection) -> Connection:
    return session.connection() if isinstance(session, Session) else session


def wallet_id_of(session: Session | Connection, contact_id: str) -> int:
    connection = _connection(session)
    cursor = driver_cursor(connection)
    row = _statements(connection.dialect).wallet_of.run(cursor, {"contact": contact_id}).fetchone()
    if row is None:
        raise LookupError(f"contact {contact_id} has no wallet")
    return int(row[0])


def made_award(
    event: Event,
    decision: AwardDecision,
    contact_id: str,
    award_id: str,
    wallet_id: int = 0,
    ledger_entry_id: int = 0,
) -> MadeAward:
    """The award row of ``decision`` for ``event``, to ``contact_id`` (the wallet and the
    ledger entry as known so far: 0 until the ledger has posted it)."""
    return MadeAward(
        id=award_id,
        event_id=event.id,
        offer_id=decision.offer_id,
        offer_name=decision.offer_name,
        classification=decision.classification,
        beneficiary=decision.beneficiary,
        contact_id=contact_id,
        wallet_id=wallet_id,
        amount_cents=to_cents(decision.amount),
        lines=stored_lines(decision),
        instant_spend=decision.instant_spend,
        ledger_entry_id=ledger_entry_id,
    )


def write_award(
    session: Session | Connection,
    event: Event,
    decision: AwardDecision,
    contact_id: str,
    wallet_id: int | None = None,
) -> MadeAward:
    """One award record and its ledger credit to ``contact_id``, in the caller's
    transaction (``wallet_id``: the beneficiary's wallet when the caller knows it). The
    unique (offer, event, beneficiary) constraint makes a second award impossible."""
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
    award = made_award(event, decision, contact_id, award_id, wallet_id, entry.id)
    row = award._asdict()
    del row["wallet_id"]
    row |= {
        "ruleset_version": decision.ruleset_version,
        "performed_on": event.performed_on,
        "created_at": utcnow(),
    }
    connection = _connection(session)
    _statements(connection.dialect).insert_award.run(driver_cursor(connection), row)
    metrics().awards.labels(offer_id=decision.offer_id).inc()
    metrics().awarded_cents.inc(amount)
    return award


def write_awards(
    session: Session | Connection,
    event: Event,
    decided: list[Decided],
    wallets: dict[str, int] | None = None,
) -> list[MadeAward]:
    """Every award decided for ``event``, in order, each beneficiary's wallet looked up
    once (``wallets``: contact -> wallet id the caller already knows). An offer's budget
    is charged first: its award may be cut to what remains, or left out."""
    wallets = dict(wallets or {})
    awards = []
    for wanted, contact_id in decided:
        decision = budgets.charge(session, wanted)
        if decision is None:
            continue
        if contact_id not in wallets:
            wallets[contact_id] = wallet_id_of(session, contact_id)
        awards.append(write_award(session, event, decision, contact_id, wallets[contact_id]))
    return awards


class BatchAward(NamedTuple):
    """An award of an evaluation run, decided and not yet written."""

    id: str
    event_id: str
    performed_on: datetime
    decision: AwardDecision
    contact_id: str  # the beneficiary
    cents: int  # > 0


encode_lines = msgspec.json.Encoder().encode  # awards.lines, stored as JSON text

AWARD_COLUMNS = (
    "id", "event_id", "offer_id", "offer_name", "classification", "beneficiary", "contact_id",
    "amount_cents", "lines", "instant_spend", "ruleset_version", "performed_on",
    "ledger_entry_id", "created_at",
)  # fmt: skip


class BulkAwards:
    """The awards of an evaluation run's chunk with their ledger credits, in bulk: the
    rows ``write_award`` writes one at a time. Built once per run worker."""

    def __init__(self, dialect: Any) -> None:
        self.credits = BulkCredits(dialect)
        self.rows = BulkInsert(dialect, table_of(Award), AWARD_COLUMNS, ready=("lines",))

    def write(self, session: Session, awards: Sequence[BatchAward], now: datetime) -> None:
        posted = self.credits.post(
            session,
            [Credit(a.contact_id, a.cents, a.event_id, a.decision.offer_id, a.id) for a in awards],
            now,
        )
        entry_ids = [entry.id for entry in posted.entries]
        rows = []
        for award, entry_id in zip(awards, entry_ids, strict=True):
            decision = award.decision
            stored = stored_lines(decision)
            lines = None if stored is None else encode_lines(stored).decode()
            # instant_spend False: the purchase is over, a run credits the wallet.
            rows.append(
                (award.id, award.event_id, decision.offer_id, decision.offer_name,
                 decision.classification, decision.beneficiary, award.contact_id, award.cents,
                 lines, False, decision.ruleset_version, award.performed_on, entry_id, now)
            )  # fmt: skip
        self.rows.run(session, rows)
