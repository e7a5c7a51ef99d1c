"""SQLite writers of one process queue on the WriterGate, and every way a write
transaction can end hands it on (commit, rollback, a session closed without either).

SQLite's own busy handler is off here (``busy_timeout`` 0): a writer that got past the
gate to a held write lock would fail at once with "database is locked" instead of
polling, so a waiting writer that succeeds waited at the gate and was woken by it. The
tests see it waiting there (its thread's stack, or the kernel's list of blocked flocks)
before the holder lets go: no sleeps, no timings."""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlmodel import Session

from rewards.db.database import Database, WriterGate
from tests.serving import until


def without_busy_handler(database: Database) -> Database:
    """``database`` with SQLite's busy handler off on every new write connection."""

    @event.listens_for(database.write_engine, "connect")
    def _no_busy_wait(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.execute("PRAGMA busy_timeout=0")

    return database


@pytest.fixture
def database(tmp_path: Path) -> Iterator[Database]:
    database = without_busy_handler(Database(f"sqlite:///{tmp_path / 'gate.db'}"))
    with database.write_engine.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE t (x INTEGER)")
    yield database
    database.dispose()


class Writer(threading.Thread):
    """A thread that inserts ``value`` in a write transaction of ``database``."""

    def __init__(self, database: Database, value: int) -> None:
        super().__init__(daemon=True)
        self.database, self.value = database, value
        self.wrote = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with self.database.transaction() as session:
                session.execute(text(f"INSERT INTO t VALUES ({self.value})"))
            self.wrote.set()
        except BaseException as error:
            self.error = error

    def not_failed(self) -> bool:
        assert self.error is None, self.error
        return True

    def waiting_in_the_gate(self) -> bool:
        self.not_failed()
        frame = sys._current_frames().get(self.ident or 0)
        while frame is not None:
            if frame.f_code is WriterGate.acquire.__code__:
                return True
            frame = frame.f_back
        return False

    def finished(self) -> None:
        self.join(30)
        assert not self.is_alive(), "the waiting writer never went on"
        assert self.error is None, self.error
        assert self.wrote.is_set()


def blocked_on_flock(path: Path) -> bool:
    """Whether the kernel lists a process waiting for a flock of ``path``."""
    status = os.stat(path)
    file_id = f"{os.major(status.st_dev):02x}:{os.minor(status.st_dev):02x}:{status.st_ino}"
    return any(
        "-> FLOCK" in line and line.split()[-3] == file_id
        for line in Path("/proc/locks").read_text().splitlines()
    )


def _end_by_commit(session: Session) -> None:
    session.commit()
    session.close()


def _end_by_rollback(session: Session) -> None:
    session.rollback()
    session.close()


def _end_by_close(session: Session) -> None:
    session.close()  # the pool's reset-on-return rolls back


@pytest.mark.parametrize("end", [_end_by_commit, _end_by_rollback, _end_by_close])
def test_a_waiting_writer_starts_as_soon_as_the_holder_ends(
    database: Database, end: Callable[[Session], None]
) -> None:
    holder = database.session(write=True)
    holder.execute(text("INSERT INTO t VALUES (1)"))
    second = Writer(database, 2)
    second.start()
    until(second.waiting_in_the_gate, "the second writer waiting in the gate")
    assert not second.wrote.is_set()  # queued behind the holder
    with database.session(write=False) as reader:  # readers never wait for the gate
        assert reader.execute(text("SELECT count(*) FROM t")).scalar() == 0
    end(holder)
    second.finished()  # woken by the gate: SQLite's lock was free when it got there
    with database.session(write=False) as reader:
        rows = sorted(x for (x,) in reader.execute(text("SELECT x FROM t")))
    assert rows == ([1, 2] if end is _end_by_commit else [2])


def test_a_failed_statement_and_rollback_leave_the_gate_free(database: Database) -> None:
    with pytest.raises(Exception, match="no such table"):
        with database.transaction() as session:
            session.execute(text("INSERT INTO missing VALUES (1)"))
    with database.transaction() as session:  # would wait 30 s if the gate were still held
        session.execute(text("INSERT INTO t VALUES (3)"))


def test_writers_of_another_database_object_queue_on_the_lock_file(
    database: Database, tmp_path: Path
) -> None:
    """A second Database on the same file stands for another worker process: it has its
    own threading lock, so only the flock of ``<file>-writer`` makes it wait."""
    other = without_busy_handler(Database(f"sqlite:///{tmp_path / 'gate.db'}"))
    try:
        holder = database.session(write=True)
        holder.execute(text("INSERT INTO t VALUES (1)"))
        second = Writer(other, 2)
        second.start()
        lock_file = tmp_path / "gate.db-writer"
        until(
            lambda: second.not_failed() and blocked_on_flock(lock_file),
            "the second writer waiting for the flock",
        )
        assert second.waiting_in_the_gate() and not second.wrote.is_set()
        holder.commit()
        holder.close()
        second.finished()
    finally:
        other.dispose()
