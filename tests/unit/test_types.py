"""``types.sqlite_text`` (evaluation runs' bulk inserts) stores exactly what SQLAlchemy
stores for a ``UTCDateTime`` on SQLite."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy.dialects import sqlite

from rewards.db.types import UTCDateTime, sqlite_text


def test_sqlite_text_is_what_sqlalchemy_binds() -> None:
    column = UTCDateTime()
    dialect = sqlite.dialect()
    processor = column._cached_bind_processor(dialect)  # the TypeDecorator's, then DATETIME's
    assert processor is not None
    rng = random.Random(3)
    zones = [UTC, timezone(timedelta(hours=3)), timezone(timedelta(hours=-5, minutes=-30))]
    moments = [datetime(2026, 3, 1, 12, 0, tzinfo=UTC), datetime(999, 1, 2, tzinfo=UTC)]
    moments += [
        datetime(2020, 1, 1, tzinfo=rng.choice(zones))
        + timedelta(
            seconds=rng.randrange(10**9), microseconds=rng.choice([0, rng.randrange(10**6)])
        )
        for _ in range(2000)
    ]
    for moment in moments:
        expected = processor(moment)
        assert sqlite_text(moment) == expected


def test_a_naive_datetime_is_refused() -> None:
    with pytest.raises(ValueError, match="naive"):
        sqlite_text(datetime(2026, 3, 1, 12, 0))
