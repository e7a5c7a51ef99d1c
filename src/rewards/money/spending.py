"""Spending: wallet funds redeemed against a posted purchase of the same contact.

Every rule of the definition's ``spend_requests`` is checked before anything is written;
the debit itself is a conditional UPDATE (balance minus open reservations must cover it),
so no interleaving overdraws a wallet on SQLite (writers are serial) or PostgreSQL (the
UPDATE locks the row and re-checks the condition). A refused spend leaves no trace.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import NamedTuple, Protocol

from sqlalchemy import Connection, bindparam, func, insert, select
from sqlalchemy.engine import Dialect
from sqlmodel import Session, col

from rewards.db.driver import DriverStatement, driver_cursor
from rewards.db.tables import Contact, Event, Otp, Spend, Wallet, WalletTransaction
from rewards.db.types import table_of, utcnow
from rewards.domain.money import from_cents, to_cents
from rewards.errors import (
    DomainError,
    FieldError,
    InsufficientFunds,
    OtpSpendMismatch,
    SpecificAmountNotAllowed,
    SpendAmountOutOfRange,
    SpendBlocked,
    SpendExceedsPurchase,
    SpendNotApplicable,
    SpendWindowExpired,
)
from rewards.money.awards import MadeAward
from rewards.money.ledger import InsufficientBalance, open_reservations, post_entry
from rewards.runtime.context import Runtime
from rewards.runtime.metrics import metrics


@dataclass(frozen=True)
class SpendAsk:
    """What a caller asks to spend, and where its amount sits in the request body."""

    requested_cents: int | None  # None: the purchase's remaining total
    path: str
    only_if_fully_covered: bool = False
    otp: Otp | None = None
    excluding_estimate: str | None = None  # a consumed estimate's own reservation


def _refuse(error: type[DomainError], detail: str, path: str, message: str) -> DomainError:
    return error(detail, errors=[FieldError(path=path, message=message)])


def spent_cents(session: Session, purchase_id: str) -> int:
    """Cents spent against a purchase and not given back (reversed)."""
    reversed_entries = select(col(WalletTransaction.reverses_id)).where(
        col(WalletTransaction.reverses_id).is_not(None)
    )
    total = session.scalar(
        select(func.coalesce(func.sum(Spend.amount_cents), 0)).where(
            col(Spend.purchase_event_id) == purchase_id,
            col(Spend.ledger_entry_id).not_in(reversed_entries),
        )
    )
    return int(total or 0)


def available_cents(
    session: Session, wallet: Wallet, now: datetime, excluding_estimate: str | None = None
) -> int:
    assert wallet.id is not None
    held = session.scalar(select(open_reservations(wallet.id, now, excluding_estimate))) or 0
    return wallet.balance_cents - int(held)


def locked_wallet(session: Session, contact_id: str) -> Wallet:
    """The contact's wallet, row-locked until the transaction ends (PostgreSQL)."""
    wallet = session.scalars(
        select(Wallet).where(col(Wallet.contact_id) == contact_id).with_for_update()
    ).one()
    session.refresh(wallet)
    return wallet


def _check_rules(
    runtime: Runtime, contact: Contact, purchase: Event, performed_on: datetime, ask: SpendAsk
) -> None:
    rules = runtime.rulesets.definition.spend_requests
    if contact.spend_blocked:
        raise _refuse(
            SpendBlocked, "Spending is blocked for this contact.", "/contact", "spending blocked"
        )
    zone = runtime.rulesets.time_zone
    days = (
        performed_on.astimezone(zone).date() - purchase.performed_on.astimezone(zone).date()
    ).days
    if days > rules.allowed_days_after_purchase:
        raise _refuse(
            SpendWindowExpired,
            f"The purchase was {days} days before; spending is allowed up to {rules.allowed_days_after_purchase}.",
            "/purchase_event_id" if ask.path == "/requested_amount" else "/performed_on",
            f"more than {rules.allowed_days_after_purchase} days after the purchase",
        )
    if (
        rules.applicable_classifications
        and purchase.classification not in rules.applicable_classifications
    ):
        raise _refuse(
            SpendNotApplicable,
            f"Spending is allowed on purchases classified {rules.applicable_classifications}.",
            "/purchase_event_id" if ask.path == "/requested_amount" else "/classification",
            "classification not applicable",
        )
    if ask.requested_cents is not None and not rules.allow_specific_amount:
        raise _refuse(
            SpecificAmountNotAllowed,
            "Only the purchase total can be spent.",
            ask.path,
            "specific amounts not allowed",
        )


def spend_on_purchase(
    session: Session,
    runtime: Runtime,
    *,
    contact: Contact,
    purchase: Event,
    event_id: str,
    performed_on: datetime,
    ask: SpendAsk,
) -> MadeSpend:
    """Redeem funds against ``purchase`` for the request ``event_id`` (a spend request,
    or the purchase itself). Raises a 422 DomainError, writing nothing, when refused."""
    _check_rules(runtime, contact, purchase, performed_on, ask)
    rules = runtime.rulesets.definition.spend_requests
    remaining = (purchase.amount_cents or 0) - spent_cents(session, purchase.id)
    requested = ask.requested_cents if ask.requested_cents is not None else remaining
    if requested > remaining:
        raise _refuse(
            SpendExceedsPurchase,
            f"Only {from_cents(max(remaining, 0))} of the purchase is left to spend against.",
            ask.path,
            f"more than the {from_cents(max(remaining, 0))} left of the purchase",
        )
    low = to_cents(rules.min_amount) if rules.min_amount is not None else 1
    high = to_cents(rules.max_amount) if rules.max_amount is not None else None
    if requested < low or (high is not None and requested > high):
        raise _refuse(
            SpendAmountOutOfRange,
            f"Spend {from_cents(requested)} is outside {from_cents(low)}..{from_cents(high) if high else 'no maximum'}.",
            ask.path,
            "outside the allowed spend range",
        )
    if (
        ask.otp is not None
        and ask.otp.spend_amount_cents is not None
        and ask.otp.spend_amount_cents != requested
    ):
        raise _refuse(
            OtpSpendMismatch,
            f"The OTP was issued for a spend of {from_cents(ask.otp.spend_amount_cents)}, not {from_cents(requested)}.",
            ask.path,
            "differs from the OTP's spend amount",
        )
    now = runtime.now()
    wallet = locked_wallet(session, contact.id)
    available = available_cents(session, wallet, now, ask.excluding_estimate)
    amount = requested
    if available < requested:
        if rules.reject_if_not_covered or ask.only_if_fully_covered or available < low:
            raise _refuse(
                InsufficientFunds,
                f"Available {from_cents(max(available, 0))}, requested {from_cents(requested)}.",
                ask.path,
                "not covered by available funds",
            )
        amount = available
    assert wallet.id is not None
    return debit(
        session,
        runtime,
        wallet_id=wallet.id,
        contact_id=contact.id,
        purchase=purchase,
        event_id=event_id,
        amount_cents=amount,
        requested_cents=ask.requested_cents,
        instant=False,
        excluding_estimate=ask.excluding_estimate,
        now=now,
    )


class MadeSpend(NamedTuple):
    """A spend as written (the row of ``spends``)."""

    id: str
    event_id: str
    purchase_event_id: str
    contact_id: str
    requested_cents: int | None
    amount_cents: int
    instant: bool
    reduction: str
    ledger_entry_id: int


SPEND_COLUMNS = (
    "id", "event_id", "purchase_event_id", "contact_id", "requested_cents", "amount_cents",
    "instant", "reduction", "ledger_entry_id", "created_at",
)  # fmt: skip


@cache
def _insert_spend(dialect: Dialect) -> DriverStatement:
    """Compiled once per process and dialect, run on the driver (``db.driver``)."""
    return DriverStatement(insert(table_of(Spend)), dialect, columns=SPEND_COLUMNS)


def reduction_at(runtime: Runtime, unit_code: str | None) -> str:
    """How the unit of a purchase settles spends on it (the definition's units)."""
    unit = runtime.rulesets.unit(unit_code or "")
    return unit.reduction if unit is not None else "front_end"


def debit(
    session: Session | Connection,
    runtime: Runtime,
    *,
    wallet_id: int,
    contact_id: str,
    purchase: Event,
    event_id: str,
    amount_cents: int,
    requested_cents: int | None,
    instant: bool,
    now: datetime,
    excluding_estimate: str | None = None,
) -> MadeSpend:
    """The spend record and its ledger debit; the conditional update decides."""
    spend_id = str(uuid.uuid4())
    try:
        entry = post_entry(
            session,
            wallet_id=wallet_id,
            kind="spend",
            amount_cents=-amount_cents,
            event_id=event_id,
            spend_id=spend_id,
            funds_checked_at=now,
            excluding_estimate=excluding_estimate,
        )
    except InsufficientBalance:
        raise InsufficientFunds("Available funds changed; the spend is not covered.") from None
    spend = MadeSpend(
        id=spend_id,
        event_id=event_id,
        purchase_event_id=purchase.id,
        contact_id=contact_id,
        requested_cents=requested_cents,
        amount_cents=amount_cents,
        instant=instant,
        reduction=reduction_at(runtime, purchase.performed_by_unit),
        ledger_entry_id=entry.id,
    )
    connection = session.connection() if isinstance(session, Session) else session
    _insert_spend(connection.dialect).run(
        driver_cursor(connection), spend._asdict() | {"created_at": utcnow()}
    )
    metrics().spends.labels(instant=str(instant).lower()).inc()
    return spend


@cache
def _spend_blocked(dialect: Dialect) -> DriverStatement:
    contacts = table_of(Contact).c
    return DriverStatement(
        select(contacts.spend_blocked).where(contacts.id == bindparam("contact")), dialect
    )


def _blocked(connection: Connection, contact_id: str) -> bool | None:
    """Whether the contact's spending is blocked (None: no such contact)."""
    row = (
        _spend_blocked(connection.dialect)
        .run(driver_cursor(connection), {"contact": contact_id})
        .fetchone()
    )
    return None if row is None else bool(row[0])


def instant_spends(
    session: Session | Connection,
    runtime: Runtime,
    purchase: Event,
    awards: list[MadeAward],
    already_spent_cents: int,
    spend_blocked: Mapping[str, bool] | None = None,
) -> list[MadeSpend]:
    """Awards of ``instant_spend`` offers are spent at once on the same purchase, like a
    discount (capped by what is left of the purchase after ``already_spent_cents``, the
    spends this purchase made before; skipped for blocked contacts). No wallet lock or
    read first: the conditional debit decides, as for every debit. ``spend_blocked``:
    contact -> blocked, as the caller read it moments before (else read here)."""
    spends: list[MadeSpend] = []
    connection = session.connection() if isinstance(session, Session) else session

    def blocked(contact_id: str) -> bool:
        known = (spend_blocked or {}).get(contact_id)
        return known if known is not None else _blocked(connection, contact_id) is not False

    amounts = instant_amounts(awards, (purchase.amount_cents or 0) - already_spent_cents, blocked)
    for award, amount in zip(awards, amounts, strict=True):
        if amount is None:
            continue
        spends.append(
            debit(
                session,
                runtime,
                wallet_id=award.wallet_id,
                contact_id=award.contact_id,
                purchase=purchase,
                event_id=purchase.id,
                amount_cents=amount,
                requested_cents=award.amount_cents,
                instant=True,
                now=runtime.now(),
            )
        )
    return spends


class InstantAward(Protocol):
    @property
    def instant_spend(self) -> bool: ...
    @property
    def amount_cents(self) -> int: ...
    @property
    def contact_id(self) -> str: ...


def instant_amounts(
    awards: Sequence[InstantAward], left_cents: int, blocked: Callable[[str], bool]
) -> list[int | None]:
    """Per award, what it spends at once on its purchase (None: nothing): the awards of
    ``instant_spend`` offers, in order, each capped by what is left of the purchase
    (``left_cents``), none for a contact whose spending is blocked."""
    amounts: list[int | None] = []
    for award in awards:
        amount = min(award.amount_cents, left_cents) if award.instant_spend else 0
        if amount <= 0 or blocked(award.contact_id):
            amounts.append(None)
            continue
        amounts.append(amount)
        left_cents -= amount
    return amounts
