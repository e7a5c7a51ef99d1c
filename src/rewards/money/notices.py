"""What the ledger tells the outbox: a notification per entry (award.created,
spend.created, award.reversed, spend.reversed) and one wallet.balance_changed per wallet
a transaction moved, written with the entries (``money.ledger``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from rewards.db.outbox import Notice, notice
from rewards.domain.money import from_cents
from rewards.wire import BalanceChanged, LedgerMoved

ENTRY_TYPES = {
    "award": "award.created",
    "spend": "spend.created",
    "award_reversal": "award.reversed",
    "spend_reversal": "spend.reversed",
}


class LedgerEntry(Protocol):
    """The fields of a written entry (``money.ledger.Entry``) a notice needs."""

    @property
    def id(self) -> int: ...
    @property
    def wallet_id(self) -> int: ...
    @property
    def kind(self) -> str: ...
    @property
    def amount_cents(self) -> int: ...
    @property
    def balance_after_cents(self) -> int: ...
    @property
    def event_id(self) -> str: ...
    @property
    def offer_id(self) -> str | None: ...
    @property
    def award_id(self) -> str | None: ...
    @property
    def spend_id(self) -> str | None: ...
    @property
    def reverses_id(self) -> int | None: ...


def ledger_notices(
    entries: Sequence[LedgerEntry], contact_of_wallet: Mapping[int, str]
) -> list[Notice]:
    """The notices of ``entries`` (in order), then one balance change per wallet."""
    notices: list[Notice] = []
    moved: dict[int, list[LedgerEntry]] = {}
    for entry in entries:
        contact_id = contact_of_wallet[entry.wallet_id]
        data = LedgerMoved(
            contact_id=contact_id,
            event_id=entry.event_id,
            entry_id=entry.id,
            amount=from_cents(entry.amount_cents),
            balance_after=from_cents(entry.balance_after_cents),
            offer_id=entry.offer_id,
            award_id=entry.award_id,
            spend_id=entry.spend_id,
            reverses_entry_id=entry.reverses_id,
        )
        notices.append(notice(ENTRY_TYPES[entry.kind], contact_id, data))
        moved.setdefault(entry.wallet_id, []).append(entry)
    for wallet_id, wallet_entries in moved.items():
        contact_id = contact_of_wallet[wallet_id]
        change = BalanceChanged(
            contact_id=contact_id,
            wallet_id=wallet_id,
            balance=from_cents(wallet_entries[-1].balance_after_cents),
            change=from_cents(sum(e.amount_cents for e in wallet_entries)),
            event_ids=list(dict.fromkeys(e.event_id for e in wallet_entries)),
        )
        notices.append(notice("wallet.balance_changed", contact_id, change))
    return notices
