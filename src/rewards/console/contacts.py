"""Contacts: search, a contact's wallet and activity feed, and the feed's actions (void an
event, return a purchase's lines, issue an OTP shown as digits and as a QR code)."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

import msgspec
from litestar import get, post
from litestar.params import PathParameter, QueryParameter
from litestar.response import Redirect, Template
from sqlmodel import Session

from rewards.console.pages import (
    ConsoleRequest,
    RuntimeDep,
    SessionDep,
    flash,
    page,
    read_form,
)
from rewards.errors import DomainError, EventNotFound, FieldError
from rewards.intake import contacts, events
from rewards.money import returns, wallets
from rewards.runtime.context import Runtime
from rewards.runtime.ratelimit import OtpLimits
from rewards.wire import EventOut, OtpRequest, ReturnIn

FEED_PAGE = 20
_JSON = msgspec.json.Encoder(decimal_format="number")
ContactId = Annotated[str, PathParameter()]
EventId = Annotated[str, PathParameter()]
Cursor = Annotated[str | None, QueryParameter(name="cursor", pattern=r"^[A-Za-z0-9_-]*$")]


def _event_of_contact(
    session: Session, runtime: Runtime, contact_id: str, event_id: str
) -> EventOut:
    event = events.get_event(session, runtime, event_id)
    if event.contact_id != contact_id:
        raise EventNotFound(f"No event with id {event_id!r} for this contact.")
    return event


def _return_lines(event: EventOut) -> list[tuple[str, Decimal]]:
    """A purchase's SKUs with the quantity bought (lines of one SKU added up)."""
    bought: dict[str, Decimal] = {}
    for line in event.products or []:
        bought[line.sku] = bought.get(line.sku, Decimal(0)) + line.quantity
    return list(bought.items())


def handlers() -> list[Any]:
    @get("/contacts", name="console_contacts", sync_to_thread=True)
    def search(
        request: ConsoleRequest,
        session: SessionDep,
        q: Annotated[str, QueryParameter(name="q", max_length=200)] = "",
    ) -> Template:
        found = contacts.search_contacts(session, q) if q.strip() else []
        return page(request, "contacts.html", title="Contacts", q=q, found=found)

    @get("/contacts/{contact_id:str}", name="console_contact", sync_to_thread=True)
    def contact(
        request: ConsoleRequest,
        session: SessionDep,
        runtime: RuntimeDep,
        contact_id: ContactId,
        cursor: Cursor = None,
    ) -> Template:
        person = contacts.get_contact(session, runtime, contact_id)
        feed = events.list_events(
            session, runtime, events.EventFilter(contact_id=contact_id), FEED_PAGE, cursor or None
        )
        ledger = wallets.entries_of_events(session, [event.id for event in feed.items])
        return page(
            request,
            "contact.html",
            title=person.name or person.code or "Contact",
            contact=person,
            feed=feed,
            ledger=ledger,
            request_cursor=cursor,
        )

    @get(
        "/contacts/{contact_id:str}/events/{event_id:str}/cancel",
        opt={"admin_only": True},
        sync_to_thread=True,
    )
    def confirm_cancel(
        request: ConsoleRequest,
        session: SessionDep,
        runtime: RuntimeDep,
        contact_id: ContactId,
        event_id: EventId,
    ) -> Template:
        event = _event_of_contact(session, runtime, contact_id, event_id)
        ledger = wallets.entries_of_events(session, [event.id])[event.id]
        return page(request, "cancel.html", title="Void event", event=event, ledger=ledger)

    @post(
        "/contacts/{contact_id:str}/events/{event_id:str}/cancel",
        opt={"admin_only": True},
        status_code=303,
        sync_to_thread=True,
    )
    def cancel(
        request: ConsoleRequest,
        session: SessionDep,
        runtime: RuntimeDep,
        contact_id: ContactId,
        event_id: EventId,
    ) -> Redirect:
        _event_of_contact(session, runtime, contact_id, event_id)
        cancelled = events.cancel_event(session, runtime, event_id)
        reversed_total = sum((r.amount for r in cancelled.reversals), Decimal(0))
        flash(
            request,
            f"Event {cancelled.number} voided: {len(cancelled.reversals)} ledger "
            f"reversal(s), {reversed_total:+.2f} in all; the balance is now "
            f"{cancelled.wallet.balance}.",
        )
        return Redirect(f"/console/contacts/{contact_id}", status_code=303)

    @get(
        "/contacts/{contact_id:str}/events/{event_id:str}/return",
        opt={"admin_only": True},
        sync_to_thread=True,
    )
    def return_form(
        request: ConsoleRequest,
        session: SessionDep,
        runtime: RuntimeDep,
        contact_id: ContactId,
        event_id: EventId,
    ) -> Template:
        event = _event_of_contact(session, runtime, contact_id, event_id)
        return page(
            request,
            "return.html",
            title="Return products",
            event=event,
            lines=_return_lines(event),
            values={},
            errors={},
            summary=None,
        )

    @post(
        "/contacts/{contact_id:str}/events/{event_id:str}/return",
        opt={"admin_only": True},
        status_code=303,
    )
    async def return_lines(
        request: ConsoleRequest, contact_id: ContactId, event_id: EventId
    ) -> Redirect | Template:
        form = await read_form(request)
        state = request.app.state
        runtime: Runtime = state.runtime

        def work(session: Session) -> Any:
            event = _event_of_contact(session, runtime, contact_id, event_id)
            lines = _return_lines(event)
            sent: list[dict[str, Any]] = []
            field_of_line: list[str] = []  # body index -> form field
            errors: dict[str, str] = {}
            for index, (sku, _) in enumerate(lines):
                raw = form.get(f"return-{index}", "").strip()
                if raw in ("", "0"):
                    continue
                try:
                    quantity = Decimal(raw)
                except InvalidOperation:
                    errors[f"return-{index}"] = "must be a number"
                    continue
                sent.append({"sku": sku, "quantity": quantity})
                field_of_line.append(f"return-{index}")
            if not sent and not errors:
                errors[""] = "Enter a quantity to return on at least one line."
            if not errors:
                body: dict[str, Any] = {"products": sent}
                if form.get("description"):
                    body["description"] = form["description"]
                try:
                    # The API's own reading of a return body, then the API's own service.
                    payload = runtime.schemas.decode(
                        "purchase_return", _JSON.encode(body), ReturnIn
                    )
                    return returns.return_products(session, runtime, event_id, payload)
                except DomainError as refused:
                    session.rollback()  # a refusal writes nothing
                    errors = _field_errors(refused, field_of_line)
            return page(
                request,
                "return.html",
                status_code=422,
                title="Return products",
                event=event,
                lines=lines,
                values=form,
                errors=errors,
                summary=errors.get("") or "Nothing was returned; see the fields marked below.",
            )

        with state.database.transaction() as session:
            outcome = work(session)
        if isinstance(outcome, Template):
            return outcome
        total = sum((r.amount for r in outcome.reversals), Decimal(0))
        flash(request, f"Returned {len(outcome.products)} line(s): {total:+.2f} reversed.")
        return Redirect(f"/console/contacts/{contact_id}", status_code=303)

    @post("/contacts/{contact_id:str}/otp", opt={"admin_only": True}, status_code=200)
    async def issue_otp(request: ConsoleRequest, contact_id: ContactId) -> Template:
        state = request.app.state
        limits: OtpLimits = state.otp_limits
        limits.count_issue(contact_id)  # the API's issuing limits count the console too
        with state.database.transaction() as session:
            otp = contacts.issue_otp(session, state.runtime, contact_id, OtpRequest(qr=True))
        return page(request, "otp.html", title="One-time password", otp=otp, contact_id=contact_id)

    return [search, contact, confirm_cancel, cancel, return_form, return_lines, issue_otp]


def _field_errors(refused: DomainError, field_of_line: list[str]) -> dict[str, str]:
    """A refusal's messages by form field: ``/products/<i>/...`` belongs to the i-th line
    sent; anything else goes to the form's summary (key "")."""
    found: dict[str, str] = {}
    for error in refused.errors or [FieldError(path="", message=refused.detail)]:
        parts = error.path.split("/")
        if (
            len(parts) > 2
            and parts[1] == "products"
            and parts[2].isdigit()
            and int(parts[2]) < len(field_of_line)
        ):
            found.setdefault(field_of_line[int(parts[2])], error.message)
        else:
            found.setdefault("", f"{error.path}: {error.message}" if error.path else error.message)
    return found
