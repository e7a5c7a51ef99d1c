"""Time-ordered row ids: UUID version 7 (RFC 9562).

48 bits of Unix milliseconds, a 12-bit sequence (increasing within a generator, so ids
made in the same millisecond still sort in the order they were made), 62 random bits.
Random (version 4) ids put every insert into an index on them, and into every index that
leads with them elsewhere (awards and ledger entries by event, links by award), at a
random place: at a million rows that is one page read and one page written per row and
index. Ids made in time order append instead. They are as unique and as opaque as any
UUID; nothing reads the time back out of them.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from datetime import datetime


def _os_random(bits: int) -> int:
    return int.from_bytes(os.urandom((bits + 7) // 8)) >> (-bits % 8)


class TimeOrderedIds:
    """UUID v7 strings, increasing within this generator (thread-safe).

    ``next()`` stamps the current time; ``next(at)`` the moment ``at`` (data made for
    another time, e.g. a benchmark's history). ``random(bits)`` gives the random bits
    (``random.Random(seed).getrandbits`` makes reproducible ids)."""

    def __init__(self, random: Callable[[int], int] = _os_random) -> None:
        self._random = random
        self._last = 0  # (milliseconds << 12) | sequence of the last id
        self._lock = threading.Lock()

    def next(self, at: datetime | None = None) -> str:
        milliseconds = time.time_ns() // 1_000_000 if at is None else int(at.timestamp() * 1000)
        stamp = milliseconds << 12
        with self._lock:
            self._last = stamp if stamp > self._last else self._last + 1
            last = self._last
        value = (last >> 12) << 80 | 0x7 << 76 | (last & 0xFFF) << 64 | 1 << 63 | self._random(62)
        text = f"{value:032x}"
        return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


_IDS = TimeOrderedIds()


def time_ordered_id() -> str:
    """A new UUID v7 string (this process's generator)."""
    return _IDS.next()
