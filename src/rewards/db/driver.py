"""Statements at driver speed, for the purchase intake path.

A statement is built from the SQLModel tables with SQLAlchemy Core and compiled once per
process and dialect (SQL text, parameter order, the columns' bind processors); it then
runs on the DBAPI cursor of the caller's connection. SQLAlchemy's ``execute`` costs
130-230 µs per statement on the reference machine, the driver 16-26 µs
(docs/performance.md); the tables, migrations and every read off the hot path stay with
SQLAlchemy.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, cast

import msgspec
from sqlalchemy import JSON, Connection
from sqlalchemy.engine import Dialect
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler

from rewards.db.types import UTCDateTime, sqlite_text

if TYPE_CHECKING:
    import psycopg


def _json_text(value: Any) -> str:
    return _encode_json(value).decode()


_encode_json = msgspec.json.Encoder(decimal_format="string").encode


def driver_cursor(connection: Connection) -> Any:
    """A DBAPI cursor of ``connection`` (inside the transaction it has begun)."""
    return connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]


class DriverStatement:
    """One statement compiled for one dialect; ``run``/``many`` take named parameters."""

    def __init__(
        self, statement: ClauseElement, dialect: Dialect, columns: Sequence[str] | None = None
    ) -> None:
        compiled = cast(
            "SQLCompiler",
            statement.compile(
                dialect=dialect, column_keys=list(columns) if columns is not None else None
            ),
        )
        self.sql = compiled.string
        self.positional: tuple[str, ...] | None = (
            tuple(compiled.positiontup) if compiled.positiontup is not None else None
        )
        processors: dict[str, Callable[[Any], Any]] = {}
        types = {bind.key: bind.type for bind in compiled.binds.values()}
        for name, processor in compiled._bind_processors.items():
            if isinstance(types.get(name), UTCDateTime) and dialect.name == "sqlite":
                processors[name] = sqlite_text  # the same text, several times faster
            elif isinstance(types.get(name), JSON):
                processors[name] = _json_text  # the same JSON, compact, faster
            elif callable(processor):  # a sequence only for tuple binds, which we do not use
                processors[name] = processor
        self.processors = processors
        # Values the statement carries itself (``.values(state="cancelled")``).
        self.fixed = {k: v for k, v in compiled.params.items() if v is not None}

    def parameters(self, values: Mapping[str, Any]) -> Any:
        merged = {**self.fixed, **values} if self.fixed else values
        processors = self.processors
        if self.positional is not None:
            out = []
            for name in self.positional:
                value = merged[name]
                if value is not None and name in processors:
                    value = processors[name](value)
                out.append(value)
            return out
        named = dict(merged)
        for name, processor in processors.items():
            value = named.get(name)
            if value is not None:
                named[name] = processor(value)
        return named

    def run(self, cursor: Any, values: Mapping[str, Any]) -> Any:
        """Execute once; the cursor, for ``fetchone``/``fetchall``."""
        cursor.execute(self.sql, self.parameters(values))
        return cursor

    def many(self, cursor: Any, rows: Sequence[Mapping[str, Any]]) -> None:
        if rows:
            cursor.executemany(self.sql, [self.parameters(row) for row in rows])


@contextmanager
def pipelined(connection: Connection) -> Iterator[None]:
    """On PostgreSQL, psycopg's pipeline mode for the block: statements whose results
    are not read go out with the next one that is (a round trip saved each), and the
    block's end waits for them all, raising any error of theirs there. Elsewhere a
    plain block."""
    if connection.dialect.name != "postgresql":
        yield
        return
    driver = cast("psycopg.Connection[Any]", connection.connection.dbapi_connection)
    with driver.pipeline():
        yield
