"""Abuse limits on OTPs: issuing (per contact, per API key) and using (per API key,
failures included, and per contact). Fixed windows counted in this process: with
several workers each keeps its own counters, so the effective limit is N x the figure
(documented; a shared store on PostgreSQL is the upgrade path).

The caller (a hash of the API key, never the key) reaches the use cases through a context
variable set by the authentication middleware; worker threads inherit it."""

from __future__ import annotations

import hashlib
import threading
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from math import ceil

from rewards.errors import DomainError

CALLER: ContextVar[str] = ContextVar("rewards_caller", default="anonymous")


def caller_id(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Limit:
    name: str
    limit: int
    window_seconds: int


OTP_ISSUE_PER_CONTACT = Limit("otp-issue-contact", 5, 300)
OTP_ISSUE_PER_KEY = Limit("otp-issue-key", 300, 60)
OTP_USE_PER_KEY = Limit("otp-use-key", 120, 60)
OTP_USE_PER_CONTACT = Limit("otp-use-contact", 10, 300)


class RateLimited(DomainError):
    status = 429
    code = "rate_limited"
    title = "Too many requests"

    def __init__(self, limit: Limit, reset_seconds: int) -> None:
        super().__init__(
            f"Limit {limit.name}: {limit.limit} per {limit.window_seconds} s; retry in {reset_seconds} s."
        )
        self.headers = {
            "RateLimit-Limit": str(limit.limit),
            "RateLimit-Remaining": "0",
            "RateLimit-Reset": str(reset_seconds),
            "Retry-After": str(reset_seconds),
        }


class RateLimiter:
    """Thread-safe fixed-window counters."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, str, int], int] = {}

    def hit(self, limit: Limit, subject: str, now: datetime) -> None:
        """Count one use of ``limit`` by ``subject``; over the limit: 429."""
        moment = now.timestamp()
        window = int(moment // limit.window_seconds)
        key = (limit.name, subject, window)
        with self._lock:
            if len(self._counts) > 100_000:  # old windows are dead weight
                self._counts = {k: v for k, v in self._counts.items() if k[2] >= window - 1}
            count = self._counts.get(key, 0) + 1
            self._counts[key] = count
        if count > limit.limit:
            raise RateLimited(limit, ceil((window + 1) * limit.window_seconds - moment))
