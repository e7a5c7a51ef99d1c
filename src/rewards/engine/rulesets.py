"""A loaded ruleset folder (``Rulesets``) and the problems that refuse one.

``loader.load_rulesets`` builds it; the evaluator, the explainer, offers, runs and the
API read it. Compiling to durable-rules and the engine host happen here on first use."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from pathlib import Path
from zoneinfo import ZoneInfo

from rewards.engine.adapter import EngineHost
from rewards.engine.compiler import CompiledRulesets, compile_rulesets
from rewards.engine.model import CLASSIFICATION_EVENT_TYPES, Definition, Merchant, Offer, Unit
from rewards.engine.sources import Position, SourceMap


@dataclass(frozen=True)
class RulesetProblem:
    """One mistake in a ruleset file, with its 1-based position. A ``warning`` does not
    refuse the folder (``rewards rulesets check --strict`` treats it as a mistake)."""

    file: str
    line: int
    column: int
    message: str
    warning: bool = False

    def __str__(self) -> str:
        kind = "warning: " if self.warning else ""
        return f"{self.file}:{self.line}:{self.column}: {kind}{self.message}"


class RulesetLoadError(Exception):
    """The folder was refused; ``errors`` holds every problem found, in file order, and
    ``warnings`` what would only have been warned about."""

    def __init__(
        self, errors: list[RulesetProblem], warnings: list[RulesetProblem] | None = None
    ) -> None:
        self.errors = errors
        self.warnings = warnings or []
        super().__init__("\n".join(str(error) for error in errors))


class Rulesets:
    """One loaded, validated and compiled ruleset folder (immutable once built).

    ``version`` identifies the exact file contents; every award records it. The engine
    host is created on first use (loading with examples creates it at once); a reload
    builds a new ``Rulesets`` with its own host and the caller swaps the reference.
    """

    def __init__(
        self,
        *,
        path: Path,
        version: str,
        loaded_at: datetime,
        files: list[str],
        definition: Definition,
        offers: list[Offer],
        sources: dict[str, SourceMap] | None = None,
        warnings: list[RulesetProblem] | None = None,
    ) -> None:
        self.path = path
        self.version = version
        self.loaded_at = loaded_at
        self.files = files
        self.definition = definition
        self.offers = offers
        self._sources = sources or {}
        self.warnings = warnings or []  # not refusing: no examples, sub-cent amounts, ...
        self._units = {unit.code: unit for unit in definition.units}
        self._groups = {unit.group for unit in definition.units}
        self._classification_types = {
            item.code: frozenset(item.types) for item in definition.event_classifications
        }
        self._offers_by_id = {offer.id: offer for offer in offers}
        self._merchants = {merchant.id: merchant for merchant in definition.merchants}
        self._unit_merchants = {
            unit: merchant for merchant in definition.merchants for unit in merchant.units
        }
        self._terminal_merchants: dict[str, list[Merchant]] = {}
        for merchant in definition.merchants:
            for terminal in merchant.terminals:
                self._terminal_merchants.setdefault(terminal, []).append(merchant)
        self._host: EngineHost | None = None
        self._host_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<Rulesets {self.version} files={len(self.files)} offers={len(self.offers)}>"

    # --- helpers for offers, intake and runs ---

    @cached_property
    def time_zone(self) -> ZoneInfo:
        return ZoneInfo(self.definition.time_zone)

    def offer(self, offer_id: str) -> Offer | None:
        return self._offers_by_id.get(offer_id)

    def offers_for_event_type(self, event_type: str) -> list[Offer]:
        """Offers whose classification evaluates this event type, in file order."""
        return [
            o for o in self.offers if event_type in CLASSIFICATION_EVENT_TYPES[o.classification]
        ]

    def award_windows(self, event_type: str) -> dict[str, int]:
        """offer id -> window_days, for the offers of this event type that have max_awards.

        ``offers.evaluation`` counts the contact's awards of each such offer whose event was
        performed within the window before ``performed_on`` and passes the counts as
        ``EventFacts.awards_in_window``.
        """
        return {
            o.id: o.conditions.max_awards.window_days
            for o in self.offers_for_event_type(event_type)
            if o.conditions.max_awards is not None
        }

    def unit(self, code: str) -> Unit | None:
        return self._units.get(code)

    def merchant(self, merchant_id: str) -> Merchant | None:
        return self._merchants.get(merchant_id)

    def merchant_units(self, merchant_id: str) -> list[str]:
        """The merchant's units; none for a merchant the definition lacks."""
        merchant = self._merchants.get(merchant_id)
        return merchant.units if merchant is not None else []

    def merchant_of_unit(self, unit: str | None) -> Merchant | None:
        return self._unit_merchants.get(unit) if unit is not None else None

    def terminal_merchants(self, terminal: str) -> list[Merchant]:
        """The merchants listing this terminal, in definition order (a shared terminal
        has several)."""
        return self._terminal_merchants.get(terminal, [])

    def classification_allowed(self, code: str, event_type: str) -> bool:
        """Whether the event classification ``code`` is declared for ``event_type``."""
        return event_type in self._classification_types.get(code, ())

    def source_position(self, offer_id: str) -> tuple[str, int, int] | None:
        """(file, line, column) where the offer is written, for messages and tooling."""
        offer = self._offers_by_id.get(offer_id)
        if offer is None:
            return None
        sources = self._sources.get(offer.ruleset_file)
        index = [o.id for o in self.offers if o.ruleset_file == offer.ruleset_file].index(offer_id)
        position = sources.value(("offers", index)) if sources else Position(1, 1)
        return offer.ruleset_file, position.line, position.column

    # --- engine ---

    @cached_property
    def compiled(self) -> CompiledRulesets:
        return compile_rulesets(self.definition, self.offers)

    @property
    def host(self) -> EngineHost:
        """The engine host of this set, created (on the engine thread) on first use."""
        if self._host is None:
            with self._host_lock:
                if self._host is None:
                    self._host = EngineHost(self.compiled.rulesets)
        return self._host
