"""SQLModel tables. Money columns are integer cents (``*_cents``); see domain.money."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, Index, UniqueConstraint
from sqlmodel import Field, SQLModel

from rewards.db.types import BigIntPK, UTCDateTime, utcnow


def _ts(*, nullable: bool = False, index: bool = False) -> Any:
    return Field(sa_type=UTCDateTime, nullable=nullable, index=index)


def _cents(*, nullable: bool = False) -> Any:
    return Field(sa_type=BigInteger, nullable=nullable)


class Contact(SQLModel, table=True):
    __tablename__ = "contacts"

    id: str = Field(primary_key=True, max_length=36)
    code: str | None = Field(default=None, unique=True, max_length=100)
    cim: str | None = Field(default=None, unique=True, max_length=100)
    name: str | None = Field(default=None, max_length=200)
    segments: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    spend_blocked: bool = Field(default=False)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class GiftCard(SQLModel, table=True):
    __tablename__ = "gift_cards"

    number: str = Field(primary_key=True, max_length=100)
    contact_id: str = Field(foreign_key="contacts.id", index=True, max_length=36)


class PaymentCard(SQLModel, table=True):
    """A payment card token a processor sends (never a card number), unique across contacts."""

    __tablename__ = "payment_cards"

    token: str = Field(primary_key=True, max_length=100)
    contact_id: str = Field(foreign_key="contacts.id", index=True, max_length=36)


class Wallet(SQLModel, table=True):
    """One per contact. ``balance_cents`` moves in lock-step with the ledger."""

    __tablename__ = "wallets"

    id: int | None = Field(default=None, primary_key=True, sa_type=BigIntPK)
    code: str = Field(unique=True, max_length=32)
    contact_id: str = Field(foreign_key="contacts.id", unique=True, max_length=36)
    currency: str = Field(max_length=3)
    balance_cents: int = Field(default=0, sa_type=BigInteger)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class WalletTransaction(SQLModel, table=True):
    """Append-only ledger entry. A reversal names the entry it reverses, at most once."""

    __tablename__ = "wallet_transactions"
    __table_args__ = (Index("ix_wallet_transactions_wallet_id_id", "wallet_id", "id"),)

    id: int | None = Field(default=None, primary_key=True, sa_type=BigIntPK)
    wallet_id: int = Field(foreign_key="wallets.id", sa_type=BigInteger)
    kind: str = Field(max_length=20)  # award | spend | award_reversal | spend_reversal
    amount_cents: int = Field(sa_type=BigInteger)  # signed
    balance_after_cents: int = Field(sa_type=BigInteger)
    event_id: str = Field(index=True, max_length=36)  # the event that caused this entry
    offer_id: str | None = Field(default=None, max_length=100)
    reverses_id: int | None = Field(default=None, unique=True, sa_type=BigInteger)
    # The award or spend this entry credits, debits or (partly, on returns) reverses.
    award_id: str | None = Field(default=None, index=True, max_length=36)
    spend_id: str | None = Field(default=None, index=True, max_length=36)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class Event(SQLModel, table=True):
    """A customer event. Never modified after creation except its state (cancellation)."""

    __tablename__ = "events"
    __table_args__ = (
        UniqueConstraint("external_system", "external_reference", name="uq_events_external"),
        # state and amount_cents ride along so that the period aggregates of evaluation
        # runs read a contact's purchases from the index alone (no random page per row).
        Index(
            "ix_events_contact_type_performed",
            "contact_id",
            "type",
            "performed_on",
            "state",
            "amount_cents",
        ),
    )

    number: int | None = Field(default=None, primary_key=True, sa_type=BigIntPK)
    id: str = Field(unique=True, max_length=36)
    type: str = Field(max_length=32, index=True)
    state: str = Field(default="posted", max_length=16)
    contact_id: str = Field(foreign_key="contacts.id", max_length=36)
    classification: str | None = Field(default=None, max_length=100)
    performed_on: datetime = Field(sa_type=UTCDateTime, index=True)
    performed_by_unit: str | None = Field(default=None, max_length=100)
    description: str | None = Field(default=None, max_length=500)
    external_system: str = Field(default="", max_length=100)
    external_reference: str | None = Field(default=None, max_length=200)
    request_hash: str = Field(max_length=64)
    process_immediately: bool = Field(default=False)
    evaluated: bool = Field(default=False)
    # Main amount in the business currency: purchase total, financial achievement amount.
    amount_cents: int | None = Field(default=None, sa_type=BigInteger)
    # Type-specific fields exactly as answered (amounts as decimal strings).
    details: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    cancelled_at: datetime | None = Field(default=None, sa_type=UTCDateTime, nullable=True)


class EventLine(SQLModel, table=True):
    """A purchase's product line, kept relational for returns and period aggregates."""

    __tablename__ = "event_lines"

    id: int | None = Field(default=None, primary_key=True, sa_type=BigIntPK)
    event_id: str = Field(foreign_key="events.id", index=True, max_length=36)
    line_no: int
    sku: str = Field(max_length=100, index=True)
    quantity_milli: int = Field(sa_type=BigInteger)  # quantity x 1000
    net_cents: int = Field(sa_type=BigInteger)
    vat_cents: int = Field(sa_type=BigInteger)
    total_cents: int = Field(sa_type=BigInteger)


class Sku(SQLModel, table=True):
    """Product catalogue; unknown SKUs are created when a purchase names them."""

    __tablename__ = "skus"

    code: str = Field(primary_key=True, max_length=100)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class PurchaseClassification(SQLModel, table=True):
    """Purchase classifications not declared in the definition, created on the fly."""

    __tablename__ = "purchase_classifications"

    code: str = Field(primary_key=True, max_length=100)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class StatementPeriod(SQLModel, table=True):
    """Holds (contact, classification, period) unique for posted financial statements."""

    __tablename__ = "statement_periods"

    contact_id: str = Field(primary_key=True, max_length=36)
    classification: str = Field(primary_key=True, max_length=100)
    period: str = Field(primary_key=True, max_length=7)
    event_id: str = Field(max_length=36)


class Award(SQLModel, table=True):
    """An award an offer gave for an event, with the ruleset version that decided it.
    Unique per (offer, event, beneficiary): a referral offer awards the referred contact
    and the referrer once each; every other offer awards once per event."""

    __tablename__ = "awards"
    __table_args__ = (
        # Leads with the event: it also serves the lookups of an event's awards.
        UniqueConstraint("event_id", "offer_id", "beneficiary", name="uq_awards_offer_event"),
        Index("ix_awards_contact_offer_performed", "contact_id", "offer_id", "performed_on"),
    )

    id: str = Field(primary_key=True, max_length=36)
    event_id: str = Field(foreign_key="events.id", max_length=36)
    offer_id: str = Field(max_length=100)
    offer_name: str = Field(max_length=200)
    classification: str = Field(max_length=50)
    beneficiary: str = Field(default="contact", max_length=10)  # contact | referred | referrer
    contact_id: str = Field(foreign_key="contacts.id", max_length=36)
    amount_cents: int = Field(sa_type=BigInteger)
    lines: list[dict[str, Any]] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    instant_spend: bool = Field(default=False)
    ruleset_version: str = Field(max_length=64)
    performed_on: datetime = Field(sa_type=UTCDateTime)  # the event's, for max_awards windows
    ledger_entry_id: int = Field(sa_type=BigInteger)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class Spend(SQLModel, table=True):
    """Wallet funds redeemed against a purchase: by a spend request event, by the purchase
    itself (identify and spend, or a consumed estimate), or instantly by an offer."""

    __tablename__ = "spends"

    id: str = Field(primary_key=True, max_length=36)
    event_id: str = Field(foreign_key="events.id", index=True, max_length=36)  # who asked
    purchase_event_id: str = Field(foreign_key="events.id", index=True, max_length=36)
    contact_id: str = Field(foreign_key="contacts.id", max_length=36)
    requested_cents: int | None = Field(default=None, sa_type=BigInteger)
    amount_cents: int = Field(sa_type=BigInteger)
    instant: bool = Field(default=False)
    reduction: str = Field(default="front_end", max_length=10)  # front_end | back_end
    ledger_entry_id: int = Field(sa_type=BigInteger)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class Estimate(SQLModel, table=True):
    """A purchase dry run; optionally holds (reserves) the spendable amount until it
    expires or a purchase consumes it. Expiry is a timestamp compared on read."""

    __tablename__ = "estimates"
    __table_args__ = (Index("ix_estimates_wallet_open", "wallet_id", "consumed_at", "expires_at"),)

    id: str = Field(primary_key=True, max_length=36)
    contact_id: str = Field(foreign_key="contacts.id", max_length=36)
    wallet_id: int = Field(foreign_key="wallets.id", sa_type=BigInteger)
    result: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    reserved_cents: int = Field(default=0, sa_type=BigInteger)
    requires_approval: bool = Field(default=False)
    approved_at: datetime | None = Field(default=None, sa_type=UTCDateTime, nullable=True)
    consumed_at: datetime | None = Field(default=None, sa_type=UTCDateTime, nullable=True)
    consumed_by: str | None = Field(default=None, max_length=36)
    expires_at: datetime = Field(sa_type=UTCDateTime)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class ReturnedLine(SQLModel, table=True):
    """Quantities of a purchase line returned, one row per line per return."""

    __tablename__ = "returned_lines"

    id: int | None = Field(default=None, primary_key=True, sa_type=BigIntPK)
    return_id: str = Field(index=True, max_length=36)
    event_id: str = Field(foreign_key="events.id", index=True, max_length=36)
    line_no: int
    quantity_milli: int = Field(sa_type=BigInteger)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class Otp(SQLModel, table=True):
    __tablename__ = "otps"

    id: int | None = Field(default=None, primary_key=True, sa_type=BigIntPK)
    code: str = Field(max_length=6, index=True)
    contact_id: str = Field(foreign_key="contacts.id", max_length=36)
    spend_amount_cents: int | None = Field(default=None, sa_type=BigInteger)
    expires_at: datetime = Field(sa_type=UTCDateTime)
    used_at: datetime | None = Field(default=None, sa_type=UTCDateTime, nullable=True)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class RateCounter(SQLModel, table=True):
    """A rate limit's count for one subject (an API key's hash, a client of a key, a
    contact) in its current fixed window, shared by every worker process
    (runtime.rate_counters). One row per (limit, subject), reset in place when a new
    window starts, so the table holds one row per subject that ever met a limit."""

    __tablename__ = "rate_counters"

    name: str = Field(primary_key=True, max_length=40)
    subject: str = Field(primary_key=True, max_length=200)
    window_start: int = Field(sa_type=BigInteger)  # seconds since the epoch, UTC
    used: int = Field(default=0)


class Invoice(SQLModel, table=True):
    """An invoice posted to ``POST /v1/invoices``, unique per (type, number): the
    idempotency key. The row is inserted first in its request's transaction (ON CONFLICT
    DO NOTHING: the claim a concurrent twin waits on), and what the invoice made (its
    contact, the purchase, a credit note's return) is filled in before that transaction
    commits; it is never modified afterwards (cancelling its purchase leaves it)."""

    __tablename__ = "invoices"
    __table_args__ = (
        # Leads with the number: it also serves a credit note's search for the invoice
        # it credits (by number, whatever its type).
        UniqueConstraint("number", "invoice_type", name="uq_invoices_number_type"),
    )

    id: str = Field(primary_key=True, max_length=36)
    invoice_type: str = Field(max_length=50)
    number: str = Field(max_length=100)
    processed_as: str = Field(max_length=16)  # purchase | credit_note | stored
    request_hash: str = Field(max_length=64)
    # Null only inside the creating transaction (the claim precedes identification).
    contact_id: str | None = Field(default=None, foreign_key="contacts.id", max_length=36)
    issued_on: datetime = Field(sa_type=UTCDateTime)
    performed_by_unit: str = Field(max_length=100)
    currency: str | None = Field(default=None, max_length=3)
    # The lines as posted (amounts as decimal strings): sku, quantity, unit_price, vat_amount.
    lines: list[dict[str, Any]] = Field(sa_column=Column(JSON, nullable=False))
    description: str | None = Field(default=None, max_length=500)
    credits_invoice: str | None = Field(default=None, max_length=100)
    credits_invoice_type: str | None = Field(default=None, max_length=50)
    # purchase: the event it created; credit_note: the purchase whose lines it returned.
    purchase_event_id: str | None = Field(
        default=None, foreign_key="events.id", index=True, max_length=36
    )
    credited_invoice_id: str | None = Field(default=None, foreign_key="invoices.id", max_length=36)
    # credit_note: the answer's returned lines and reversals, as first answered.
    outcome: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class ProcessorTransaction(SQLModel, table=True):
    """A card transaction a processor posted; never modified. Its routes say what each
    merchant owning the terminal made of it."""

    __tablename__ = "processor_transactions"
    __table_args__ = (
        UniqueConstraint("processor", "transaction_id", name="uq_processor_transactions_key"),
    )

    number: int | None = Field(default=None, primary_key=True, sa_type=BigIntPK)
    id: str = Field(unique=True, max_length=36)
    processor: str = Field(max_length=100)
    transaction_id: str = Field(max_length=100)
    terminal_id: str = Field(max_length=100)
    performed_on: datetime = Field(sa_type=UTCDateTime)
    amount_cents: int = Field(sa_type=BigInteger)
    currency: str | None = Field(default=None, max_length=3)
    card_token: str = Field(max_length=100, index=True)
    card_brand: str | None = Field(default=None, max_length=50)
    card_type: str | None = Field(default=None, max_length=50)
    card_last4: str | None = Field(default=None, max_length=4)
    request_hash: str = Field(max_length=64)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class ProcessorRoute(SQLModel, table=True):
    """What one merchant owning the terminal made of a processor transaction: its status
    moves recorded | unidentified | matched | awaiting_match | unclaimed | claimed, and
    ``event_id`` is the purchase it became or was matched to (at most one route each)."""

    __tablename__ = "processor_routes"
    __table_args__ = (
        UniqueConstraint("transaction_id", "merchant_id", name="uq_processor_routes_merchant"),
        Index("ix_processor_routes_merchant_status", "merchant_id", "status", "amount_cents"),
    )

    id: int | None = Field(default=None, primary_key=True, sa_type=BigIntPK)
    transaction_id: str = Field(foreign_key="processor_transactions.id", max_length=36)
    merchant_id: str = Field(max_length=100)
    mode: str = Field(max_length=10)  # direct | matching | claim, as the merchant had it
    status: str = Field(max_length=16)
    # Copied from the transaction: the lookups of matching and claims read routes alone.
    performed_on: datetime = Field(sa_type=UTCDateTime)
    amount_cents: int = Field(sa_type=BigInteger)
    card_last4: str | None = Field(default=None, max_length=4)
    match_until: datetime | None = Field(default=None, sa_type=UTCDateTime, nullable=True)
    event_id: str | None = Field(default=None, unique=True, max_length=36)
    claimed_by: str | None = Field(default=None, max_length=36)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class OfferBudgetUse(SQLModel, table=True):
    """What an offer with a ``budget`` has awarded in one period (money.budgets): charged
    under the row's lock in the transaction that writes the award."""

    __tablename__ = "offer_budget_use"

    offer_id: str = Field(primary_key=True, max_length=100)
    period: str = Field(primary_key=True, max_length=16)  # total | 2026 | 2026-12 | ...
    used_cents: int = Field(default=0, sa_type=BigInteger)


metadata = SQLModel.metadata


# Evaluation-run tables live in their own module; importing it registers them here.
# So do the ruleset history's.
import rewards.db.history_tables  # noqa: E402
import rewards.db.notify_tables  # noqa: E402
import rewards.db.run_tables  # noqa: E402, F401
