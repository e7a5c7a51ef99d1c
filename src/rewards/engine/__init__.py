"""Reward offers as declarative files, evaluated by durable-rules.

Public surface: ``load_rulesets`` reads, validates and compiles a ruleset folder into
``Rulesets``; ``Evaluator`` decides the awards (``AwardDecision``) of one event described
by ``EventFacts``. Importing this package does no work (no engine host, no threads).
"""

from rewards.domain.decisions import AwardDecision, AwardLine
from rewards.engine.evaluator import Evaluator
from rewards.engine.facts import EventFacts, KpiValue, PeriodTotals, ProductLine
from rewards.engine.loader import load_rulesets
from rewards.engine.rulesets import RulesetLoadError, RulesetProblem, Rulesets

__all__ = [
    "AwardDecision",
    "AwardLine",
    "Evaluator",
    "EventFacts",
    "KpiValue",
    "PeriodTotals",
    "ProductLine",
    "RulesetLoadError",
    "RulesetProblem",
    "Rulesets",
    "load_rulesets",
]
