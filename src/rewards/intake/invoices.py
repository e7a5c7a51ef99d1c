"""Invoices (purchase automation, PLATFORM.md): one call = one invoice, inside the
caller's transaction.

The definition's ``purchase_automation`` decides what an invoice does, by its type:
an invoice of one of ``invoice_types`` creates a purchase through
``events.record_event`` (the path of every purchase, so its checks, offers and awards
are a purchase's); a credit note of one of ``credit_note_types`` returns its lines on
the purchase of the invoice it credits through ``money.returns.return_products``
(awards reversed in proportion); any other type is only stored. A refusal of either
path comes back as that path's problem, its field paths turned into the invoice's
(``/products/0/net_amount`` -> ``/lines/0/unit_price``, ``/performed_on`` ->
``/issued_on``).

(``invoice_type``, ``number``) is the idempotency key. The invoice row is inserted
first, before anything is read (``INSERT ... ON CONFLICT DO NOTHING``), so that of two
concurrent twins one writes and the other waits for it (PostgreSQL: on the unique
index; SQLite: on the write lock) and then answers the winner's invoice: 200 for the
same body, 409 for another. What the invoice made is filled into its row before the
transaction commits; the row never changes afterwards.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, cast

import msgspec
from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, col

from rewards.db.ids import time_ordered_id
from rewards.db.tables import Invoice
from rewards.db.types import table_of
from rewards.domain.money import decimal_text
from rewards.errors import (
    AmbiguousCreditedInvoice,
    CreditedInvoiceNotFound,
    CreditsInvoiceRequired,
    DomainError,
    FieldError,
    InvoiceConflict,
    InvoiceNotFound,
)
from rewards.intake import events, terminals
from rewards.intake.identify import consume_otp, identify
from rewards.money import returns
from rewards.runtime.context import Runtime
from rewards.wire import (
    InvoiceIn,
    InvoiceLineOut,
    InvoiceOut,
    InvoiceProcessing,
    ProductLineIn,
    PurchaseIn,
    ReturnedLineOut,
    ReturnIn,
    ReturnLineIn,
    ReversalOut,
)

#: ``external_system`` of the purchases invoices make; ``external_reference`` is
#: ``<invoice_type>/<number>`` (a type has no "/", so the pair reads back unambiguously).
EXTERNAL_SYSTEM = "invoice"
_encoder = msgspec.json.Encoder(decimal_format="string")


@dataclass(frozen=True)
class RecordedInvoice:
    invoice: InvoiceOut
    created: bool  # False: an idempotent replay of an earlier request


def request_hash(body: InvoiceIn) -> str:
    return hashlib.sha256(b"invoice\0" + _encoder.encode(body)).hexdigest()


def processing(runtime: Runtime, invoice_type: str) -> InvoiceProcessing:
    """What the serving definition makes of an invoice of this type."""
    automation = runtime.rulesets.definition.purchase_automation
    if invoice_type in automation.invoice_types:
        return "purchase"
    if invoice_type in automation.credit_note_types:
        return "credit_note"
    return "stored"


# ---- recording ------------------------------------------------------------------------


def record_invoice(session: Session, runtime: Runtime, body: InvoiceIn) -> RecordedInvoice:
    """Record one invoice and what its type makes of it (201), or answer the invoice of
    the same type and number recorded earlier (200; 409 when the body differs)."""
    digest = request_hash(body)
    if body.performed_by_terminal is not None:  # stored, and purchased, at its unit
        unit = terminals.unit_of_terminal(runtime.rulesets, body.performed_by_terminal)
        body = msgspec.structs.replace(body, performed_by_unit=unit)
    processed_as = processing(runtime, body.invoice_type)
    invoice_id = _claim(session, runtime, body, digest, processed_as)
    if invoice_id is None:  # recorded earlier (or by a concurrent twin that committed first)
        return RecordedInvoice(invoice=_replay(session, body, digest), created=False)
    made: dict[str, Any]
    if processed_as == "purchase":
        made = _make_purchase(session, runtime, body)
    elif processed_as == "credit_note":
        made = _credit(session, runtime, body)
    else:
        _check_issued_on(runtime, body)
        made = {"contact_id": _contact_id(session, runtime, body)}
    session.execute(update(Invoice).where(col(Invoice.id) == invoice_id).values(**made))
    return RecordedInvoice(invoice=_render(_invoice(session, invoice_id)), created=True)


def _claim(
    session: Session,
    runtime: Runtime,
    body: InvoiceIn,
    digest: str,
    processed_as: InvoiceProcessing,
) -> str | None:
    """INSERT the invoice row; its id, or None when (type, number) is already taken."""
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    invoices = table_of(Invoice)
    statement = (
        dialect.insert(invoices)
        .values(
            id=time_ordered_id(),
            invoice_type=body.invoice_type,
            number=body.number,
            processed_as=processed_as,
            request_hash=digest,
            contact_id=None,  # filled in once identified, before the commit
            issued_on=body.issued_on,
            performed_by_unit=body.performed_by_unit,
            currency=body.currency,
            lines=[
                {
                    "sku": line.sku,
                    "quantity": decimal_text(line.quantity),
                    "unit_price": decimal_text(line.unit_price),
                    "vat_amount": decimal_text(line.vat_amount),
                }
                for line in body.lines
            ],
            description=body.description,
            credits_invoice=body.credits_invoice,
            credits_invoice_type=body.credits_invoice_type,
            created_at=runtime.now(),
        )
        .on_conflict_do_nothing(index_elements=["number", "invoice_type"])
        .returning(invoices.c.id)
    )
    written: str | None = session.execute(statement).scalar()
    return written


def _replay(session: Session, body: InvoiceIn, digest: str) -> InvoiceOut:
    existing = session.scalars(
        select(Invoice).where(
            col(Invoice.number) == body.number, col(Invoice.invoice_type) == body.invoice_type
        )
    ).one()
    if existing.request_hash != digest:
        raise InvoiceConflict(
            f"Invoice {body.invoice_type}/{body.number} was recorded as {existing.id} with a "
            "different body.",
            errors=[
                FieldError(
                    path="/number", message="already used for this invoice_type with another body"
                )
            ],
        )
    return _render(existing)


def _check_issued_on(runtime: Runtime, body: InvoiceIn) -> None:
    """The business-time bounds of events, for the invoices that make no purchase (a
    purchase's own check covers the others)."""
    events.check_performed_on(body.issued_on, runtime.now(), "/issued_on")


def _contact_id(session: Session, runtime: Runtime, body: InvoiceIn) -> str:
    """The invoice's contact (an OTP that names it is used up, as on an event)."""
    identified = identify(session, runtime, body.contact, "/contact")
    consume_otp(session, identified, "/contact", runtime.now())
    return identified.contact.id


# ---- an invoice that makes a purchase -------------------------------------------------


def purchase_of(body: InvoiceIn) -> PurchaseIn:
    """The purchase an invoice of one of ``invoice_types`` makes."""
    return PurchaseIn(
        contact=body.contact,
        performed_on=body.issued_on,
        performed_by_unit=body.performed_by_unit,
        description=body.description,
        external_system=EXTERNAL_SYSTEM,
        external_reference=f"{body.invoice_type}/{body.number}",
        reference_number=body.number,
        currency=body.currency,
        products=[
            ProductLineIn(
                sku=line.sku,
                quantity=line.quantity,
                net_amount=line.unit_price,
                vat_amount=line.vat_amount,
            )
            for line in body.lines
        ],
    )


def _make_purchase(session: Session, runtime: Runtime, body: InvoiceIn) -> dict[str, Any]:
    try:
        recorded = events.record_event(session, runtime, "purchase", purchase_of(body))
    except DomainError as error:
        raise _on_invoice(error) from None
    if not recorded.created:
        # Only a purchase posted to /v1/events/purchases under the invoices' external
        # reference can be there before its invoice: it was not made by this invoice.
        raise InvoiceConflict(
            f"Purchase {recorded.event.id} already carries the external reference "
            f"{EXTERNAL_SYSTEM} {body.invoice_type}/{body.number}: it was not made by an invoice.",
            errors=[FieldError(path="/number", message="already used by a purchase event")],
        )
    return {"contact_id": recorded.event.contact_id, "purchase_event_id": recorded.event.id}


# Purchase body field -> invoice body field, for the paths of a refusal.
_TOP_FIELDS = {
    "performed_on": "issued_on",
    "reference_number": "number",
    "external_reference": "number",
    "external_system": "number",
    "products": "lines",
}
_LINE_FIELDS = {"net_amount": "unit_price"}
_INVOICE_FIELDS = frozenset(InvoiceIn.__struct_fields__)


def invoice_path(path: str, *, fallback: str = "") -> str:
    """A purchase (or return) body's JSON Pointer as the invoice's: products are the
    lines, a line's net amount its unit price, ``performed_on`` the ``issued_on``. A
    field the invoice does not have (a total it never sends) points at ``fallback``."""
    parts = path.split("/")
    if len(parts) < 2 or not parts[1]:
        return fallback or path
    parts[1] = _TOP_FIELDS.get(parts[1], parts[1])
    if parts[1] == "lines" and len(parts) >= 4:
        parts[3] = _LINE_FIELDS.get(parts[3], parts[3])
        if parts[3] not in ("sku", "quantity", "unit_price", "vat_amount"):
            del parts[3:]
    if parts[1] not in _INVOICE_FIELDS:
        return fallback
    return "/".join(parts)


_PERFORMED_ON = re.compile(r"\bperformed_on\b")  # the one field name refusals word


def _on_invoice(error: DomainError, *, fallback: str = "") -> DomainError:
    """The same refusal (class, status, code), its paths and wording the invoice's."""
    moved = [
        (found.path, invoice_path(found.path, fallback=fallback)) for found in error.errors or []
    ]
    detail = error.detail
    for before, after in moved:
        if before and after:
            detail = detail.replace(before, after)
    error.detail = _PERFORMED_ON.sub("issued_on", detail)
    if moved:
        error.errors = [
            FieldError(path=after, message=found.message)
            for (_, after), found in zip(moved, error.errors or [], strict=True)
        ]
    elif fallback:
        error.errors = [FieldError(path=fallback, message=error.title)]
    return error


# ---- a credit note --------------------------------------------------------------------


def _credit(session: Session, runtime: Runtime, body: InvoiceIn) -> dict[str, Any]:
    """Return the credit note's lines (sku, quantity) on the credited invoice's purchase."""
    if body.credits_invoice is None:
        raise CreditsInvoiceRequired(
            f"An invoice of type {body.invoice_type!r} is a credit note: name the invoice it "
            "credits in credits_invoice.",
            errors=[FieldError(path="/credits_invoice", message="required for a credit note")],
        )
    _check_issued_on(runtime, body)
    contact_id = _contact_id(session, runtime, body)
    credited = _credited(session, body, body.credits_invoice, contact_id)
    assert credited.purchase_event_id is not None  # processed_as == "purchase"
    request = ReturnIn(
        products=[ReturnLineIn(sku=line.sku, quantity=line.quantity) for line in body.lines]
    )
    try:
        answer = returns.return_products(session, runtime, credited.purchase_event_id, request)
    except DomainError as error:
        raise _on_invoice(error, fallback="/credits_invoice") from None
    return {
        "contact_id": contact_id,
        "purchase_event_id": credited.purchase_event_id,
        "credited_invoice_id": credited.id,
        "outcome": {
            "returned": msgspec.to_builtins(answer.products),
            "reversals": msgspec.to_builtins(answer.reversals),
        },
    }


def _credited(session: Session, body: InvoiceIn, number: str, contact_id: str) -> Invoice:
    """The contact's invoice with that number that made a purchase (of the type named
    by ``credits_invoice_type``, when given)."""
    query = select(Invoice).where(
        col(Invoice.number) == number,
        col(Invoice.processed_as) == "purchase",
        col(Invoice.contact_id) == contact_id,
    )
    if body.credits_invoice_type is not None:
        query = query.where(col(Invoice.invoice_type) == body.credits_invoice_type)
    found = list(session.scalars(query.order_by(col(Invoice.invoice_type))))
    if not found:
        of_type = f" of type {body.credits_invoice_type!r}" if body.credits_invoice_type else ""
        raise CreditedInvoiceNotFound(
            f"No invoice {number!r}{of_type} of this contact made a purchase.",
            errors=[
                FieldError(
                    path="/credits_invoice",
                    message="no invoice of this contact with this number made a purchase",
                )
            ],
        )
    if len(found) > 1:
        types = ", ".join(invoice.invoice_type for invoice in found)
        raise AmbiguousCreditedInvoice(
            f"Invoices of types {types} carry the number {number!r}: name one in "
            "credits_invoice_type.",
            errors=[FieldError(path="/credits_invoice_type", message=f"one of {types}")],
        )
    return found[0]


# ---- reading --------------------------------------------------------------------------


def _invoice(session: Session, invoice_id: str) -> Invoice:
    invoice = session.scalars(select(Invoice).where(col(Invoice.id) == invoice_id)).first()
    if invoice is None:
        raise InvoiceNotFound(f"No invoice with id {invoice_id!r}.")
    return invoice


def get_invoice(session: Session, invoice_id: str) -> InvoiceOut:
    return _render(_invoice(session, invoice_id))


def _render(invoice: Invoice) -> InvoiceOut:
    outcome = invoice.outcome or {}
    returned = outcome.get("returned")
    reversals = outcome.get("reversals")
    assert invoice.contact_id is not None  # set in the transaction that wrote the row
    return InvoiceOut(
        id=invoice.id,
        invoice_type=invoice.invoice_type,
        number=invoice.number,
        processed_as=cast("InvoiceProcessing", invoice.processed_as),
        contact_id=invoice.contact_id,
        issued_on=invoice.issued_on,
        performed_by_unit=invoice.performed_by_unit,
        currency=invoice.currency,
        lines=[
            InvoiceLineOut(
                sku=line["sku"],
                quantity=Decimal(line["quantity"]),
                unit_price=Decimal(line["unit_price"]),
                vat_amount=Decimal(line["vat_amount"]),
            )
            for line in invoice.lines
        ],
        description=invoice.description,
        credits_invoice=invoice.credits_invoice,
        credits_invoice_type=invoice.credits_invoice_type,
        purchase_event_id=invoice.purchase_event_id,
        credited_invoice_id=invoice.credited_invoice_id,
        returned=None
        if returned is None
        else msgspec.convert(returned, list[ReturnedLineOut], strict=False),
        reversals=None
        if reversals is None
        else msgspec.convert(reversals, list[ReversalOut], strict=False),
        created_at=invoice.created_at,
    )
