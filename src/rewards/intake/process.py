"""What a process that records events builds besides its database, outside the app
(``rewards evaluate``, ``rewards consume``): the runtime, as ``create_app`` builds it."""

from __future__ import annotations

from rewards.engine import Evaluator, load_rulesets
from rewards.intake.processor import record_overdue
from rewards.runtime.context import Runtime
from rewards.schemas import shared_registry
from rewards.settings import Settings


def build_runtime(settings: Settings) -> Runtime:
    """The rulesets of ``settings`` loaded into an evaluator, the process's schema
    registry, and overdue card transactions recorded before every evaluation run."""
    return Runtime(
        settings=settings,
        evaluator=Evaluator(load_rulesets(settings.rulesets_dir)),
        schemas=shared_registry(),
        before_run=record_overdue,
    )
