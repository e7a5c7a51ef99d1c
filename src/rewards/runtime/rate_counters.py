"""Rate counters shared by every process of a deployment: fixed windows counted in the
database (table ``rate_counters``) or, when ``REWARDS_REDIS_URL`` is set, in Redis.

Both stores take from several counters at once, atomically: a request is charged the
same count against each of its budgets (an API key's and a client's, say) or against
none, so concurrent requests of any number of workers never take more than a budget
holds. Each take or give-back is one short transaction of its own, never part of a
request's transaction (runtime.ratelimit says why).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Protocol

import redis
from sqlalchemy import Engine, bindparam, case, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite

from rewards.db.tables import RateCounter
from rewards.db.types import table_of
from rewards.errors import refusal

log = logging.getLogger("rewards.ratelimit")

RateLimitsUnavailable = refusal("rate_limits_unavailable", "Rate limits unavailable", 503)

_LONGEST_SUBJECT = 120  # longer subjects (a client address from a proxy header) are hashed


@dataclass(frozen=True)
class Limit:
    name: str
    limit: int
    window_seconds: int


@dataclass(frozen=True)
class Counter:
    """A limit counted for one subject in one fixed window (aligned to the epoch)."""

    limit: Limit
    subject: str
    window_start: int  # seconds since the epoch

    @classmethod
    def at(cls, limit: Limit, subject: str, now: datetime) -> Counter:
        if len(subject) > _LONGEST_SUBJECT:
            subject = "sha256:" + hashlib.sha256(subject.encode()).hexdigest()
        second = int(now.timestamp())
        return cls(limit, subject, second - second % limit.window_seconds)

    def reset_in(self, now: datetime) -> int:
        """Whole seconds until the window ends (at least 1)."""
        return max(1, self.window_start + self.limit.window_seconds - int(now.timestamp()))


@dataclass(frozen=True)
class Taken:
    """What a take charged: ``count`` to every counter of ``counters`` (in the windows
    the store counted them in), and the counter with the least room left, which a
    refusal names."""

    count: int
    counters: tuple[Counter, ...]
    fullest: Counter


class RateCounters(Protocol):
    def take(self, counters: Sequence[Counter], wanted: int, minimum: int) -> Taken:
        """Add the same count to every counter: ``wanted``, or as much as the fullest
        counter has room for; none when that is below ``minimum``."""
        ...

    def give_back(self, taken: Taken, count: int) -> None:
        """Take ``count`` of a take off its counters again (those still in its window)."""
        ...

    def close(self) -> None: ...


def _grant(rooms: Sequence[int], wanted: int, minimum: int) -> int:
    count = min(wanted, max(min(rooms), 0))
    return count if count >= minimum else 0


class SqlCounters:
    """Counters in the ``rate_counters`` table: one row per (limit, subject), reset in
    place when its window has passed. A take locks its rows in one order (PostgreSQL:
    the upsert's row locks, sorted; SQLite: the write transaction), so concurrent takes
    never overtake each other nor deadlock."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._table = table_of(RateCounter)
        columns = self._table.c
        self._give_back = (
            update(self._table)
            .where(
                columns.name == bindparam("counter_name"),
                columns.subject == bindparam("counter_subject"),
                columns.window_start == bindparam("counter_window"),
                columns.used >= bindparam("count"),
            )
            .values(used=columns.used - bindparam("count"))
        )

    def _claim(self, dialect: str, counters: Sequence[Counter]) -> Any:
        """Each counter's row made to exist in a window not older than the counter's
        (an older one starts again at 0), locked, with what it has used."""
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        columns = self._table.c
        statement = insert(self._table).values(
            [
                {
                    "name": c.limit.name,
                    "subject": c.subject,
                    "window_start": c.window_start,
                    "used": 0,
                }
                for c in counters
            ]
        )
        stale = columns.window_start < statement.excluded.window_start
        return statement.on_conflict_do_update(
            index_elements=[columns.name, columns.subject],
            set_={
                "window_start": case(
                    (stale, statement.excluded.window_start), else_=columns.window_start
                ),
                "used": case((stale, 0), else_=columns.used),
            },
        ).returning(columns.name, columns.subject, columns.window_start, columns.used)

    def take(self, counters: Sequence[Counter], wanted: int, minimum: int) -> Taken:
        ordered = sorted(counters, key=lambda c: (c.limit.name, c.subject))  # one lock order
        with self._engine.begin() as connection:
            rows = connection.execute(self._claim(connection.dialect.name, ordered)).all()
            stored = {(name, subject): (window, used) for name, subject, window, used in rows}
            counted = []
            rooms = []
            for counter in ordered:
                window, used = stored[(counter.limit.name, counter.subject)]
                counted.append(replace(counter, window_start=window))
                rooms.append(counter.limit.limit - used)
            count = _grant(rooms, wanted, minimum)
            if count:
                columns = self._table.c
                keys = [(c.limit.name, c.subject) for c in ordered]
                connection.execute(
                    update(self._table)
                    .where(tuple_(columns.name, columns.subject).in_(keys))
                    .values(used=columns.used + count)
                )
        fullest = counted[rooms.index(min(rooms))]
        return Taken(count=count, counters=tuple(counted), fullest=fullest)

    def give_back(self, taken: Taken, count: int) -> None:
        with self._engine.begin() as connection:
            connection.execute(
                self._give_back,
                [
                    {
                        "counter_name": c.limit.name,
                        "counter_subject": c.subject,
                        "counter_window": c.window_start,
                        "count": count,
                    }
                    for c in taken.counters
                ],
            )

    def close(self) -> None:
        """The engine belongs to the app's Database, which disposes of it."""


# KEYS: the counters' keys; ARGV: wanted, minimum, then per counter its limit and when
# its key expires (seconds since the epoch). Returns {count taken, 1-based fullest}.
_TAKE = """
local wanted, minimum = tonumber(ARGV[1]), tonumber(ARGV[2])
local room, fullest = nil, 1
for i, key in ipairs(KEYS) do
  local left = tonumber(ARGV[1 + 2 * i]) - tonumber(redis.call('GET', key) or '0')
  if room == nil or left < room then room, fullest = left, i end
end
local count = math.min(wanted, math.max(room, 0))
if count < minimum then count = 0 end
if count > 0 then
  for i, key in ipairs(KEYS) do
    redis.call('INCRBY', key, count)
    redis.call('EXPIREAT', key, ARGV[2 + 2 * i])
  end
end
return {count, fullest}
"""
# KEYS: the counters' keys; ARGV: the count to give back to each key still there.
_GIVE_BACK = """
for _, key in ipairs(KEYS) do
  if tonumber(redis.call('GET', key) or '0') >= tonumber(ARGV[1]) then
    redis.call('DECRBY', key, ARGV[1])
  end
end
return 0
"""
_EXPIRY_MARGIN = 60  # seconds a key outlives its window: workers' clocks differ a little


class RedisCounters:
    """Counters in Redis: one key per (limit, subject, window), expiring after its
    window; a take or give-back is one Lua script, which Redis runs alone. The keys
    share one hash tag, so a Redis Cluster keeps them on one node."""

    def __init__(self, url: str) -> None:
        self._client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        self._take = self._client.register_script(_TAKE)
        self._give = self._client.register_script(_GIVE_BACK)

    @staticmethod
    def _key(counter: Counter) -> str:
        return (
            f"{{rewards-ratelimit}}:{counter.limit.name}:{counter.subject}:{counter.window_start}"
        )

    def take(self, counters: Sequence[Counter], wanted: int, minimum: int) -> Taken:
        arguments: list[int] = [wanted, minimum]
        for c in counters:
            arguments += [c.limit.limit, c.window_start + c.limit.window_seconds + _EXPIRY_MARGIN]
        try:
            count, fullest = self._take(keys=[self._key(c) for c in counters], args=arguments)
        except redis.RedisError as error:
            raise _unavailable(error) from None
        return Taken(count=int(count), counters=tuple(counters), fullest=counters[int(fullest) - 1])

    def give_back(self, taken: Taken, count: int) -> None:
        try:
            self._give(keys=[self._key(c) for c in taken.counters], args=[count])
        except redis.RedisError as error:
            raise _unavailable(error) from None

    def close(self) -> None:
        self._client.close()


def _unavailable(error: redis.RedisError) -> Exception:
    """Fail closed: no OTP attempt while the counters are out of reach (a 503; the
    cause goes to the log, not to the caller)."""
    log.warning("Redis rate counters unreachable: %s", error)
    return RateLimitsUnavailable("The rate counters cannot be reached; try again shortly.")
