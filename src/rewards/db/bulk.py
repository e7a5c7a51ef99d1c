"""Many rows into one table in the session's transaction, for evaluation runs: the SQL
and the columns' bind processors looked up once, rows as tuples."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast

from psycopg import pq
from sqlalchemy import Connection, Table
from sqlmodel import Session

from rewards.db.types import UTCDateTime, sqlite_text

if TYPE_CHECKING:
    import psycopg


def _processor(column_type: Any, dialect: Any) -> Callable[[Any], Any] | None:
    """The bind processor of a column: SQLAlchemy's, but for UTC datetimes on SQLite a
    direct formatting of the same text (``types.sqlite_text``, several times faster)."""
    if isinstance(column_type, UTCDateTime) and dialect.name == "sqlite":
        return sqlite_text
    processor: Callable[[Any], Any] | None = column_type._cached_bind_processor(dialect)
    return processor


class BulkInsert:
    """Many rows into one table, in the session's transaction: the SQL and the columns'
    bind processors are looked up once per worker, rows are tuples in ``columns`` order.
    SQLite's ``executemany`` straight on the driver, PostgreSQL's ``COPY`` (SQLAlchemy's
    per-row parameter building costs more than the database's insert)."""

    def __init__(
        self, dialect: Any, table: Table, columns: Sequence[str], ready: Sequence[str] = ()
    ) -> None:
        processors = [
            None if name in ready else _processor(table.c[name].type, dialect) for name in columns
        ]
        # Only the columns whose values need converting (datetimes, JSON) are touched;
        # ``ready`` ones come converted (JSON text).
        self.processed = [(i, p) for i, p in enumerate(processors) if p is not None]
        quote = dialect.identifier_preparer.quote
        names = ", ".join(quote(name) for name in columns)
        self.copy = dialect.name == "postgresql"
        if self.copy:
            self.sql = f"COPY {quote(table.name)} ({names}) FROM STDIN"
            # COPY is refused in psycopg's pipeline mode (intake.group_commit writes a
            # purchase in one pipeline): there the rows go by executemany.
            marks = ", ".join("%s" for _ in columns)
            self.pipelined_sql = f"INSERT INTO {quote(table.name)} ({names}) VALUES ({marks})"
        else:
            marks = ", ".join("?" for _ in columns)
            self.sql = f"INSERT INTO {quote(table.name)} ({names}) VALUES ({marks})"

    def _process(self, rows: list[tuple[Any, ...]]) -> list[Any]:
        if not self.processed:
            return rows
        # Each distinct datetime converted once (every row of a chunk has the same
        # created_at); lists (JSON) are not hashable and are converted each time.
        done: list[dict[Any, Any]] = [{} for _ in self.processed]
        result = []
        for row in rows:
            values = list(row)
            for (i, process), memo in zip(self.processed, done, strict=True):
                value = values[i]
                if value is None:
                    continue
                if type(value) is datetime:
                    found = memo.get(value)
                    if found is None:
                        found = memo[value] = process(value)
                    values[i] = found
                else:
                    values[i] = process(value)
            result.append(tuple(values))
        return result

    def run(self, session: Session | Connection, rows: list[tuple[Any, ...]]) -> None:
        if not rows:
            return
        connection = session.connection() if isinstance(session, Session) else session
        values = self._process(rows)
        if self.copy:
            # ``copy`` is only set on PostgreSQL, whose driver is psycopg 3.
            driver = cast("psycopg.Connection[Any]", connection.connection.dbapi_connection)
            cursor = driver.cursor()
            if driver.pgconn.pipeline_status != pq.PipelineStatus.OFF:
                cursor.executemany(self.pipelined_sql, values)
                return
            with cursor.copy(self.sql) as copy:
                for row in values:
                    copy.write_row(row)
            return
        connection.exec_driver_sql(self.sql, values)
