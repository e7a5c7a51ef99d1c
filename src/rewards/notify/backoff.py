"""When to try a failed delivery again: exponential backoff with full jitter (AWS's
"Exponential Backoff and Jitter"): the n-th retry waits a uniformly random time between
0 and min(cap, base * 2^(n-1)), or longer when the receiver asked (``Retry-After``). With
the defaults (10 s base, 6 h cap, 20 attempts, a day at most) a delivery a receiver never
takes is dead-lettered after about a day."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    base_seconds: float
    cap_seconds: float
    max_attempts: int
    give_up_seconds: float

    def delay(
        self, failed_attempts: int, random: Callable[[], float], asked: float | None = None
    ) -> float:
        ceiling = min(self.cap_seconds, self.base_seconds * 2 ** (failed_attempts - 1))
        return max(random() * ceiling, asked or 0.0)

    def exhausted(self, failed_attempts: int, seconds_since_first: float) -> bool:
        return failed_attempts >= self.max_attempts or seconds_since_first >= self.give_up_seconds
