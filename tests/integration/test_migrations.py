"""The Alembic migrations build exactly the tables the code declares, 0005 carries the
pending aggregate periods of an existing database over, and 0007 re-keys them (and back)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text

from rewards.db.database import Database
from rewards.db.migrate import MIGRATIONS, current_revision, head_revision, upgrade
from rewards.db.tables import metadata
from tests.conftest import BOTH, postgres_schema


@pytest.mark.parametrize("database_url", BOTH, indirect=True)
def test_migrated_schema_equals_the_declared_tables(database_url: str) -> None:
    database = Database(database_url)
    try:
        assert current_revision(database.write_engine) == head_revision(database.write_engine)
        with database.write_engine.connect() as connection:
            differences = compare_metadata(MigrationContext.configure(connection), metadata)
        assert differences == []
    finally:
        database.dispose()


def test_0005_turns_pending_bits_into_pending_periods(tmp_path) -> None:
    database = Database(f"sqlite:///{tmp_path / 'old.db'}")
    try:
        upgrade(database.write_engine, "0004")
        with database.write_engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO evaluated_events (event_number, run_id, contact_id, local_day,"
                    " local_week, weekday, minute, pending) VALUES"
                    " (1, 'r', 'c1', 20260305, 20260302, 3, 600, 6),"  # week, month
                    " (2, 'r', 'c1', 20260306, 20260302, 4, 600, 2),"  # same week
                    " (3, 'r', 'c2', 20251231, 20251229, 2, 600, 9),"  # day, year
                    " (4, 'r', 'c3', 20260101, 20251229, 3, 600, 0)"  # nothing left
                )
            )
        upgrade(database.write_engine)
        with database.write_engine.connect() as connection:
            rows = connection.execute(
                text(
                    "SELECT contact_id, period, period_key FROM aggregate_pending ORDER BY 1, 2, 3"
                )
            ).all()
            columns = [
                r[1] for r in connection.execute(text("PRAGMA table_info(evaluated_events)"))
            ]
        assert [tuple(r) for r in rows] == [
            ("c1", "month", 202603),
            ("c1", "week", 20260302),
            ("c2", "day", 20251231),
            ("c2", "year", 2025),
        ]
        assert "pending" not in columns
    finally:
        database.dispose()


@pytest.fixture(params=BOTH)
def empty_database(request: pytest.FixtureRequest, tmp_path) -> Iterator[Database]:
    """A database without any table (SQLite file, or a fresh PostgreSQL schema)."""
    if request.param == "sqlite":
        database = Database(f"sqlite:///{tmp_path / 'old.db'}")
        yield database
        database.dispose()
        return
    with postgres_schema("rewards_migration") as url:
        database = Database(url)
        try:
            yield database
        finally:
            database.dispose()


def _downgrade(database: Database, revision: str) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with database.write_engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, revision)


def _pending(database: Database) -> tuple[list[str], list[tuple[str, str, int, int]]]:
    """(primary key columns, rows) of aggregate_pending."""
    key = inspect(database.write_engine).get_pk_constraint("aggregate_pending")
    with database.write_engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT contact_id, period, period_key, changed FROM aggregate_pending ORDER BY 1, 2"
            )
        ).all()
    return list(key["constrained_columns"]), [tuple(row) for row in rows]


def test_0007_keys_pending_periods_by_period_and_keeps_them(empty_database: Database) -> None:
    database = empty_database
    upgrade(database.write_engine, "0006")
    rows = [("c1", "month", 202603, 2), ("c1", "week", 20260302, 0), ("c2", "month", 202603, 0)]
    with database.write_engine.begin() as connection:
        for row in rows:
            connection.execute(
                text(
                    "INSERT INTO aggregate_pending (contact_id, period, period_key, changed)"
                    " VALUES (:c, :p, :k, :n)"
                ),
                dict(zip("cpkn", row, strict=True)),
            )
    assert _pending(database) == (["contact_id", "period", "period_key"], rows)

    upgrade(database.write_engine)
    assert _pending(database) == (["period", "period_key", "contact_id"], rows)
    indexes = inspect(database.write_engine).get_indexes("aggregate_awards")
    assert "ix_aggregate_awards_reversed" in {index["name"] for index in indexes}

    _downgrade(database, "0006")  # and back, rows kept
    assert _pending(database) == (["contact_id", "period", "period_key"], rows)
    indexes = inspect(database.write_engine).get_indexes("aggregate_awards")
    assert "ix_aggregate_awards_reversed" not in {index["name"] for index in indexes}
