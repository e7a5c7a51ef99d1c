"""Writing notifications into the transactional outbox, in the caller's transaction (a
session's, or the intake writer's connection): one multi-row insert at driver speed.
What a notification says is decided above (``money.notices`` and the use cases); here
rows are ``(type, contact_id, payload JSON)``."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from functools import cache
from typing import Any, NamedTuple

import msgspec
from sqlalchemy import Connection, insert
from sqlmodel import Session

from rewards.db.driver import DriverStatement, driver_cursor
from rewards.db.notify_tables import OutboxRow
from rewards.db.types import table_of, utcnow


class Notice(NamedTuple):
    """One notification to write: its type, the contact it is about (None: none), and
    the JSON of its ``data``."""

    type: str
    contact_id: str | None
    payload: str


_encode = msgspec.json.Encoder(decimal_format="number").encode


def notice(type_: str, contact_id: str | None, data: msgspec.Struct) -> Notice:
    """A notice whose payload is ``data`` as JSON (amounts as JSON numbers, as the API
    answers them)."""
    return Notice(type_, contact_id, _encode(data).decode())


_COLUMNS = ("type", "contact_id", "payload", "created_at", "fanned_out")


@cache
def _insert(dialect: Any) -> DriverStatement:
    # A plain INSERT run many times (not COPY): the intake may be in psycopg's pipeline
    # mode, where COPY is not allowed; psycopg pipelines executemany itself.
    return DriverStatement(insert(table_of(OutboxRow)), dialect, columns=_COLUMNS)


def emit(
    target: Session | Connection, notices: Sequence[Notice], now: datetime | None = None
) -> None:
    """Append ``notices`` to the outbox, in order, in ``target``'s transaction."""
    if not notices:
        return
    connection = target.connection() if isinstance(target, Session) else target
    stamp = now or utcnow()
    _insert(connection.dialect).many(
        driver_cursor(connection),
        [
            {"type": n.type, "contact_id": n.contact_id, "payload": n.payload,
             "created_at": stamp, "fanned_out": False}
            for n in notices
        ],
    )  # fmt: skip
