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
from sqlalchemy import Connection
from sqlmodel import Session

from rewards.db.bulk import BulkInsert
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


@cache
def _insert(dialect: Any) -> BulkInsert:
    return BulkInsert(
        dialect, table_of(OutboxRow), ("type", "contact_id", "payload", "created_at", "fanned_out")
    )


def emit(
    target: Session | Connection, notices: Sequence[Notice], now: datetime | None = None
) -> None:
    """Append ``notices`` to the outbox, in order, in ``target``'s transaction."""
    if not notices:
        return
    connection = target.connection() if isinstance(target, Session) else target
    stamp = now or utcnow()
    _insert(connection.dialect).run(
        target, [(n.type, n.contact_id, n.payload, stamp, False) for n in notices]
    )
