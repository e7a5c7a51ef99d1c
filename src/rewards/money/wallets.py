"""A wallet as an answer shows it: code, balance and what is available after the open
reservations."""

from __future__ import annotations

from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy import bindparam, select
from sqlmodel import Session

from rewards.db.tables import Wallet
from rewards.db.types import UTCDateTime, table_of
from rewards.domain.money import from_cents
from rewards.money.ledger import open_reservations
from rewards.wire import EventWallet


@cache
def _wallet_of_contact() -> Any:
    """Code, balance and open reservations of a contact's wallet in one statement, built
    once per process (on first use)."""
    wallets = table_of(Wallet)
    return select(
        wallets.c.code,
        wallets.c.balance_cents,
        open_reservations(wallets.c.id, bindparam("now", type_=UTCDateTime())),
    ).where(wallets.c.contact_id == bindparam("contact"))


def event_wallet(session: Session, contact_id: str, now: datetime) -> EventWallet:
    code, balance, reserved = (
        session.connection()
        .execute(_wallet_of_contact(), {"contact": contact_id, "now": now})
        .one()
    )
    return EventWallet(
        code=code, balance=from_cents(balance), available=from_cents(balance - int(reserved))
    )
