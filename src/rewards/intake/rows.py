"""The rows an event writes on intake, at driver speed (``db.driver``): the event itself
(idempotent by its external reference), a purchase's lines, and the catalogue entries
(SKUs, undeclared purchase classifications) it names. Shared by every event type's
intake (``events.record_event``) and the purchase fast path (``purchase_plans``)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

from sqlalchemy import Connection, bindparam, insert, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect

from rewards.db.driver import DriverStatement, driver_cursor
from rewards.db.tables import Event, EventLine, PurchaseClassification, Sku
from rewards.db.types import table_of, utcnow
from rewards.domain.purchase import PricedLine

_EVENT_COLUMNS = tuple(c.name for c in table_of(Event).columns if c.name != "number")
_LINE_COLUMNS = (
    "event_id", "line_no", "sku", "quantity_milli", "net_cents", "vat_cents", "total_cents",
)  # fmt: skip


@dataclass(frozen=True)
class _Statements:
    insert_event: DriverStatement  # ON CONFLICT (external reference) DO NOTHING RETURNING number
    insert_lines: DriverStatement
    insert_sku: DriverStatement  # ON CONFLICT DO NOTHING
    insert_classification: DriverStatement  # ON CONFLICT DO NOTHING
    find_external: DriverStatement  # id of the event holding an external reference


@cache
def _statements(dialect: Dialect) -> _Statements:
    on = postgresql if dialect.name == "postgresql" else sqlite
    events = table_of(Event)
    now = {"created_at": bindparam("created_at", type_=table_of(Sku).c.created_at.type)}
    return _Statements(
        insert_event=DriverStatement(
            on.insert(events)
            .on_conflict_do_nothing(index_elements=["external_system", "external_reference"])
            .returning(events.c.number),
            dialect,
            columns=_EVENT_COLUMNS,
        ),
        insert_lines=DriverStatement(insert(table_of(EventLine)), dialect, columns=_LINE_COLUMNS),
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
        find_external=DriverStatement(
            select(events.c.id).where(
                events.c.external_system == bindparam("system"),
                events.c.external_reference == bindparam("reference"),
            ),
            dialect,
        ),
    )


def insert_event(connection: Connection, event: Event) -> bool:
    """INSERT the event row and set its ``number``; False when the unique (external_system,
    external_reference) already holds a row: a concurrent twin committed first (or was
    written earlier in the same transaction; PostgreSQL waits for an uncommitted one)."""
    row: dict[str, Any] = {name: getattr(event, name) for name in _EVENT_COLUMNS}
    found = _statements(connection.dialect).insert_event.run(driver_cursor(connection), row)
    number = found.fetchone()
    if number is None:
        return False
    event.number = number[0]
    return True


def insert_lines(connection: Connection, event_id: str, lines: list[PricedLine]) -> None:
    """A purchase's lines, in one ``executemany``."""
    _statements(connection.dialect).insert_lines.many(
        driver_cursor(connection),
        [
            {
                "event_id": event_id,
                "line_no": i,
                "sku": line.sku,
                "quantity_milli": int(line.quantity * 1000),
                "net_cents": line.net_cents,
                "vat_cents": line.vat_cents,
                "total_cents": line.total_cents,
            }
            for i, line in enumerate(lines)
        ],
    )


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


def external_event_id(connection: Connection, system: str, reference: str) -> str | None:
    """The id of the event recorded under this external reference, if any."""
    cursor = driver_cursor(connection)
    found = _statements(connection.dialect).find_external.run(
        cursor, {"system": system, "reference": reference}
    )
    row = found.fetchone()
    return None if row is None else str(row[0])
