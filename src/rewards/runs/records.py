"""The events a run reads (``EventRecord``), straight from SQL rows, and their SQL
filters (pending events, partitions). Their facts come from ``offers.facts``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec
from sqlalchemy import ColumnElement, String, cast, exists, func, literal, select, type_coerce
from sqlmodel import Session

from rewards.db.run_tables import EvaluatedEvent
from rewards.db.tables import Event
from rewards.db.types import table_of
from rewards.offers.evaluation import NOT_EVALUATED

HEX_DIGITS = "0123456789abcdef"

_E = table_of(Event).c
EVENT_COLUMNS = (
    _E.number,
    _E.id,
    _E.type,
    _E.contact_id,
    _E.classification,
    _E.performed_on,
    _E.performed_by_unit,
    _E.evaluated,
    cast(_E.details, String),  # decoded by msgspec (3x faster than the JSON type's json)
)


def event_columns(text_times: bool) -> tuple[Any, ...]:
    """``EVENT_COLUMNS``; with ``text_times`` (SQLite) performed_on as its stored text,
    UTC (parsed by ``utc_text``)."""
    if not text_times:
        return EVENT_COLUMNS
    return (*EVENT_COLUMNS[:5], type_coerce(_E.performed_on, String), *EVENT_COLUMNS[6:])


_details = msgspec.json.Decoder(dict[str, Any])


class EventRecord:
    """The event columns evaluation reads (``build_facts`` takes it for an ``Event``).
    ``details`` is decoded on first use: a purchase's facts come from ``raw`` through
    the typed ``_PURCHASE`` decoder (about 3x faster than a dict)."""

    __slots__ = (
        "_details",
        "classification",
        "contact_id",
        "evaluated",
        "id",
        "number",
        "performed_by_unit",
        "performed_on",
        "raw",
        "type",
    )

    def __init__(
        self,
        number: int,
        id: str,
        type: str,
        contact_id: str,
        classification: str | None,
        performed_on: datetime,
        performed_by_unit: str | None,
        evaluated: bool,
        raw: str,
    ) -> None:
        self.number = number
        self.id = id
        self.type = type
        self.contact_id = contact_id
        self.classification = classification
        self.performed_on = performed_on
        self.performed_by_unit = performed_by_unit
        self.evaluated = evaluated
        self.raw = raw
        self._details: dict[str, Any] | None = None

    @property
    def details(self) -> dict[str, Any]:
        if self._details is None:
            self._details = _details.decode(self.raw)
        return self._details


def read_records(
    session: Session, query: Any, text_times: bool = False, params: dict[str, Any] | None = None
) -> list[EventRecord]:
    """``text_times``: ``performed_on`` comes as SQLite's text (``event_columns``),
    parsed here: SQLAlchemy's own DATETIME parsing costs more than the rest of the row.
    Rows are fetched all at once (iterating a result fetches them one by one, which
    cost as much as reading them)."""
    rows = session.execute(query, params).fetchall()
    if text_times:
        return [
            EventRecord(n, i, t, c, cls, utc_text(p), u, bool(ev), d)
            for n, i, t, c, cls, p, u, ev, d in rows
        ]
    return [
        EventRecord(n, i, t, c, cls, p, u, bool(ev), d) for n, i, t, c, cls, p, u, ev, d in rows
    ]


def utc_text(text: str) -> datetime:
    """A UTC moment as SQLite stores it (``UTCDateTime``: ISO 8601 without a zone)."""
    if len(text) > 19 and text[-6] in "+-":  # carries its own offset (not ours, but valid)
        return datetime.fromisoformat(text).astimezone(UTC)
    # fromisoformat of the zoned text: a fifth of fromisoformat(text).replace(tzinfo=UTC)
    return datetime.fromisoformat(text + "+00:00")


def partition_filter(column: Any, partitions: int, partition: int) -> ColumnElement[bool] | None:
    """Contacts of ``partition``: by the last character of the contact id (a hex digit of
    a UUID); anything else falls into partition 0."""
    if partitions == 1:
        return None
    last = func.substr(column, func.length(column), 1)
    mine = [d for d in HEX_DIGITS if int(d, 16) % partitions == partition]
    if partition == 0:
        return last.not_in([d for d in HEX_DIGITS if d not in mine])
    return last.in_(mine)


def pending_events_filter(as_of: datetime) -> list[ColumnElement[bool]]:
    E = table_of(Event).c
    M = table_of(EvaluatedEvent).c
    return [
        E.performed_on <= as_of,
        E.state == "posted",
        E.type.not_in(tuple(NOT_EVALUATED)),
        # OFFSET 0 keeps it a lookup per event: PostgreSQL would otherwise hash the whole
        # marks table for every chunk (their count is unknown to its statistics mid-run).
        ~exists(select(literal(1)).where(M.event_number == E.number).offset(0)),
    ]
