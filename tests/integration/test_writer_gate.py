"""SQLite writers of one process queue on the WriterGate, and every way a write
transaction can end hands it on (commit, rollback, a session closed without either)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlmodel import Session

from rewards.db.database import Database


@pytest.fixture
def database(tmp_path: Path):  # type: ignore[no-untyped-def]
    database = Database(f"sqlite:///{tmp_path / 'gate.db'}")
    with database.write_engine.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE t (x INTEGER)")
    yield database
    database.dispose()


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
    started: list[float] = []

    def second_writer() -> None:
        with database.transaction() as session:
            session.execute(text("INSERT INTO t VALUES (2)"))
            started.append(time.perf_counter())

    thread = threading.Thread(target=second_writer)
    thread.start()
    time.sleep(0.3)
    assert not started  # queued behind the holder
    with database.session(write=False) as reader:  # readers never wait for the gate
        assert reader.execute(text("SELECT count(*) FROM t")).scalar() == 0
    ended = time.perf_counter()
    end(holder)
    thread.join(5)
    assert started and started[0] - ended < 0.25  # woken, not a busy-handler poll later
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
    other = Database(f"sqlite:///{tmp_path / 'gate.db'}")
    try:
        holder = database.session(write=True)
        holder.execute(text("INSERT INTO t VALUES (1)"))
        started: list[float] = []

        def second_writer() -> None:
            with other.transaction() as session:
                session.execute(text("INSERT INTO t VALUES (2)"))
                started.append(time.perf_counter())

        thread = threading.Thread(target=second_writer)
        thread.start()
        time.sleep(0.3)
        assert not started
        ended = time.perf_counter()
        holder.commit()
        holder.close()
        thread.join(5)
        assert started and started[0] - ended < 0.25
        assert (tmp_path / "gate.db-writer").exists()
    finally:
        other.dispose()
