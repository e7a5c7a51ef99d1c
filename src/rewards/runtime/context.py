"""What the use cases (intake, money, offers, runs, analyst) need besides the session:
settings, the evaluator with its loaded rulesets, the schemas, the clock. (The OTP limits
are the app's, ``app.state.otp_limits``: the API counts them around the use cases.)"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sqlmodel import Session

from rewards.schemas import SchemaRegistry
from rewards.settings import Settings

if TYPE_CHECKING:
    from rewards.engine import Evaluator, Rulesets


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class Runtime:
    """Shared by every request of one process. The evaluator (and the rulesets it
    carries) is replaced as a whole on reload by one reference assignment: a request that
    takes ``runtime.evaluator`` once sees exactly one ruleset version."""

    settings: Settings
    evaluator: Evaluator
    schemas: SchemaRegistry
    clock: Callable[[], datetime] = _utcnow
    reload_errors: tuple[str, ...] = ()  # of the last refused reload, as file:line: message
    # What every evaluation run does first, in a transaction of its own, wired by the
    # process (app, CLI): card transactions whose match window passed become purchases
    # (intake.processor.record_overdue); runs cannot import intake, which sits above them.
    before_run: Callable[[Session, Runtime], object] | None = None

    @property
    def rulesets(self) -> Rulesets:
        return self.evaluator.rulesets

    def now(self) -> datetime:
        return self.clock()
