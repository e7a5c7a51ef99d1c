"""``/console/simulate``: an event form and the contact context (a contact's segments,
or segments ticked by hand, and prior awards) evaluated as ``POST /v1/simulations``
does: the awards, every offer's why-not and the simulation's warnings. Nothing is
written; analysts may use it."""

from __future__ import annotations

import re
from typing import Annotated, Any

import msgspec
from litestar import get, post
from litestar.di import Provide
from litestar.params import QueryParameter
from litestar.response import Template

from rewards.analyst import simulation
from rewards.analyst.simulation import SimulationIn, SimulationOut
from rewards.console import event_forms
from rewards.console.event_forms import SIMULATED_TYPES, TYPE_LABELS, Built, FormDep, Problems
from rewards.console.pages import ConsoleRequest, RuntimeDep, SessionDep, page
from rewards.errors import DomainError, ValidationFailed
from rewards.intake import contacts
from rewards.runtime.context import Runtime

CONTEXT_FIELDS = {
    "contact_id": "Contact id",
    "segments": "Segments",
    "prior_awards": "Prior awards",
}
_PAIR = re.compile(r"^\s*([^=:\s]+)\s*[=:]\s*(\d+)\s*$")


class Context(msgspec.Struct, kw_only=True):
    """The simulation's contact context as typed."""

    contact_id: str = ""
    segments: list[str] = []  # ticked
    other_segments: str = ""  # typed, comma separated
    prior_awards: str = ""  # a count for every offer, or offer-id=count, ...


def _prior_awards(text: str) -> int | dict[str, int] | None:
    if not text:
        return None
    if text.isdigit():
        return int(text)
    pairs = [_PAIR.match(part) for part in text.split(",") if part.strip()]
    if not pairs or not all(pairs):
        raise ValidationFailed.at(
            "/prior_awards", "a count for every offer, or offer-id=count pairs separated by commas"
        )
    return {m.group(1): int(m.group(2)) for m in pairs if m}


def _request(
    session: Any, runtime: Runtime, event_type: str, built: Built, context: Context
) -> tuple[SimulationIn, list[str]]:
    """The simulation body; the segments used (the contact's, then the ticked and typed)."""
    segments: list[str] = []
    if context.contact_id:
        try:
            contact = contacts.get_contact(session, runtime, context.contact_id)
        except DomainError as error:
            raise ValidationFailed.at("/contact_id", error.detail) from None
        segments += contact.segments
    typed = [s.strip() for s in context.other_segments.split(",") if s.strip()]
    for segment in [*context.segments, *typed]:
        if segment not in segments:
            segments.append(segment)
    instance: dict[str, Any] = {"type": event_type, "event": built.body, "segments": segments}
    if (prior := _prior_awards(context.prior_awards)) is not None:
        instance["prior_awards"] = prior
    return runtime.schemas.convert(simulation.SCHEMA, instance, SimulationIn), segments


def _page(
    request: ConsoleRequest,
    runtime: Runtime,
    form: event_forms.EventForm,
    given: event_forms.FormInput,
    context: Context,
    *,
    problems: Problems | None = None,
    answer: SimulationOut | None = None,
    segments_used: list[str] | None = None,
    status_code: int = 200,
) -> Template:
    return page(
        request,
        "simulate.html",
        status_code=status_code,
        title="Simulate",
        form=form,
        given=given,
        context=context,
        problems=problems or Problems(),
        answer=answer,
        segments_used=segments_used or [],
        types=[(t, TYPE_LABELS[t]) for t in SIMULATED_TYPES],
        choices=event_forms.choices(runtime.rulesets, form.type),
    )


def handlers() -> list[Any]:
    @get("/simulate", name="console_simulate")
    async def simulate_form(
        request: ConsoleRequest,
        runtime: RuntimeDep,
        event_type: Annotated[str | None, QueryParameter(name="type")] = None,
    ) -> Template:
        form = event_forms.form_for(event_type, SIMULATED_TYPES).for_simulation()
        given = event_forms.blank_input(form, runtime.rulesets, runtime.now())
        return _page(request, runtime, form, given, Context())

    @post(
        "/simulate",
        dependencies={"posted": Provide(event_forms.provide_form)},
        status_code=200,
        sync_to_thread=True,
    )
    def simulate(
        request: ConsoleRequest, posted: FormDep, session: SessionDep, runtime: RuntimeDep
    ) -> Template:
        chosen = (posted.get("type") or [""])[-1]
        form = event_forms.form_for(chosen, SIMULATED_TYPES).for_simulation()
        add_line = (posted.get("action") or [""])[-1] == "add-line"
        given = event_forms.read_input(form, posted, add_line=add_line)
        context = Context(
            contact_id=(posted.get("contact_id") or [""])[-1].strip(),
            segments=[s for s in posted.get("segments", []) if s],
            other_segments=(posted.get("other_segments") or [""])[-1],
            prior_awards=(posted.get("prior_awards") or [""])[-1].strip(),
        )
        if add_line:
            return _page(request, runtime, form, given, context)
        built = Built(body={}, line_rows=[])
        try:
            built = event_forms.build_body(form, given)
            item, segments = _request(session, runtime, form.type, built, context)
            answer = simulation.simulate_request(runtime, item, session)
        except DomainError as error:
            problems = event_forms.problems(
                error, form, built, given.rows, under="/event", others=CONTEXT_FIELDS
            )
            return _page(
                request, runtime, form, given, context, problems=problems, status_code=error.status
            )
        return _page(request, runtime, form, given, context, answer=answer, segments_used=segments)

    return [simulate_form, simulate]
