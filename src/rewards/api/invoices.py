"""Invoices (purchase automation): post one, read one."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, Response, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import PathParameter, SkipValidation

from rewards.api.bodies import body_provider
from rewards.api.deps import SessionDep
from rewards.api.docs import BODY, problems, request_schema
from rewards.api.responses import JSONResponse
from rewards.db.database import Database
from rewards.intake import invoices
from rewards.intake.identify import otp_identifiers
from rewards.runtime.context import Runtime
from rewards.runtime.ratelimit import OtpLimits
from rewards.wire import InvoiceIn, InvoiceOut

InvoiceId = Annotated[str, PathParameter(description="The invoice's id (UUID).")]
REPLAY = {
    200: ResponseSpec(
        data_container=InvoiceOut,
        description="Idempotent replay: the same invoice_type, number and body; the original invoice",
    )
}


class InvoicesController(Controller):
    path = "/invoices"
    tags = ["invoices"]

    @post(
        "/",
        operation_id="create_invoice",
        summary="Post an invoice: a purchase, a credit note's return, or stored, by its type",
        description=(
            "Body: `schemas/invoice.json`. The definition's `purchase_automation` decides: "
            "an invoice of one of `invoice_types` records a purchase event "
            "(`purchase_event_id`; its awards as any purchase's), a credit note of one of "
            "`credit_note_types` returns its lines on the purchase of the invoice named by "
            "`credits_invoice` (`returned`, `reversals`), any other type is stored "
            "(`purchase_event_id: null`). 201 with the invoice; 200 on an idempotent replay "
            "(same `invoice_type`, `number` and body); 409 `idempotency_conflict` for the "
            "same pair with another body. Refusals of the purchase or return point at the "
            "invoice's fields (`/lines/0/unit_price`, `/issued_on`, ...): 422 "
            "`credits_invoice_required`, `credited_invoice_not_found`, "
            "`return_exceeds_purchase`, `contact_not_found`, ...; 409 "
            "`ambiguous_credited_invoice` (name the type in `credits_invoice_type`), "
            "`event_cancelled` (the credited purchase is cancelled)."
        ),
        dependencies={"payload": Provide(body_provider("invoice", InvoiceIn))},
        opt=request_schema("invoice"),
        responses={**BODY, **problems(409, 429, 503), **REPLAY},
        status_code=201,
        sync_to_thread=True,
    )
    def create(
        self, payload: NamedDependency[SkipValidation[InvoiceIn]], state: State
    ) -> Response[InvoiceOut]:
        # One transaction; an OTP identifying the contact is reserved before it and
        # settled after it (runtime.ratelimit), as for any event.
        runtime: Runtime = state.runtime
        limits: OtpLimits = state.otp_limits
        database: Database = state.database
        with limits.attempts(otp_identifiers(payload)):
            with database.transaction() as session:
                recorded = invoices.record_invoice(session, runtime, payload)
        return JSONResponse(recorded.invoice, status_code=201 if recorded.created else 200)

    @get(
        "/{invoice_id:str}",
        operation_id="get_invoice",
        summary="One invoice, as posted, with what it made",
        responses=problems(404),
        sync_to_thread=True,
    )
    def read(self, invoice_id: InvoiceId, session: SessionDep) -> InvoiceOut:
        return invoices.get_invoice(session, invoice_id)
