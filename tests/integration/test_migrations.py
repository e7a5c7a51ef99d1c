"""The Alembic migrations build exactly the tables the code declares, and 0005 carries
the pending aggregate periods of an existing database over."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text

from rewards.db.database import Database
from rewards.db.migrate import current_revision, head_revision, upgrade
from rewards.db.tables import metadata
from tests.conftest import BOTH


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
