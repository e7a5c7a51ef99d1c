"""The rows an event writes on intake, at driver speed (``db.driver``): the event itself
(idempotent by its external reference), a purchase's lines, and the catalogue entries
(SKUs, undeclared purchase classifications) it names. Shared by every event type's
intake (``events.record_event``) and the purchase fast path (``purchase_plans``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache, lru_cache
from typing import Any

from sqlalchemy import Connection, and_, bindparam, insert, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect

from rewards.db.driver import DriverStatement, driver_cursor
from rewards.db.tables import Event, EventLine, PurchaseClassification, Sku
from rewards.db.types import table_of, utcnow
from rewards.domain.purchase import PricedLine

_EVENT_COLUMNS = tuple(c.name for c in table_of(Event).columns if c.name != "number")
LINE_COLUMNS = (
    "event_id", "line_no", "sku", "quantity_milli", "net_cents", "vat_cents", "total_cents",
)  # fmt: skip


@dataclass(frozen=True)
class _Statements:
    insert_sku: DriverStatement  # ON CONFLICT DO NOTHING
    insert_classification: DriverStatement  # ON CONFLICT DO NOTHING


@cache
def _statements(dialect: Dialect) -> _Statements:
    on = postgresql if dialect.name == "postgresql" else sqlite
    now = {"created_at": bindparam("created_at", type_=table_of(Sku).c.created_at.type)}
    return _Statements(
        insert_sku=DriverStatement(
            on.insert(table_of(Sku)).values(code=bindparam("code"), **now).on_conflict_do_nothing(),
            dialect,
        ),
        insert_classification=DriverStatement(
            on.insert(table_of(PurchaseClassification))
            .values(code=bindparam("code"), **now)
            .on_conflict_do_nothing(),
            dialect,
        ),
    )


def insert_event(connection: Connection, event: Event) -> bool:
    """INSERT the event row and set its ``number``; False when the unique (external_system,
    external_reference) already holds a row: a concurrent twin committed first (or was
    written earlier in the same transaction; PostgreSQL waits for an uncommitted one)."""
    return event.id in insert_events(connection, [event])


@cache
def _insert_lines(dialect: Dialect, count: int) -> DriverStatement:
    """``count`` lines in one multi-row INSERT (``executemany`` is one statement per row
    on PostgreSQL), compiled once per dialect and count."""
    rows: list[dict[str, Any]] = [
        {name: bindparam(f"{name}_{i}") for name in LINE_COLUMNS} for i in range(count)
    ]
    return DriverStatement(insert(table_of(EventLine)).values(rows), dialect)


@lru_cache(maxsize=128)
def _insert_events(dialect: Dialect, count: int) -> DriverStatement:
    on = postgresql if dialect.name == "postgresql" else sqlite
    events = table_of(Event)
    rows: list[dict[str, Any]] = [
        {name: bindparam(f"{name}_{i}", type_=events.c[name].type) for name in _EVENT_COLUMNS}
        for i in range(count)
    ]
    statement = (
        on.insert(events)
        .values(rows)
        .on_conflict_do_nothing(index_elements=["external_system", "external_reference"])
        .returning(events.c.id, events.c.number)
    )
    return DriverStatement(statement, dialect)


def insert_events(connection: Connection, events: Sequence[Event]) -> set[str]:
    """INSERT many event rows in one statement and set their ``number``; the ids of those
    written (an event whose external reference is already held is not)."""
    if not events:
        return set()
    values: dict[str, Any] = {}
    for i, event in enumerate(events):
        for name in _EVENT_COLUMNS:
            values[f"{name}_{i}"] = getattr(event, name)
    found = _insert_events(connection.dialect, len(events)).run(driver_cursor(connection), values)
    numbers = dict(found.fetchall())
    for event in events:
        if event.id in numbers:
            event.number = numbers[event.id]
    return set(numbers)


def insert_lines(connection: Connection, event_id: str, lines: list[PricedLine]) -> None:
    """A purchase's lines, in one statement."""
    if not lines:
        return
    values: dict[str, Any] = {}
    for i, line in enumerate(lines):
        values[f"event_id_{i}"] = event_id
        values[f"line_no_{i}"] = i
        values[f"sku_{i}"] = line.sku
        values[f"quantity_milli_{i}"] = int(line.quantity * 1000)
        values[f"net_cents_{i}"] = line.net_cents
        values[f"vat_cents_{i}"] = line.vat_cents
        values[f"total_cents_{i}"] = line.total_cents
    _insert_lines(connection.dialect, len(lines)).run(driver_cursor(connection), values)


def add_to_catalogue(
    connection: Connection, skus: list[str], classification: str | None = None
) -> None:
    """SKUs (and an undeclared purchase classification) a purchase names, created when new."""
    if not skus and classification is None:
        return
    statements = _statements(connection.dialect)
    cursor = driver_cursor(connection)
    now = utcnow()
    statements.insert_sku.many(
        cursor, [{"code": sku, "created_at": now} for sku in sorted(set(skus))]
    )
    if classification is not None:
        statements.insert_classification.run(cursor, {"code": classification, "created_at": now})


@cache
def _find_external(dialect: Dialect, count: int) -> DriverStatement:
    """Which of ``count`` external references (``:s<i>``, ``:r<i>``) are recorded."""
    events = table_of(Event).c
    either = or_(
        *(
            and_(
                events.external_system == bindparam(f"s{i}"),
                events.external_reference == bindparam(f"r{i}"),
            )
            for i in range(count)
        )
    )
    return DriverStatement(
        select(events.external_system, events.external_reference).where(either), dialect
    )


def recorded_references(
    connection: Connection, references: Sequence[tuple[str, str]]
) -> set[tuple[str, str]]:
    """The (external_system, external_reference) pairs already recorded, in one query."""
    wanted = sorted(set(references))
    if not wanted:
        return set()
    parameters: dict[str, str] = {}
    for i, (system, reference) in enumerate(wanted):
        parameters[f"s{i}"] = system
        parameters[f"r{i}"] = reference
    found = _find_external(connection.dialect, len(wanted)).run(
        driver_cursor(connection), parameters
    )
    return {(system, reference) for system, reference in found.fetchall()}
