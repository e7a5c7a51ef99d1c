"""Domain error types and their single mapping to RFC 9457 problem details.

Domain code and the use cases (intake, money, runs, analyst) raise :class:`DomainError`
subclasses carrying a machine-readable ``code`` and their problem shape (``to_problem``);
``api/responses.py`` (``EXCEPTION_HANDLERS``, registered once in ``create_app``) answers
any of them, and Litestar's own HTTP errors, as one ``application/problem+json`` shape.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import ClassVar

import msgspec

PROBLEM_MEDIA_TYPE = "application/problem+json"


class FieldError(msgspec.Struct, kw_only=True):
    """One offending field: a JSON Pointer into the request body or a parameter name."""

    path: str
    message: str


class Problem(msgspec.Struct, kw_only=True, omit_defaults=True):
    """RFC 9457 problem details, extended with ``code`` and per-field ``errors``."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    code: str
    errors: list[FieldError] | None = None


class DomainError(Exception):
    """Base of every refusal the product can explain to its caller."""

    status: ClassVar[int] = 422
    code: ClassVar[str] = "unprocessable"
    title: ClassVar[str] = "Request cannot be processed"

    def __init__(self, detail: str, *, errors: list[FieldError] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors
        self.headers: dict[str, str] = {}

    def to_problem(self) -> Problem:
        return Problem(
            title=self.title,
            status=self.status,
            detail=self.detail,
            code=self.code,
            errors=self.errors,
        )


def refusal(code: str, title: str, status: int = 422) -> type[DomainError]:
    """Declare a DomainError subclass with a fixed code, title and status."""
    name = "".join(part.capitalize() for part in code.split("_"))
    return type(name, (DomainError,), {"code": code, "title": title, "status": status})


class ValidationFailed(DomainError):
    code = "validation_failed"
    title = "Request body is invalid"

    @classmethod
    def at(cls, path: str, message: str) -> ValidationFailed:
        return cls(f"{path or '/'}: {message}", errors=[FieldError(path=path, message=message)])


# 404
EventNotFound = refusal("event_not_found", "Event not found", 404)
ContactNotFoundById = refusal("contact_not_found", "Contact not found", 404)
WalletNotFound = refusal("wallet_not_found", "Wallet not found", 404)
# 409
IdempotencyConflict = refusal(
    "idempotency_conflict", "External reference already used with a different body", 409
)
AlreadyCancelled = refusal("already_cancelled", "Event already cancelled", 409)
DuplicateContact = refusal("duplicate_contact", "Contact identifier already taken", 409)
# 422: business refusals on schema-valid input
ContactNotFound = refusal("contact_not_found", "Contact not found")
OtpInvalid = refusal("otp_invalid", "One-time password invalid, used or expired")
ClassificationNotAllowed = refusal(
    "classification_not_allowed", "Classification not allowed for this event type"
)
TotalsMismatch = refusal("totals_mismatch", "Totals disagree with the product lines")
ReferralLimitExceeded = refusal("referral_limit_exceeded", "Referral limit per day reached")
SelfReferral = refusal("self_referral", "A contact cannot refer itself")
DuplicateStatement = refusal(
    "duplicate_statement", "Financial statement already recorded for this period"
)
PerformedInFuture = refusal("performed_on_in_future", "Event is dated in the future")
PurchaseNotFound = refusal("purchase_not_found", "Purchase not found for this contact")
PurchaseNotPosted = refusal("purchase_not_posted", "Purchase is not posted")
UnknownCurrency = refusal("unknown_currency", "No exchange rate for this currency")


def http_problem(status: int, detail: str, code: str | None = None) -> Problem:
    """Problem details for framework-level HTTP errors (401, 403, 404, 405, 413, ...)."""
    phrase = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Error"
    return Problem(
        title=phrase,
        status=status,
        detail=detail or phrase,
        code=code or phrase.lower().replace(" ", "_").replace("-", "_"),
    )


# 422: spending
SpendBlocked = refusal("spend_blocked", "Spending is blocked for this contact")
InsufficientFunds = refusal("insufficient_funds", "Available funds do not cover the spend")
SpendWindowExpired = refusal("spend_window_expired", "The purchase is too old to spend against")
SpendAmountOutOfRange = refusal(
    "spend_amount_out_of_range", "Spend amount outside the allowed range"
)
SpecificAmountNotAllowed = refusal(
    "specific_amount_not_allowed", "A specific spend amount is not allowed"
)
SpendNotApplicable = refusal(
    "spend_not_applicable", "Spending is not allowed on this purchase's classification"
)
SpendExceedsPurchase = refusal("spend_exceeds_purchase", "Spends would exceed the purchase total")
OtpSpendMismatch = refusal("otp_spend_mismatch", "The OTP carries a different spend amount")
# estimates
EstimateNotFound = refusal("estimate_not_found", "Estimate not found", 404)
EstimateUnknown = refusal("estimate_not_found", "No estimate of this contact with that id")
EstimateConsumed = refusal("estimate_consumed", "Estimate already used by a purchase", 409)
EstimateExpired = refusal("estimate_expired", "Estimate expired", 409)
EstimateNotApproved = refusal("estimate_not_approved", "Estimate requires approval first", 409)
# returns
NotAPurchase = refusal("not_a_purchase", "Only purchases can have returns")
EventCancelled = refusal("event_cancelled", "Event is cancelled", 409)
ReturnExceedsPurchase = refusal("return_exceeds_purchase", "More returned than was bought")
# invoices (POST /v1/invoices)
# An event's idempotency_conflict, worded for an invoice: (invoice_type, number) is its key.
InvoiceConflict = refusal(
    "idempotency_conflict", "Invoice type and number already used with a different body", 409
)
InvoiceNotFound = refusal("invoice_not_found", "Invoice not found", 404)
CreditsInvoiceRequired = refusal(
    "credits_invoice_required", "A credit note must name the invoice it credits"
)
CreditedInvoiceNotFound = refusal(
    "credited_invoice_not_found", "No invoice of this contact with that number made a purchase"
)
AmbiguousCreditedInvoice = refusal(
    "ambiguous_credited_invoice", "Invoices of several types carry that number", 409
)
# merchants, terminals, processor transactions, claims (PLATFORM.md)
UnknownTerminal = refusal("unknown_terminal", "No merchant lists this terminal")
AmbiguousTerminal = refusal(
    "ambiguous_terminal", "Several merchants share this terminal: name the unit instead"
)
TransactionNotFound = refusal("transaction_not_found", "Processor transaction not found", 404)
UnknownMerchant = refusal("unknown_merchant", "No merchant with this id in the definition")
NoMatchingTransaction = refusal(
    "no_matching_transaction", "No unclaimed transaction matches the claim"
)
AmbiguousClaim = refusal(
    "ambiguous_claim", "Several transactions match the claim: add the time of the purchase", 409
)
AlreadyClaimed = refusal("already_claimed", "The transaction is already claimed", 409)
TooManyFailedClaims = refusal(
    "too_many_failed_claims", "Too many failed claims for this contact today", 429
)
