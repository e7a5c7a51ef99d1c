"""Event forms: one HTML form per event type, turned into the JSON body the API takes.

A form field is named by its place in the body, with dots for the JSON Pointer's
slashes (``performed_on``, ``payment_medium.brand``, ``products.0.quantity``), so a
refusal's ``/products/0/quantity`` is put beside the field it names. The body is checked
by the API's schema registry (``runtime.schemas``) and recorded by the API's intake
writer; the console adds no rule of its own. Lines left entirely empty are dropped
(their positions are remembered, so errors still land on the row typed in).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

import msgspec
from litestar.di import NamedDependency
from litestar.params import SkipValidation

from rewards.console.pages import ConsoleRequest, read_form_lists
from rewards.engine import Rulesets
from rewards.errors import DomainError, FieldError
from rewards.schemas import SchemaRegistry, check_shape
from rewards.wire import EVENT_BODIES, EventIn

Kind = Literal["text", "number", "bool", "identifier"]
IDENTIFIER_KINDS = (
    ("contact_id", "Contact id"),
    ("contact_code", "Contact code"),
    ("wallet_code", "Wallet code"),
    ("cim", "CIM"),
    ("gift_card", "Gift card"),
    ("payment_card", "Payment card token"),
)
TYPE_LABELS = {
    "purchase": "Purchase",
    "referral": "Referral",
    "achievement": "Achievement",
    "financial_achievement": "Financial achievement",
    "financial_statement": "Financial statement",
    "social_media": "Social media",
    "web": "Web visit",
    "spend_request": "Spend request",
}
SIMULATED_TYPES = [t for t in TYPE_LABELS if t != "spend_request"]  # simulation.json's enum


class Field(msgspec.Struct, frozen=True, kw_only=True):
    """One input: ``name`` is its dotted place in the body (in a line: in the line)."""

    name: str
    label: str
    kind: Kind = "text"
    hint: str = ""
    required: bool = False
    suggestions: str = ""  # the id of a <datalist> the page renders (units, classifications)


class Lines(msgspec.Struct, frozen=True, kw_only=True):
    """A repeated group: the body's list ``name`` of objects with ``fields``."""

    name: str
    label: str
    fields: tuple[Field, ...]
    rows: int = 3


class EventForm(msgspec.Struct, frozen=True, kw_only=True):
    type: str
    label: str
    fields: tuple[Field, ...]
    lines: Lines | None = None
    after: tuple[Field, ...] = ()  # fields shown after the lines

    def names(self, rows: int) -> list[str]:
        """Every form field name of this form with ``rows`` lines."""
        names = [f.name for f in (*self.fields, *self.after)]
        if self.lines is not None:
            names += [
                f"{self.lines.name}.{i}.{f.name}" for i in range(rows) for f in self.lines.fields
            ]
        return names

    def for_simulation(self) -> EventForm:
        """Without what a simulation ignores (idempotency, processing, spending); the
        receipt number is optional there."""

        def keep(fields: tuple[Field, ...]) -> tuple[Field, ...]:
            return tuple(
                msgspec.structs.replace(f, required=False) if f.name == "reference_number" else f
                for f in fields
                if f.name not in _NOT_SIMULATED
            )

        return msgspec.structs.replace(self, fields=keep(self.fields), after=keep(self.after))

    def labels(self, rows: int) -> dict[str, str]:
        """Form field name -> the label a person reads (for the refusal summary)."""
        labels = {f.name: f.label for f in (*self.fields, *self.after)}
        labels |= {f"{f.name}.value": f.label for f in self.fields if f.kind == "identifier"}
        if self.lines is not None:
            labels |= {
                f"{self.lines.name}.{i}.{f.name}": f"{f.label} (line {i + 1})"
                for i in range(rows)
                for f in self.lines.fields
            }
        return labels


_NOT_SIMULATED = {"external_system", "external_reference", "process_immediately", "spend.amount"}
_PERFORMED_ON = Field(
    name="performed_on",
    label="Performed on",
    required=True,
    hint="RFC 3339 with a zone, e.g. 2026-12-05T14:30:00+02:00",
)
_UNIT = Field(name="performed_by_unit", label="Unit", suggestions="units")
_COMMON_END = (
    Field(name="description", label="Description"),
    Field(name="external_system", label="External system"),
    Field(
        name="external_reference",
        label="External reference",
        hint="Same reference again: the original event",
    ),
    Field(name="process_immediately", label="Process immediately (batch offers too)", kind="bool"),
)


def _classification(required: bool = False) -> Field:
    return Field(
        name="classification",
        label="Classification",
        required=required,
        suggestions="classifications",
    )


def _medium() -> tuple[Field, ...]:
    return (
        Field(name="payment_medium.brand", label="Payment brand", hint="e.g. visa"),
        Field(name="payment_medium.type", label="Payment type", hint="e.g. credit"),
        Field(name="payment_medium.identifier", label="Payment identifier"),
    )


FORMS: dict[str, EventForm] = {
    form.type: form
    for form in (
        EventForm(
            type="purchase",
            label="Purchase",
            fields=(
                _PERFORMED_ON,
                _UNIT,
                Field(name="performed_by_terminal", label="Terminal", hint="Instead of a unit"),
                Field(name="reference_number", label="Receipt number", required=True),
                _classification(),
                Field(name="currency", label="Currency", hint="Default: the scheme's"),
            ),
            lines=Lines(
                name="products",
                label="Products",
                fields=(
                    Field(name="sku", label="SKU", required=True),
                    Field(name="quantity", label="Quantity", kind="number", hint="Default 1"),
                    Field(name="net_amount", label="Net amount", kind="number", required=True),
                    Field(name="vat_amount", label="VAT", kind="number"),
                ),
            ),
            after=(
                *_medium(),
                Field(name="spend.amount", label="Spend from wallet", kind="number"),
                *_COMMON_END,
            ),
        ),
        EventForm(
            type="referral",
            label="Referral",
            fields=(
                _PERFORMED_ON,
                Field(name="referred", label="Referred contact", kind="identifier", required=True),
                _classification(),
                _UNIT,
            ),
            after=_COMMON_END,
        ),
        EventForm(
            type="achievement",
            label="Achievement",
            fields=(_PERFORMED_ON, _classification(required=True), _UNIT),
            after=_COMMON_END,
        ),
        EventForm(
            type="financial_achievement",
            label="Financial achievement",
            fields=(
                _PERFORMED_ON,
                _classification(required=True),
                Field(name="amount", label="Amount", kind="number", required=True),
                Field(name="product", label="Product"),
                _UNIT,
                *_medium(),
            ),
            after=_COMMON_END,
        ),
        EventForm(
            type="financial_statement",
            label="Financial statement",
            fields=(
                _PERFORMED_ON,
                _classification(required=True),
                Field(name="period", label="Period", required=True, hint="YYYY-MM"),
                _UNIT,
            ),
            lines=Lines(
                name="kpis",
                label="KPIs",
                fields=(
                    Field(name="kpi", label="KPI", required=True, suggestions="kpis"),
                    Field(name="product", label="Product"),
                    Field(name="value", label="Value", kind="number", required=True),
                ),
                rows=2,
            ),
            after=_COMMON_END,
        ),
        EventForm(
            type="social_media",
            label="Social media",
            fields=(
                _PERFORMED_ON,
                Field(name="platform", label="Platform", required=True),
                Field(name="action", label="Action", required=True, hint="e.g. like, share"),
                Field(name="profile", label="Profile"),
                _classification(),
                _UNIT,
            ),
            after=_COMMON_END,
        ),
        EventForm(
            type="web",
            label="Web visit",
            fields=(
                _PERFORMED_ON,
                Field(name="website", label="Website", required=True, hint="https://..."),
                _classification(),
                _UNIT,
            ),
            after=_COMMON_END,
        ),
        EventForm(
            type="spend_request",
            label="Spend request",
            fields=(
                _PERFORMED_ON,
                Field(name="purchase_event_id", label="Purchase event id", required=True),
                Field(
                    name="requested_amount",
                    label="Requested amount",
                    kind="number",
                    hint="Default: all that can be spent",
                ),
            ),
            after=_COMMON_END,
        ),
    )
}
assert set(FORMS) == set(EVENT_BODIES)


# ---- reading a posted form -----------------------------------------------------------


class FormInput(msgspec.Struct, frozen=True, kw_only=True):
    """What was typed into an event form: every value as typed (kept on refusal)."""

    values: dict[str, str]
    rows: int  # lines shown


class Built(msgspec.Struct, frozen=True, kw_only=True):
    """A form turned into a JSON value, and where each body line came from."""

    body: dict[str, Any]
    line_rows: list[int]  # body line index -> form row


def _lines_count(form: EventForm, posted: Mapping[str, list[str]], add_line: bool) -> int:
    if form.lines is None:
        return 0
    prefix = re.compile(rf"^{form.lines.name}\.(\d+)\.")
    seen = [int(m.group(1)) for name in posted if (m := prefix.match(name))]
    rows = max([form.lines.rows - 1, *seen]) + 1
    return min(rows + (1 if add_line else 0), 200)


def read_input(
    form: EventForm, posted: Mapping[str, list[str]], *, add_line: bool = False
) -> FormInput:
    rows = _lines_count(form, posted, add_line)
    values: dict[str, str] = {}
    for name in form.names(rows):
        for key in (name, f"{name}.kind", f"{name}.value"):
            if posted.get(key):
                values[key] = posted[key][-1].strip()
    return FormInput(values=values, rows=rows)


def _typed(kind: Kind, text: str) -> Any:
    """A number stays a number (so the schema words its problem as for a JSON number);
    what does not read as one is passed as typed (the schema says what it is not)."""
    if kind == "number":
        try:
            number = Decimal(text)
        except InvalidOperation:
            return text
        return number if number.is_finite() else text
    return text


def _put(target: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    for part in parents:
        target = target.setdefault(part, {})
    target[last] = value


def build_body(form: EventForm, given: FormInput, fixed: Mapping[str, Any] | None = None) -> Built:
    """The JSON value the API would receive for this form (``fixed``: parts the page
    sets itself, such as the contact)."""
    body: dict[str, Any] = {}
    for field in (*form.fields, *form.after):
        if field.kind == "identifier":
            kind = given.values.get(f"{field.name}.kind", "")
            value = given.values.get(f"{field.name}.value", "")
            if value:
                body[field.name] = {kind or "contact_id": value}
            continue
        text = given.values.get(field.name, "")
        if field.kind == "bool":
            if text:
                _put(body, field.name, True)
        elif text:
            _put(body, field.name, _typed(field.kind, text))
    line_rows: list[int] = []
    if form.lines is not None:
        lines = []
        for row in range(given.rows):
            line = {
                f.name: _typed(f.kind, text)
                for f in form.lines.fields
                if (text := given.values.get(f"{form.lines.name}.{row}.{f.name}", ""))
            }
            if line:
                lines.append(line)
                line_rows.append(row)
        body[form.lines.name] = lines
    body.update(fixed or {})
    check_shape(body)  # integral numbers as integers, as a JSON body would have them
    return Built(body=body, line_rows=line_rows)


def to_event(schemas: SchemaRegistry, event_type: str, built: Built) -> EventIn:
    """The body checked and decoded as ``POST /v1/events/<type>`` does (raises the same
    ``ValidationFailed``)."""
    return schemas.convert(f"events/{event_type}", built.body, EVENT_BODIES[event_type])


# ---- refusals beside their fields ----------------------------------------------------


class Problems(msgspec.Struct, frozen=True, kw_only=True):
    """A refusal laid out on a form: messages per field name, the rest in a summary."""

    fields: dict[str, str] = {}
    summary: list[str] = []
    title: str = ""
    labels: dict[str, str] = {}  # field name -> label, for the summary's links


def _field_of(form: EventForm, built: Built, parts: list[str], known: set[str]) -> str | None:
    if form.lines is not None and len(parts) >= 2 and parts[0] == form.lines.name:
        if parts[1].isdigit() and int(parts[1]) < len(built.line_rows):
            parts = [parts[0], str(built.line_rows[int(parts[1])]), *parts[2:]]
    for end in range(len(parts), 0, -1):
        name = ".".join(parts[:end])
        if f"{name}.value" in known:  # an identifier: kind + value
            return f"{name}.value"
        if name in known:
            return name
    return None


def problems(
    error: DomainError,
    form: EventForm,
    built: Built,
    rows: int,
    *,
    under: str = "",
    others: Mapping[str, str] | None = None,
) -> Problems:
    """Each of the refusal's ``errors[].path`` put on the field it points at (``under``:
    the prefix of the form's body in the request, ``/event`` for simulations;
    ``others``: form fields outside the event, name -> label). A path that names no field, and a
    refusal without paths, go in the summary with the field's pointer."""
    others = others or {}
    known = {*form.names(rows), *others}
    known |= {f"{f.name}.value" for f in (*form.fields, *form.after) if f.kind == "identifier"}
    fields: dict[str, str] = {}
    summary: list[str] = []
    for item in error.errors or [FieldError(path="", message=error.detail)]:
        path = item.path
        name = None
        if under and path.startswith(f"{under}/"):
            name = _field_of(form, built, path[len(under) + 1 :].split("/"), known)
        elif path.startswith("/"):
            inside = path[1:].split("/")
            name = (
                _field_of(form, built, inside, known)
                if not under
                else next((o for o in others if o == inside[0]), None)
            )
        if name is None:
            summary.append(f"{path}: {item.message}" if path else item.message)
        elif name in fields:
            fields[name] = f"{fields[name]}; {item.message}"
        else:
            fields[name] = item.message
    return Problems(
        fields=fields,
        summary=summary,
        title=f"{error.title}: {error.detail}",
        labels={**form.labels(rows), **others},
    )


# ---- what the page shows -------------------------------------------------------------


class Choices(msgspec.Struct, frozen=True, kw_only=True):
    """Suggestions for the form's text fields, from the loaded definition."""

    units: list[str]
    classifications: list[str]
    kpis: list[str]
    segments: list[str]
    currency: str
    identifier_kinds: tuple[tuple[str, str], ...] = IDENTIFIER_KINDS


def choices(rulesets: Rulesets, event_type: str) -> Choices:
    definition = rulesets.definition
    return Choices(
        units=[unit.code for unit in definition.units],
        classifications=[c.code for c in definition.event_classifications if event_type in c.types],
        kpis=[kpi.code for kpi in definition.kpis],
        segments=[s.code for s in definition.segments.codes] if definition.segments else [],
        currency=definition.currency,
    )


def blank_input(form: EventForm, rulesets: Rulesets, now: datetime) -> FormInput:
    """A fresh form: performed now (business time zone), the first unit of the scheme
    for a purchase, the console as external system."""
    values = {"performed_on": now.astimezone(rulesets.time_zone).isoformat(timespec="seconds")}
    if "external_system" in form.names(0):
        values["external_system"] = "console"
    return FormInput(values=values, rows=form.lines.rows if form.lines else 0)


def form_for(event_type: str | None, allowed: Iterable[str]) -> EventForm:
    """The form of ``event_type``; an unknown or missing type: the first allowed one."""
    allowed = list(allowed)
    return FORMS[event_type if event_type in allowed else allowed[0]]


async def provide_form(request: ConsoleRequest) -> dict[str, list[str]]:
    return await read_form_lists(request)


# A posted form as a dependency, so sync handlers (database work) can read it too.
FormDep = NamedDependency[SkipValidation[dict[str, list[str]]]]
