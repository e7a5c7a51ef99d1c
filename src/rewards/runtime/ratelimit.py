"""Abuse limits on OTPs, counted by every worker process together on shared counters
(runtime.rate_counters: the database, or Redis when configured).

- Issuing: 300 per API key per minute and 5 per contact per 5 minutes (which bounds
  the codes a contact has live at once).
- Guessing: the wrong guesses (an OTP that is unknown, used or expired: a 422) per API
  key and per client of a key (``settings.otp_guesses_per_key`` and ``..._per_client``).
  A miss has no contact to be counted against (the code is the identifier), so the
  key's budget is what bounds guessing overall; docs/otp.md has the odds of a lucky
  guess. Each OTP a request carries reserves one attempt from both budgets before the
  request's write transaction; after it, the attempts that identified a contact or
  were never made are given back. Only misses stay counted: a till that guesses spends
  its own budget (and the key's), never that of a till whose customers read out valid
  codes.

Counting runs in short transactions of its own, before and after the request's, never
inside it: a refused request's savepoint is rolled back (its miss with it), and on
SQLite a second write transaction inside the first would wait for itself. Requests
without an OTP never touch the counters. Identification refuses an OTP no reservation
covers (``OtpAttempts``), so a path that forgot to reserve fails loudly instead of
letting guesses through.

The caller (a hash of the API key, never the key, and the client's address) reaches
the use cases through a context variable set by the authentication middleware.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime

from anyio import to_thread

from rewards.errors import DomainError
from rewards.runtime.rate_counters import Counter, Limit, RateCounters, Taken
from rewards.settings import Budget, Settings

log = logging.getLogger("rewards.ratelimit")


@dataclass(frozen=True)
class Caller:
    key: str  # caller_id of the API key
    client: str  # the client's address, as the server sees it (a trusted proxy's header)

    @property
    def client_of_key(self) -> str:
        return f"{self.key} {self.client}"


_ANONYMOUS = Caller(key="anonymous", client="unknown")  # frozen: a safe shared default
CALLER: ContextVar[Caller] = ContextVar("rewards_caller", default=_ANONYMOUS)


def caller_id(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()[:16]


OTP_ISSUE_PER_CONTACT = Limit("otp-issue-contact", 5, 300)
OTP_ISSUE_PER_KEY = Limit("otp-issue-key", 300, 60)


def _guesses(name: str, budget: Budget) -> Limit:
    return Limit(name, budget.count, budget.seconds)


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


class OtpAttempts:
    """The OTP identifications one request may make: ``taken.count`` attempts reserved
    before its transaction. Each identifier that tries its code uses one and is a miss
    until it identifies a contact. An identifier is charged once, also when its request
    is identified again (a batch transaction that failed is retried request by request);
    the identifiers are kept, so a freed one's id() never stands for a new one."""

    def __init__(self, taken: Taken, refusal: RateLimited) -> None:
        self.taken = taken
        self._refusal = refusal
        self._tried: dict[int, tuple[object, bool]] = {}  # id -> (identifier, identified)

    def attempt(self, identifier: object) -> None:
        """Use an attempt for ``identifier``; 429 when the reservation is spent."""
        if id(identifier) not in self._tried:
            if len(self._tried) >= self.taken.count:
                raise self._refusal
            self._tried[id(identifier)] = (identifier, False)

    def identified(self, identifier: object) -> None:
        self._tried[id(identifier)] = (identifier, True)

    @property
    def misses(self) -> int:
        return sum(1 for _, hit in self._tried.values() if not hit)


OTP_ATTEMPTS: ContextVar[OtpAttempts | None] = ContextVar("rewards_otp_attempts", default=None)


def otp_attempts() -> OtpAttempts:
    """The current request's reservation (identification calls it for every OTP)."""
    attempts = OTP_ATTEMPTS.get()
    if attempts is None:
        raise RuntimeError("an OTP identification without a reservation (OtpLimits.attempts)")
    return attempts


class OtpLimits:
    """The OTP limits of one deployment on its shared counters. ``clock`` is the
    runtime's (tests move it)."""

    def __init__(
        self, counters: RateCounters, settings: Settings, clock: Callable[[], datetime]
    ) -> None:
        self.counters = counters
        self._per_key = _guesses("otp-guesses-key", settings.otp_guesses_per_key)
        self._per_client = _guesses("otp-guesses-client", settings.otp_guesses_per_client)
        self._clock = clock

    def count_issue(self, contact_id: str) -> None:
        """Count one OTP request of the caller for ``contact_id``; over a limit: 429."""
        now = self._clock()
        counters = [
            Counter.at(OTP_ISSUE_PER_KEY, CALLER.get().key, now),
            Counter.at(OTP_ISSUE_PER_CONTACT, contact_id, now),
        ]
        taken = self.counters.take(counters, 1, 1)
        if not taken.count:
            raise RateLimited(taken.fullest.limit, taken.fullest.reset_in(now))

    @contextmanager
    def attempts(self, wanted: int, *, partial: bool = False) -> Iterator[None]:
        """Around a request's transaction (which must not have begun) that tries
        ``wanted`` OTPs: reserve them, or 429; give back what did not miss afterwards.
        ``partial`` (bulk): reserve what the budgets have room for, and each OTP past
        it is refused (429) when it is tried."""
        if not wanted:  # no OTP: the counters are not touched
            yield
            return
        attempts = self._reserve(CALLER.get(), wanted, partial)
        token = OTP_ATTEMPTS.set(attempts)
        try:
            yield
        finally:
            OTP_ATTEMPTS.reset(token)
            self._settle(attempts)

    @asynccontextmanager
    async def attempts_async(self, wanted: int) -> AsyncIterator[None]:
        """``attempts`` for an async handler: counted on a worker thread, and the
        reservation travels with the context to the intake writer. A cancelled handler
        gives nothing back: the writer may still try its request."""
        if not wanted:
            yield
            return
        attempts = await to_thread.run_sync(self._reserve, CALLER.get(), wanted, False)
        token = OTP_ATTEMPTS.set(attempts)
        try:
            yield
        except Exception:
            await to_thread.run_sync(self._settle, attempts)
            raise
        else:
            await to_thread.run_sync(self._settle, attempts)
        finally:
            OTP_ATTEMPTS.reset(token)

    def _reserve(self, caller: Caller, wanted: int, partial: bool) -> OtpAttempts:
        now = self._clock()
        counters = [
            Counter.at(self._per_key, caller.key, now),
            Counter.at(self._per_client, caller.client_of_key, now),
        ]
        taken = self.counters.take(counters, wanted, 1 if partial else wanted)
        refusal = RateLimited(taken.fullest.limit, taken.fullest.reset_in(now))
        if not taken.count and not partial:
            raise refusal
        return OtpAttempts(taken, refusal)

    def _settle(self, attempts: OtpAttempts) -> None:
        """Give back every reserved attempt but the misses. A give-back that fails is
        logged, not answered: the request's own outcome stands (it may be written), and
        the attempts stay counted until their window ends."""
        unused = attempts.taken.count - attempts.misses
        if unused:
            try:
                self.counters.give_back(attempts.taken, unused)
            except Exception:
                log.exception(
                    "%d OTP attempts not given back: counted until the window ends", unused
                )
