"""The wire format: request and response structs.

Field names are the JSON names, which are the JSON Schema names in ``schemas/`` and the
names ruleset files use; nothing is renamed. Request bodies are first checked against
their JSON Schema (the contract integrators see in the OpenAPI document), then decoded
into these structs; the structs add exact ``Decimal`` money and typed timestamps.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any, Literal

import msgspec

from rewards.domain.decisions import Explanation
from rewards.domain.money import Money, MoneyStruct
from rewards.errors import FieldError


class Base(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Base of every request struct: keyword-only (subclasses repeat ``kw_only=True``, msgspec
    does not inherit it), unknown fields are an error (the schema
    says ``additionalProperties: false`` too, so both layers agree)."""


class Answer(MoneyStruct, kw_only=True):
    """Base of response structs: their money fields (typed ``Money``) leave with two
    decimals (domain.money.MoneyStruct)."""


class Out(Answer, kw_only=True, omit_defaults=True):
    """Base of response structs whose optional fields that are ``None`` are left out."""


# ---- requests -------------------------------------------------------------------------


class ContactIdentifier(Base, kw_only=True):
    wallet_code: str | None = None
    contact_id: str | None = None
    contact_code: str | None = None
    cim: str | None = None
    otp: str | None = None
    gift_card: str | None = None
    payment_card: str | None = None


class PaymentMedium(Base, kw_only=True):
    brand: str | None = None
    type: str | None = None
    identifier: str | None = None


class ProductLineIn(Base, kw_only=True):
    sku: str
    quantity: Decimal = Decimal(1)
    net_amount: Decimal
    vat_amount: Decimal = Decimal(0)
    total_amount: Decimal | None = None


class SpendInstruction(Base, kw_only=True):
    amount: Decimal | None = None
    only_if_fully_covered: bool = False


class EventIn(Base, kw_only=True):
    contact: ContactIdentifier | None = None
    performed_on: datetime
    performed_by_unit: str | None = None
    classification: str | None = None
    description: str | None = None
    external_system: str | None = None
    external_reference: str | None = None
    process_immediately: bool = False


class PurchaseIn(EventIn, kw_only=True):
    performed_by_terminal: str | None = None  # instead of performed_by_unit (intake.terminals)
    reference_number: str
    currency: str | None = None
    products: list[ProductLineIn]
    net_amount: Decimal | None = None
    vat_amount: Decimal | None = None
    total_amount: Decimal | None = None
    payment_medium: PaymentMedium | None = None
    spend: SpendInstruction | None = None
    estimate_id: str | None = None


class ReferralIn(EventIn, kw_only=True):
    referred: ContactIdentifier
    referred_by: ContactIdentifier


class AchievementIn(EventIn, kw_only=True):
    pass


class FinancialAchievementIn(EventIn, kw_only=True):
    amount: Decimal
    product: str | None = None
    payment_medium: PaymentMedium | None = None


class KpiIn(Base, kw_only=True):
    kpi: str
    product: str | None = None
    value: Decimal


class FinancialStatementIn(EventIn, kw_only=True):
    period: str
    kpis: list[KpiIn]


class SocialMediaIn(EventIn, kw_only=True):
    platform: str
    profile: str | None = None
    action: str


class WebIn(EventIn, kw_only=True):
    website: str


class SpendRequestIn(EventIn, kw_only=True):
    purchase_event_id: str
    requested_amount: Decimal | None = None


EVENT_BODIES: dict[str, type[EventIn]] = {
    "purchase": PurchaseIn,
    "referral": ReferralIn,
    "achievement": AchievementIn,
    "financial_achievement": FinancialAchievementIn,
    "financial_statement": FinancialStatementIn,
    "social_media": SocialMediaIn,
    "web": WebIn,
    "spend_request": SpendRequestIn,
}
EventType = Literal[
    "purchase",
    "referral",
    "achievement",
    "financial_achievement",
    "financial_statement",
    "social_media",
    "web",
    "spend_request",
]


class BulkItemIn(Base, kw_only=True):
    type: EventType
    event: dict[str, Any]


class ContactCreate(Base, kw_only=True):
    code: str | None = None
    cim: str | None = None
    name: str | None = None
    segments: list[str] = []
    gift_cards: list[str] = []
    payment_cards: list[str] = []
    spend_blocked: bool = False


class ContactUpdate(Base, kw_only=True):
    name: str | None = None
    segments: list[str] | None = None
    gift_cards: list[str] | None = None
    payment_cards: list[str] | None = None
    spend_blocked: bool | None = None


class OtpRequest(Base, kw_only=True):
    spend_amount: Decimal | None = None
    ttl_seconds: int | None = None
    qr: bool = False  # answer the code as a QR code (SVG) too, for a till's scanner


# ---- responses ------------------------------------------------------------------------


class WalletOut(Answer, kw_only=True):
    code: str
    currency: str
    balance: Money
    reserved: Money
    available: Money


class WalletWithContact(WalletOut, kw_only=True):
    contact_id: str


class ContactOut(msgspec.Struct, kw_only=True):
    id: str
    code: str | None
    cim: str | None
    name: str | None
    segments: list[str]
    gift_cards: list[str]
    payment_cards: list[str]
    spend_blocked: bool
    created_at: datetime
    wallet: WalletOut


class OtpOut(Out, kw_only=True):
    otp: str
    expires_at: datetime
    spend_amount: Money | None
    qr_svg: str | None = None  # asked with ``qr: true``: the six digits as a QR code, SVG


ContactMatchedBy = Literal["id", "code", "cim", "wallet_code", "gift_card", "name"]


class ContactMatch(msgspec.Struct, kw_only=True):
    """A contact found by the console's search, and by what."""

    id: str
    code: str | None
    cim: str | None
    name: str | None
    wallet_code: str
    matched_by: ContactMatchedBy


class LedgerEntry(Answer, kw_only=True):
    id: int
    kind: Literal["award", "spend", "award_reversal", "spend_reversal"]
    amount: Money
    balance_after: Money
    event_id: str
    offer_id: str | None
    created_at: datetime


class LedgerPage(msgspec.Struct, kw_only=True):
    items: list[LedgerEntry]
    next_cursor: str | None


class LineAwardOut(Answer, kw_only=True):
    index: int
    sku: str
    amount: Money


class AwardOut(Out, kw_only=True):
    offer_id: str
    offer_name: str
    classification: str
    amount: Money
    contact_id: str
    lines: list[LineAwardOut] | None = None


class SpendOut(Answer, kw_only=True):
    id: str
    amount: Money
    instant: bool


class EventWallet(Answer, kw_only=True):
    code: str
    balance: Money
    available: Money


class ProductLineOut(Answer, kw_only=True):
    sku: str
    quantity: Decimal
    net_amount: Money
    vat_amount: Money
    total_amount: Money


class PaymentMediumOut(Out, kw_only=True):
    brand: str | None = None
    type: str | None = None
    identifier: str | None = None


class KpiOut(Out, kw_only=True):
    kpi: str
    value: Decimal
    product: str | None = None


class EventOut(Out, kw_only=True):
    """Any event. Common fields always appear; the type's own fields appear for its type."""

    id: str
    number: int
    type: EventType
    state: Literal["posted", "cancelled"]
    contact_id: str
    performed_on: datetime
    created_at: datetime
    evaluated: bool
    process_immediately: bool
    awards: list[AwardOut]
    spends: list[SpendOut]
    wallet: EventWallet
    performed_by_unit: str | None = None
    classification: str | None = None
    description: str | None = None
    external_system: str | None = None
    external_reference: str | None = None
    cancelled_at: datetime | None = None
    # purchase
    reference_number: str | None = None
    currency: str | None = None
    products: list[ProductLineOut] | None = None
    net_amount: Money | None = None
    vat_amount: Money | None = None
    total_amount: Money | None = None
    original_currency: str | None = None
    original_total_amount: Money | None = None
    payment_medium: PaymentMediumOut | None = None
    estimate_id: str | None = None
    # a POS purchase matched to a processor's card transaction (PLATFORM.md, matching)
    matched_transaction_id: str | None = None
    # referral
    referred_contact_id: str | None = None
    referrer_contact_id: str | None = None
    # financial achievement / statement
    amount: Money | None = None
    product: str | None = None
    period: str | None = None
    kpis: list[KpiOut] | None = None
    # social media / web
    platform: str | None = None
    profile: str | None = None
    action: str | None = None
    website: str | None = None
    # spend request
    purchase_event_id: str | None = None
    requested_amount: Money | None = None
    # GET /v1/events/{id}?explain=true: why each offer of its type did or did not apply
    explanation: Explanation | None = None


class EventPage(msgspec.Struct, kw_only=True):
    items: list[EventOut]
    next_cursor: str | None


ReversalKind = Literal["award_reversal", "spend_reversal"]


class ReversalOut(Answer, kw_only=True):
    id: int
    kind: ReversalKind
    amount: Money
    balance_after: Money
    reverses_id: int | None  # the entry reversed whole; None for a partial (return) reversal
    offer_id: str | None


class CancelledEventOut(EventOut, kw_only=True):
    """The cancelled event, with the ledger reversals its cancellation made."""

    reversals: list[ReversalOut]


class ProblemOut(Out, kw_only=True):
    """Same shape as errors.Problem; kept here so bulk results can embed it."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    code: str
    errors: list[dict[str, str]] | None = None


class BulkResult(Out, kw_only=True):
    status: int
    event: EventOut | None = None
    problem: ProblemOut | None = None


class BulkOut(msgspec.Struct, kw_only=True):
    items: list[BulkResult]


class Health(msgspec.Struct, kw_only=True):
    status: str  # ok | degraded (the last reload was refused; the version here serves)
    database: str
    rulesets_version: str | None
    reload_errors: list[str] = []  # of the refused reload, as file:line:column: message


class ValidityOut(msgspec.Struct, kw_only=True, rename={"from_": "from"}):
    from_: date | None
    until: date | None


class BudgetOut(Answer, kw_only=True):
    """An offer's budget and, for the period under way (business time zone), what its
    awards used and what is left."""

    amount: Money
    period: Literal["day", "week", "month", "year", "total"]
    current_period: str  # total | 2026 | 2026-12 | 2026-W49 | 2026-12-05
    used: Money
    left: Money


class OfferBudgetOut(BudgetOut, kw_only=True):
    offer_id: str


class OfferOut(msgspec.Struct, kw_only=True):
    id: str
    name: str
    classification: str
    evaluation: Literal["immediate", "batch"]
    valid: ValidityOut | None
    ruleset_file: str
    ruleset_version: str
    budget: BudgetOut | None = None


class OfferPage(msgspec.Struct, kw_only=True):
    items: list[OfferOut]
    next_cursor: str | None


class RulesetVersionOut(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One ruleset version this process loaded or the awards record."""

    version: str
    serving: bool
    loaded_at: datetime | None = None  # when this process loaded it
    awards: int = 0  # awards recorded with this version (all processes)
    first_award_at: datetime | None = None
    last_award_at: datetime | None = None


class RulesetsOut(msgspec.Struct, kw_only=True):
    version: str
    loaded_at: datetime
    files: list[str]
    offers: int
    errors: list[str]
    versions: list[RulesetVersionOut]


class EstimateSpendIn(Base, kw_only=True):
    amount: Decimal | None = None


class EstimateIn(Base, kw_only=True):
    contact: ContactIdentifier
    performed_on: datetime | None = None
    performed_by_unit: str
    classification: str | None = None
    description: str | None = None
    reference_number: str | None = None
    currency: str | None = None
    products: list[ProductLineIn]
    net_amount: Decimal | None = None
    vat_amount: Decimal | None = None
    total_amount: Decimal | None = None
    payment_medium: PaymentMedium | None = None
    spend: EstimateSpendIn | None = None
    reserve: bool = False
    reserve_ttl_seconds: int = 900
    requires_approval: bool = False


class SpendableOut(Answer, kw_only=True):
    amount: Money
    min_spend: Money | None
    max_spend: Money | None


class EstimateWallet(Answer, kw_only=True):
    code: str
    balance: Money
    available: Money


class ReservationOut(Answer, kw_only=True):
    amount: Money
    expires_at: datetime


class EstimateOut(Answer, kw_only=True):
    id: str
    contact_id: str
    status: Literal["pending", "approved", "consumed", "expired"]
    awards: list[AwardOut]
    total_award: Money
    instant_spend: Money
    total_amount: Money
    spendable: SpendableOut
    allow_spending: bool
    wallet: EstimateWallet
    reservation: ReservationOut | None
    requires_approval: bool
    expires_at: datetime
    consumed_by_event_id: str | None
    created_at: datetime


class ReturnLineIn(Base, kw_only=True):
    sku: str
    quantity: Decimal


class ReturnIn(Base, kw_only=True):
    products: list[ReturnLineIn]
    description: str | None = None


class ReturnedLineOut(Answer, kw_only=True):
    index: int
    sku: str
    quantity: Decimal
    amount: Money


class ReturnOut(msgspec.Struct, kw_only=True):
    id: str
    event_id: str
    products: list[ReturnedLineOut]
    reversals: list[ReversalOut]
    wallet: EventWallet


# ---- invoices (POST /v1/invoices, schemas/invoice.json) ------------------------------


class InvoiceLineIn(Base, kw_only=True):
    sku: str
    quantity: Decimal = Decimal(1)
    unit_price: Decimal  # net, per unit
    vat_amount: Decimal = Decimal(0)  # of the whole line


class InvoiceIn(Base, kw_only=True):
    invoice_type: str
    number: str
    contact: ContactIdentifier
    issued_on: datetime
    performed_by_unit: str | None = None  # or performed_by_terminal (intake.terminals)
    performed_by_terminal: str | None = None
    currency: str | None = None
    lines: list[InvoiceLineIn]
    credits_invoice: str | None = None
    credits_invoice_type: str | None = None
    description: str | None = None


class InvoiceLineOut(Answer, kw_only=True):
    sku: str
    quantity: Decimal
    unit_price: Money
    vat_amount: Money


InvoiceProcessing = Literal["purchase", "credit_note", "stored"]


class InvoiceOut(Answer, kw_only=True):
    """An invoice as posted, and what the definition's ``purchase_automation`` made of it
    when it was posted (``processed_as``). Every field is always present (null when it
    does not apply)."""

    id: str
    invoice_type: str
    number: str
    # purchase: it made a purchase; credit_note: it returned lines; stored: nothing else
    processed_as: InvoiceProcessing
    contact_id: str
    issued_on: datetime
    performed_by_unit: str
    currency: str | None  # as sent (null: the business currency)
    lines: list[InvoiceLineOut]
    description: str | None
    credits_invoice: str | None
    credits_invoice_type: str | None
    # The purchase event the invoice created (purchase), or whose lines the credit note
    # returned (credit_note); null for a stored invoice.
    purchase_event_id: str | None
    credited_invoice_id: str | None  # credit_note: the invoice it credits
    returned: list[ReturnedLineOut] | None  # credit_note: the lines returned
    reversals: list[ReversalOut] | None  # credit_note: the award reversals they made
    created_at: datetime


class EventTypeCount(msgspec.Struct, kw_only=True):
    type: str
    posted: int
    cancelled: int


class OfferTotals(Answer, kw_only=True):
    offer_id: str
    count: int
    amount: Money


class AwardTotals(Answer, kw_only=True):
    count: int
    amount: Money
    reversed: Money
    by_offer: list[OfferTotals]


class SpendTotals(Answer, kw_only=True):
    count: int
    amount: Money


class AnalyticsSummary(Answer, kw_only=True, rename={"from_": "from"}):
    from_: datetime | None
    to: datetime | None
    merchant_id: str | None = None  # the summary is of this merchant's units (liability: all)
    events: list[EventTypeCount]
    awards: AwardTotals
    spends: SpendTotals
    outstanding_liability: Money
    budgets: list[OfferBudgetOut] = []  # offers with a budget: the period under way


# ---- processor transactions and claims (PLATFORM.md) ------------------------------------


class CardIn(Base, kw_only=True):
    token: str
    brand: str | None = None
    type: str | None = None
    last4: str | None = None


class ProcessorTransactionIn(Base, kw_only=True):
    processor: str
    transaction_id: str
    terminal_id: str
    performed_on: datetime
    amount: Decimal
    currency: str | None = None
    card: CardIn


RouteStatus = Literal[
    "recorded", "unidentified", "matched", "awaiting_match", "unclaimed", "claimed"
]


class RouteOut(Out, kw_only=True):
    merchant_id: str
    processor_mode: Literal["direct", "matching", "claim"]
    status: RouteStatus
    event_id: str | None = None  # the purchase it became, was matched to, or was claimed as
    match_until: datetime | None = None  # awaiting_match: a run records it after this


class CardOut(Out, kw_only=True):
    brand: str | None = None
    type: str | None = None
    last4: str | None = None


class ProcessorTransactionOut(Answer, kw_only=True):
    """A card transaction as posted (the card's token is never answered back) and what
    each merchant owning its terminal made of it."""

    id: str
    processor: str
    transaction_id: str
    terminal_id: str
    performed_on: datetime
    amount: Money
    currency: str | None
    card: CardOut
    contact_id: str | None  # the card's contact when the token is registered
    created_at: datetime
    routes: list[RouteOut]


class ProcessorTransactionPage(msgspec.Struct, kw_only=True):
    items: list[ProcessorTransactionOut]
    next_cursor: str | None


class TransactionClaimIn(Base, kw_only=True):
    contact: ContactIdentifier
    merchant_id: str
    performed_on: str  # a date (the whole day) or an RFC 3339 timestamp: intake.claims
    amount: Decimal
    last4: str


class TransactionClaimOut(msgspec.Struct, kw_only=True):
    transaction_id: str
    merchant_id: str
    card_linked: bool  # the card's token was added to the contact's payment cards
    event: EventOut


# ---- notifications out (the outbox's messages; schemas/notifications/) -----------------

NotificationType = Literal[
    "award.created",
    "award.reversed",
    "spend.created",
    "spend.reversed",
    "wallet.balance_changed",
    "event.cancelled",
    "evaluation_run.finished",
    "rulesets.reloaded",
    "rulesets.reload_refused",
    "processor_transaction.recorded",
    "transaction_claim.accepted",
]
NOTIFICATION_TYPES: tuple[str, ...] = NotificationType.__args__  # type: ignore[attr-defined]


class LedgerMoved(Out, kw_only=True):
    """``data`` of award.created, award.reversed, spend.created and spend.reversed: one
    ledger entry (``amount`` signed as on the ledger: a spend or a reversal of an award
    is negative)."""

    contact_id: str
    event_id: str
    entry_id: int
    amount: Money
    balance_after: Money
    offer_id: str | None = None
    award_id: str | None = None
    spend_id: str | None = None
    reverses_entry_id: int | None = None


class BalanceChanged(Out, kw_only=True):
    """``data`` of wallet.balance_changed: a transaction moved the wallet's balance by
    ``change`` (the sum of its entries) to ``balance``."""

    contact_id: str
    wallet_id: int
    balance: Money
    change: Money
    event_ids: list[str]


class EventCancelled(Out, kw_only=True):
    contact_id: str
    event_id: str
    event_type: str
    number: int
    reversals: int


class RunFinished(Out, kw_only=True):
    run_id: str
    status: str
    as_of: datetime
    events_evaluated: int
    awards: int
    awarded: Money


class RulesetsReloaded(Out, kw_only=True):
    """A ruleset version loaded for the first time (by any process: once per version)."""

    version: str
    source: str
    loaded_by: str
    files: int


class RulesetsReloadRefused(Out, kw_only=True):
    """A reload refused (every problem as ``file:line:column``); the serving version
    stays. A folder change refused by the watcher is told by every process that saw it."""

    serving_version: str
    trigger: str
    errors: list[FieldError]


class ProcessorTransactionRecorded(Out, kw_only=True):
    processor: str
    transaction_id: str
    merchant_id: str
    status: str
    contact_id: str | None = None
    event_id: str | None = None
    amount: Money


class TransactionClaimAccepted(Out, kw_only=True):
    processor: str
    transaction_id: str
    merchant_id: str
    contact_id: str
    event_id: str


class Notification(Out, kw_only=True):
    """The envelope every webhook body and broker message carries (Standard Webhooks'
    shape): ``id`` is the outbox row's id, the idempotency key receivers dedupe on (also
    the ``webhook-id`` header and the broker's message id)."""

    id: str
    type: NotificationType
    timestamp: datetime
    contact_id: str | None = None
    data: dict[str, Any]


# Which struct is the ``data`` of each notification type (schemas/notifications/<type>.json).
NOTIFICATION_DATA: dict[str, type[Out]] = {
    "award.created": LedgerMoved,
    "award.reversed": LedgerMoved,
    "spend.created": LedgerMoved,
    "spend.reversed": LedgerMoved,
    "wallet.balance_changed": BalanceChanged,
    "event.cancelled": EventCancelled,
    "evaluation_run.finished": RunFinished,
    "rulesets.reloaded": RulesetsReloaded,
    "rulesets.reload_refused": RulesetsReloadRefused,
    "processor_transaction.recorded": ProcessorTransactionRecorded,
    "transaction_claim.accepted": TransactionClaimAccepted,
}


# ---- webhook subscriptions (POST /v1/webhooks; schemas/webhook_create.json) ------------


class WebhookCreate(Base, kw_only=True):
    url: str
    event_types: list[str]  # notification types, or ["*"]: every type
    secret: str | None = None  # whsec_<base64 of 24-64 bytes>; absent: one is generated
    description: str | None = None


WebhookSource = Literal["api", "config", "broker"]
DeliveryStatus = Literal["pending", "delivered", "dead"]


class WebhookOut(Out, kw_only=True):
    """A subscription as read back: never its secret (only the create answer shows it)."""

    id: str
    url: str
    event_types: list[str]
    source: WebhookSource  # api (POST /v1/webhooks), config (the webhooks file), broker
    active: bool  # false: switched off (the endpoint answered 410, or left the file)
    created_at: datetime
    description: str | None = None


class WebhookCreated(WebhookOut, kw_only=True):
    secret: str  # shown this once: keep it to verify the signatures


class WebhookPage(msgspec.Struct, kw_only=True):
    items: list[WebhookOut]
    next_cursor: str | None = None


class DeliveryOut(msgspec.Struct, kw_only=True):
    """One notification to one subscription and how its attempts went."""

    id: int
    outbox_id: str  # the message id: the envelope's ``id`` and the ``webhook-id`` header
    type: str | None  # None only when the message itself is no longer kept
    contact_id: str | None
    status: DeliveryStatus
    attempts: int
    next_attempt_at: datetime
    first_attempt_at: datetime | None
    last_attempt_at: datetime | None
    last_status: int | None
    last_error: str | None
    delivered_at: datetime | None


class DeliveryPage(msgspec.Struct, kw_only=True):
    items: list[DeliveryOut]
    next_cursor: str | None = None


class RedeliveryOut(msgspec.Struct, kw_only=True):
    redelivered: int  # dead deliveries made pending again
