"""Events in the console: the list with the API's filters, one event with the why-not of
every offer, and recording an event by hand for a contact (admins)."""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Annotated, Any
from urllib.parse import urlencode

import msgspec
from litestar import get, post
from litestar.params import PathParameter, QueryParameter
from litestar.response import Redirect, Template

from rewards.analyst import simulation
from rewards.console import event_forms
from rewards.console.event_forms import TYPE_LABELS, Built, FormInput, Problems
from rewards.console.pages import (
    ConsoleRequest,
    RuntimeDep,
    SessionDep,
    flash,
    page,
    read_form_lists,
)
from rewards.errors import DomainError, FieldError
from rewards.intake import contacts, events
from rewards.intake.group_commit import GroupCommit
from rewards.money import wallets
from rewards.runtime.context import Runtime

PAGE_SIZE = 25
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
Query = Annotated[str | None, QueryParameter(name="type")]
EventId = Annotated[str, PathParameter()]
ContactId = Annotated[str, PathParameter()]


class ListFilters(msgspec.Struct, kw_only=True):
    """The events list's GET form, as typed."""

    type: str = ""
    contact_id: str = ""
    state: str = ""
    performed_from: str = ""
    performed_to: str = ""
    merchant_id: str = ""

    def query(self, **extra: str) -> str:
        given = {k: v for k, v in msgspec.structs.asdict(self).items() if v}
        return urlencode({**given, **extra})


def _bound(runtime: Runtime, name: str, text: str) -> str | None:
    """A date alone is midnight of that day in the scheme's time zone; anything else is
    passed on as typed (the API's parser words its problem)."""
    if not text:
        return None
    if _DATE.match(text):
        try:
            day = date.fromisoformat(text)
        except ValueError:
            raise events.InvalidParameter(
                f"{name}: not a date", errors=[FieldError(path=name, message="not a date")]
            ) from None
        return datetime(day.year, day.month, day.day, tzinfo=runtime.rulesets.time_zone).isoformat()
    return text


def _filter(runtime: Runtime, filters: ListFilters) -> events.EventFilter:
    errors = []
    if filters.type and filters.type not in TYPE_LABELS:
        errors.append(FieldError(path="type", message="not an event type"))
    if filters.state and filters.state not in ("posted", "cancelled"):
        errors.append(FieldError(path="state", message="posted or cancelled"))
    if filters.contact_id and not _UUID.match(filters.contact_id):
        errors.append(FieldError(path="contact_id", message="not a contact id (a UUID)"))
    if errors:
        raise events.InvalidParameter("Invalid filters", errors=errors)
    return events.EventFilter(
        filters.type or None,
        filters.contact_id or None,
        filters.state or None,
        _bound(runtime, "performed_from", filters.performed_from),
        _bound(runtime, "performed_to", filters.performed_to),
        filters.merchant_id or None,
    )


class NewEventPage(msgspec.Struct, kw_only=True):
    """What the manual event page shows."""

    contact_id: str
    contact_label: str
    form: event_forms.EventForm
    given: FormInput
    problems: Problems


def _new_event_page(
    request: ConsoleRequest, runtime: Runtime, view: NewEventPage, status_code: int = 200
) -> Template:
    return page(
        request,
        "event_new.html",
        status_code=status_code,
        title=f"New {view.form.label.lower()} event",
        view=view,
        types=list(TYPE_LABELS.items()),
        choices=event_forms.choices(runtime.rulesets, view.form.type),
    )


def _fixed_contact(event_type: str, contact_id: str) -> dict[str, Any]:
    """The page's contact in the body: the referrer of a referral, else the contact."""
    key = "referred_by" if event_type == "referral" else "contact"
    return {key: {"contact_id": contact_id}}


def handlers() -> list[Any]:
    @get("/events", name="console_events", sync_to_thread=True)
    def list_page(
        request: ConsoleRequest,
        session: SessionDep,
        runtime: RuntimeDep,
        event_type: Query = None,
        contact_id: Annotated[str | None, QueryParameter(name="contact_id")] = None,
        event_state: Annotated[str | None, QueryParameter(name="state")] = None,
        performed_from: Annotated[str | None, QueryParameter(name="performed_from")] = None,
        performed_to: Annotated[str | None, QueryParameter(name="performed_to")] = None,
        merchant_id: Annotated[str | None, QueryParameter(name="merchant_id")] = None,
        cursor: Annotated[str | None, QueryParameter(name="cursor")] = None,
    ) -> Template:
        filters = ListFilters(
            type=(event_type or "").strip(),
            contact_id=(contact_id or "").strip(),
            state=(event_state or "").strip(),
            performed_from=(performed_from or "").strip(),
            performed_to=(performed_to or "").strip(),
            merchant_id=(merchant_id or "").strip(),
        )
        errors: dict[str, str] = {}
        try:
            found = events.list_events(
                session, runtime, _filter(runtime, filters), PAGE_SIZE, cursor or None
            )
        except DomainError as error:
            errors = {e.path: e.message for e in error.errors or []} or {"cursor": error.detail}
            found = None
        definition = runtime.rulesets.definition
        return page(
            request,
            "events.html",
            title="Events",
            filters=filters,
            errors=errors,
            found=found,
            cursor=cursor or "",
            types=list(TYPE_LABELS.items()),
            merchants=[(m.id, m.name) for m in definition.merchants],
        )

    @get("/events/{event_id:str}", name="console_event", sync_to_thread=True)
    def event_page(
        request: ConsoleRequest, event_id: EventId, session: SessionDep, runtime: RuntimeDep
    ) -> Template:
        event = events.get_event(session, runtime, event_id)
        return page(
            request,
            "event.html",
            title=f"{TYPE_LABELS[event.type]} #{event.number}",
            event=event,
            label=TYPE_LABELS[event.type],
            explanation=simulation.explain_event(session, runtime, event_id),
            entries=wallets.entries_of_events(session, [event_id])[event_id],
        )

    @get(
        "/contacts/{contact_id:str}/events/new",
        name="console_new_event",
        opt={"admin_only": True},
        sync_to_thread=True,
    )
    def new_event(
        request: ConsoleRequest,
        contact_id: ContactId,
        session: SessionDep,
        runtime: RuntimeDep,
        event_type: Query = None,
    ) -> Template:
        contact = contacts.get_contact(session, runtime, contact_id)
        form = event_forms.form_for(event_type, TYPE_LABELS)
        label = " · ".join(
            str(part) for part in (contact.name, contact.code, contact.wallet.code) if part
        )
        view = NewEventPage(
            contact_id=contact.id,
            contact_label=label,
            form=form,
            given=event_forms.blank_input(form, runtime.rulesets, runtime.now()),
            problems=Problems(),
        )
        return _new_event_page(request, runtime, view)

    @post("/contacts/{contact_id:str}/events/new", opt={"admin_only": True}, status_code=303)
    async def record_event(
        request: ConsoleRequest, contact_id: ContactId, runtime: RuntimeDep
    ) -> Template | Redirect:
        posted = await read_form_lists(request)
        form = event_forms.form_for((posted.get("type") or [""])[-1], TYPE_LABELS)
        add_line = (posted.get("action") or [""])[-1] == "add-line"
        given = event_forms.read_input(form, posted, add_line=add_line)
        label = (posted.get("contact_label") or [""])[-1]
        view = NewEventPage(
            contact_id=contact_id,
            contact_label=label,
            form=form,
            given=given,
            problems=Problems(),
        )
        if add_line:
            return _new_event_page(request, runtime, view, status_code=200)
        built = Built(body={}, line_rows=[])
        try:
            built = event_forms.build_body(form, given, _fixed_contact(form.type, contact_id))
            body = event_forms.to_event(runtime.schemas, form.type, built)
            intake: GroupCommit = request.app.state.intake
            recorded = await intake.record(form.type, body)
        except DomainError as error:
            view.problems = event_forms.problems(error, form, built, given.rows)
            return _new_event_page(request, runtime, view, status_code=error.status)
        event = recorded.event
        total = sum((award.amount for award in event.awards), start=0)
        if recorded.created:
            flash(
                request,
                f"{form.label} #{event.number} recorded: {len(event.awards)} award(s), "
                f"{total} in total.",
            )
        else:
            flash(
                request,
                f"This external reference was already recorded: {form.label.lower()} "
                f"#{event.number}, unchanged.",
                "warn",
            )
        return Redirect(f"/console/events/{event.id}", status_code=303)

    return [list_page, event_page, new_event, record_event]
