"""Time-ordered ids (rewards.db.ids): UUID version 7, increasing in the order they are
made, stamped with the moment asked for."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta

from rewards.db.ids import TimeOrderedIds, time_ordered_id


def test_ids_are_version_7_uuids_in_the_order_they_are_made() -> None:
    ids = [time_ordered_id() for _ in range(5000)]  # many within one millisecond
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    for text in ids[:10]:
        parsed = uuid.UUID(text)
        assert parsed.version == 7 and parsed.variant == uuid.RFC_4122 and str(parsed) == text


def test_an_id_carries_the_moment_it_is_made_for() -> None:
    moment = datetime(2025, 6, 1, 12, 30, 15, 250000, tzinfo=UTC)
    ids = TimeOrderedIds(random=random.Random(1).getrandbits).next
    made = ids(moment)
    assert int(uuid.UUID(made).hex[:12], 16) == int(moment.timestamp() * 1000)
    later = ids(moment + timedelta(milliseconds=1))
    earlier = ids(moment - timedelta(days=1))  # a generator never goes back
    assert made < later < earlier


def test_a_seeded_generator_makes_the_same_ids() -> None:
    moment = datetime(2025, 6, 1, tzinfo=UTC)
    first = TimeOrderedIds(random=random.Random(7).getrandbits)
    second = TimeOrderedIds(random=random.Random(7).getrandbits)
    assert [first.next(moment) for _ in range(3)] == [second.next(moment) for _ in range(3)]
