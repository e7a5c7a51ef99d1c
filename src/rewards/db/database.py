"""Engines and sessions.

Two engines share one URL: a *write* engine whose transactions take the write lock up
front (SQLite ``BEGIN IMMEDIATE``, so two writers never deadlock on a lock upgrade, behind
a per-process ``WriterGate``) and a
*read* engine with plain deferred transactions (WAL lets readers run beside the writer).
On PostgreSQL both are ordinary READ COMMITTED engines; races there are closed by
conditional updates, row locks and unique constraints in the use cases (intake, money, runs).
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from sqlalchemy import Engine, create_engine, event, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import sessionmaker
from sqlmodel import Session

SQLITE_BUSY_TIMEOUT_MS = 30_000


class WriterGate:
    """One SQLite write transaction at a time, queued in Python and in the kernel.

    SQLite has one writer per database. Without a gate, writers that find the write
    lock taken poll SQLite's busy handler, which sleeps 1 to 100 ms between tries: the
    lock sits idle while they sleep, and tail latency grows to seconds under load. With
    it, the threads of a process wait on a ``threading.Lock`` and the processes sharing
    the file on an exclusive ``flock`` of ``<database>-writer`` (each wakes the moment
    the holder lets go; the kernel drops the lock of a process that dies). It is taken
    right before ``BEGIN IMMEDIATE`` and given back when the connection commits, rolls
    back (the pool's reset-on-return included) or closes, so no code path can leave it
    held. A thread that waits longer than the busy timeout fails like SQLite would
    ("database is locked"). Writers outside rewards still meet it at SQLite's own lock.
    """

    def __init__(self, timeout: float, lock_path: str | None) -> None:
        self.timeout = timeout
        self._lock = threading.Lock()
        self._holder: int | None = None  # id() of the DBAPI connection holding it
        self._lock_path = lock_path
        self._file: int | None = None  # opened on first use (and again after a fork)
        self._pid = 0

    def _lock_file(self) -> int | None:
        if self._lock_path is None:
            return None
        if self._file is None or self._pid != os.getpid():
            self._file = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
            self._pid = os.getpid()
        return self._file

    def acquire(self, connection: object) -> None:
        if not self._lock.acquire(timeout=self.timeout):
            raise sqlite3.OperationalError("database is locked (waited for the writer gate)")
        try:
            if (descriptor := self._lock_file()) is not None:
                fcntl.flock(descriptor, fcntl.LOCK_EX)  # releases the GIL while it waits
        except BaseException:
            self._lock.release()
            raise
        self._holder = id(connection)

    def release(self, connection: object) -> None:
        if self._holder == id(connection):
            self._holder = None
            try:
                if self._file is not None:
                    fcntl.flock(self._file, fcntl.LOCK_UN)
            finally:
                self._lock.release()


def _gated_connection_class(gate: WriterGate) -> type[sqlite3.Connection]:
    class GatedConnection(sqlite3.Connection):
        def commit(self) -> None:
            try:
                super().commit()
            finally:
                gate.release(self)

        def rollback(self) -> None:
            try:
                super().rollback()
            finally:
                gate.release(self)

        def close(self) -> None:
            try:
                super().close()
            finally:
                gate.release(self)

    return GatedConnection


def _sqlite_engine(url: str, *, gate: WriterGate | None, echo: bool) -> Engine:
    connect_args: dict[str, Any] = {
        "check_same_thread": False,
        "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000,
    }
    if gate is not None:
        connect_args["factory"] = _gated_connection_class(gate)
    engine = create_engine(
        url,
        echo=echo,
        hide_parameters=True,  # a failing statement's values may be personal data
        connect_args=connect_args,
        pool_size=20,
        max_overflow=20,
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control away from pysqlite so BEGIN is ours to emit.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    if gate is None:

        @event.listens_for(engine, "begin")
        def _on_begin(connection: Any) -> None:
            connection.exec_driver_sql("BEGIN")

    else:

        @event.listens_for(engine, "begin")
        def _on_begin_immediate(connection: Any) -> None:
            dbapi_connection = connection.connection.dbapi_connection
            gate.acquire(dbapi_connection)
            try:
                connection.exec_driver_sql("BEGIN IMMEDIATE")
            except BaseException:
                gate.release(dbapi_connection)
                raise

    return engine


@contextmanager
def committing(session: Session) -> Iterator[Session]:
    """The session's transaction: committed when the block ends, rolled back on any
    error; the session is closed either way."""
    with session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


T = TypeVar("T")
_RETRYABLE = ("40P01", "40001")  # PostgreSQL: deadlock detected, serialization failure


def deadlocked(outcome: object) -> bool:
    """Whether a write failed as a deadlock's victim (or a serialization failure): the
    database undid its transaction whole, so doing it again is safe."""
    return isinstance(outcome, DBAPIError) and getattr(outcome.orig, "sqlstate", None) in (
        _RETRYABLE
    )


class Database:
    """Owns the engines; hands out sessions. Created by ``create_app``, never at import."""

    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        if self.is_sqlite:
            path = make_url(url).database
            lock_path = f"{path}-writer" if path and path != ":memory:" else None
            gate = WriterGate(timeout=SQLITE_BUSY_TIMEOUT_MS / 1000, lock_path=lock_path)
            self.write_engine = _sqlite_engine(url, gate=gate, echo=echo)
            self.read_engine = _sqlite_engine(url, gate=None, echo=echo)
        else:
            self.write_engine = create_engine(
                url,
                echo=echo,
                hide_parameters=True,  # a failing statement's values may be personal data
                pool_size=20,
                max_overflow=20,
                pool_pre_ping=True,
            )
            self.read_engine = self.write_engine
        self._writer = sessionmaker(self.write_engine, class_=Session, expire_on_commit=False)
        self._reader = sessionmaker(self.read_engine, class_=Session, expire_on_commit=False)

    def session(self, *, write: bool) -> Session:
        return (self._writer if write else self._reader)()

    @contextmanager
    def transaction(self, *, write: bool = True) -> Iterator[Session]:
        """One transaction: commit on success, roll back on any error."""
        with committing(self.session(write=write)) as session:
            yield session

    def write_retrying(self, work: Callable[[Session], T], attempts: int = 3) -> T:
        """``work`` in one write transaction, run again (up to ``attempts`` times) when
        PostgreSQL chose the transaction as a deadlock's victim: it was undone whole."""
        for attempt in range(1, attempts + 1):
            try:
                with self.transaction() as session:
                    return work(session)
            except DBAPIError as error:
                if attempt == attempts or not deadlocked(error):
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def dispose(self) -> None:
        self.write_engine.dispose()
        if self.read_engine is not self.write_engine:
            self.read_engine.dispose()
