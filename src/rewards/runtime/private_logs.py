"""Logs never carry personal data, whatever the error.

Database drivers put the values of a failing row in their messages (PostgreSQL's
``DETAIL: Key (cim)=(CIM-778899) already exists``, ``Failing row contains (...)``) and
SQLAlchemy appends the statement's parameters. Engines are made with
``hide_parameters=True`` (db.database); this module covers every other way an exception
reaches a log line: a log record factory, installed once per process, renders the
exception of any record (any logger: ours, uvicorn's, SQLAlchemy's) with

- database errors reduced to their class, SQLSTATE and the names of the constraint,
  table and column (what an operator needs to act; never the values);
- other exceptions' messages withheld, unless their type is known to carry no data
  (network and resource errors) or ``REWARDS_LOG_EXCEPTION_MESSAGES=1`` asks for them on a
  development machine;
- the frames kept as they are: they show code, not data.

Exceptions passed as message arguments (``log.warning("failed: %s", exc)``) are rendered
the same way.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import traceback
from collections.abc import Callable
from typing import Any

from sqlalchemy.exc import DBAPIError, StatementError

# Messages of these types describe the machine, never a customer.
_MESSAGES_WITHOUT_DATA: tuple[type[BaseException], ...] = (
    OSError,
    RecursionError,
    MemoryError,
    TimeoutError,
    NotImplementedError,
)

_installed: list[Callable[..., logging.LogRecord]] = []


def install() -> None:
    """Make every log record of this process private (idempotent)."""
    if _installed:
        return
    original = logging.getLogRecordFactory()
    show_messages = os.environ.get("REWARDS_LOG_EXCEPTION_MESSAGES") == "1"

    def private_record(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = original(*args, **kwargs)
        if record.exc_info and record.exc_info[1] is not None and not show_messages:
            record.exc_text = format_exception(record.exc_info[1])
        if record.args and not show_messages:
            record.args = _private_args(record.args)
        return record

    _installed.append(original)
    logging.setLogRecordFactory(private_record)


def _private_args(args: Any) -> Any:
    if isinstance(args, tuple):
        return tuple(describe(a) if isinstance(a, BaseException) else a for a in args)
    if isinstance(args, dict):
        return {k: describe(v) if isinstance(v, BaseException) else v for k, v in args.items()}
    return args


def describe(exc: BaseException) -> str:
    """One line naming ``exc`` without any value it may quote."""
    name = f"{type(exc).__module__}.{type(exc).__qualname__}"
    if isinstance(exc, StatementError):
        cause = exc.orig if isinstance(exc, DBAPIError) else None
        inner = f" from {describe(cause)}" if isinstance(cause, BaseException) else ""
        return f"{name}{inner} [SQL: {_first_line(exc.statement)}]"
    database_error = _database_error_summary(exc)
    if database_error is not None:
        return f"{name}: {database_error}"
    if isinstance(exc, _MESSAGES_WITHOUT_DATA):
        return f"{name}: {exc}"
    return f"{name}: (message withheld: it may quote customer data)"


def _database_error_summary(exc: BaseException) -> str | None:
    if isinstance(exc, sqlite3.Error):
        # SQLite's own messages name columns and constraints, but a trigger's RAISE()
        # or a CHECK expression can carry anything: keep the error code only.
        code = getattr(exc, "sqlite_errorname", None) or "unknown"
        return f"sqlite error {code}"
    diag = getattr(exc, "diag", None)
    sqlstate = getattr(exc, "sqlstate", None)
    if diag is None and sqlstate is None:
        return None
    parts = [f"sqlstate {sqlstate or 'unknown'}"]
    for label in ("constraint_name", "table_name", "column_name"):
        value = getattr(diag, label, None)
        if value:
            parts.append(f"{label.split('_')[0]} {value}")
    return ", ".join(parts)


def _first_line(statement: str | None) -> str:
    text = " ".join((statement or "").split())
    return text if len(text) <= 200 else text[:200] + "..."


def format_exception(exc: BaseException) -> str:
    """A traceback like ``logging`` prints, with every message of the chain made private."""
    chain: list[tuple[BaseException, str | None]] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    link: str | None = None
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        chain.append((current, link))
        if current.__cause__ is not None:
            current, link = current.__cause__, "direct"
        elif current.__context__ is not None and not current.__suppress_context__:
            current, link = current.__context__, "context"
        else:
            current = None
    lines: list[str] = []
    for position, (item, _) in enumerate(reversed(chain)):
        if position:
            # The link printed before an exception is the one that led to its predecessor.
            following = chain[len(chain) - position][1]
            lines.append(
                "\nThe above exception was the direct cause of the following exception:\n\n"
                if following == "direct"
                else "\nDuring handling of the above exception, another exception occurred:\n\n"
            )
        lines.append("Traceback (most recent call last):\n")
        lines.extend(traceback.format_tb(item.__traceback__))
        lines.append(describe(item) + "\n")
    return "".join(lines).rstrip("\n")
