"""One message, whatever the broker: its body checked against the event type's schema
and recorded through the intake writer (``intake.group_commit``), as the API does; the
verdict says what the broker is told.

- ``Recorded``: committed (or an idempotent replay of an event already recorded): ack.
- ``Refused``: the body or the event is refused for good (a 4xx problem: invalid JSON,
  a schema error, an unknown contact, an external reference taken with another body):
  dead-letter it with its problem details, then ack the original.
- ``Failed``: anything else (the database is down, a 429 or 5xx refusal): the message
  is handed back for redelivery after a delay, as often as it takes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import msgspec

from rewards.errors import DomainError, FieldError, Problem, refusal
from rewards.intake.group_commit import GroupCommit
from rewards.intake.identify import otp_identifiers
from rewards.runtime.context import Runtime
from rewards.runtime.private_logs import describe
from rewards.runtime.ratelimit import OtpLimits
from rewards.wire import EVENT_BODIES

log = logging.getLogger("rewards.consume")

UnknownEventType = refusal("unknown_event_type", "No event type of that name", 422)
MAX_RETRY_DELAY = 60.0
_problem_json = msgspec.json.Encoder()


@dataclass(frozen=True)
class Recorded:
    created: bool  # False: a replay of an event recorded before


@dataclass(frozen=True)
class Refused:
    problem: Problem

    @property
    def json(self) -> bytes:
        return _problem_json.encode(self.problem)


@dataclass(frozen=True)
class Failed:
    error: str


Verdict = Recorded | Refused | Failed


def retry_delay(deliveries: int) -> float:
    """Seconds before the ``deliveries``-th failed delivery is tried again: 1, 2, 4, ...
    up to a minute."""
    return min(MAX_RETRY_DELAY, 2.0 ** max(0, min(deliveries - 1, 6)))


class EventIntake:
    """What ``rewards consume`` does with each message's event type and body."""

    def __init__(self, runtime: Runtime, intake: GroupCommit, otp_limits: OtpLimits) -> None:
        self.runtime = runtime
        self.intake = intake
        self.otp_limits = otp_limits

    async def handle(self, event_type: str | None, body: bytes) -> Verdict:
        try:
            struct = EVENT_BODIES.get(event_type or "")
            if event_type is None or struct is None:
                raise UnknownEventType(
                    f"{event_type!r} is not an event type: one of {', '.join(EVENT_BODIES)}",
                    errors=[FieldError(path="type", message="unknown event type")],
                )
            payload = self.runtime.schemas.decode(f"events/{event_type}", body, struct)
            if wanted := otp_identifiers(payload):  # counted as the API counts them
                async with self.otp_limits.attempts_async(wanted):
                    recorded = await self.intake.record(event_type, payload)
            else:
                recorded = await self.intake.record(event_type, payload)
        except DomainError as error:
            if 400 <= error.status < 500 and error.status != 429:
                return Refused(error.to_problem())
            return Failed(f"{error.code}: {error.detail}")
        except Exception as error:  # the database, most likely: try again later
            log.warning("recording a %s event failed: %s", event_type, describe(error))
            return Failed(describe(error))
        return Recorded(created=recorded.created)
