"""Payment medium automation (the definition's ``payment_medium``): brand and type rules
fill in what the event left out, then the identifier is cut down before it is saved."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Protocol

# Read-only views of the ruleset definition's ``payment_medium`` (engine.model structs).


class LengthRange(Protocol):
    @property
    def min(self) -> int | None: ...
    @property
    def max(self) -> int | None: ...


class Condition(Protocol):
    @property
    def length(self) -> LengthRange | None: ...
    @property
    def begins_with(self) -> str | None: ...
    @property
    def ends_with(self) -> str | None: ...
    @property
    def regex(self) -> str | None: ...


class BrandRule(Protocol):
    @property
    def brand(self) -> str: ...
    @property
    def when(self) -> Condition: ...


class TypeRule(Protocol):
    @property
    def type(self) -> str: ...
    @property
    def when(self) -> Condition: ...


class IdentifierAdjustment(Protocol):
    @property
    def keep(self) -> str: ...
    @property
    def characters(self) -> int | None: ...


class Rules(Protocol):
    @property
    def brand_rules(self) -> Sequence[BrandRule]: ...
    @property
    def type_rules(self) -> Sequence[TypeRule]: ...
    @property
    def identifier_adjustment(self) -> IdentifierAdjustment: ...


def matches(condition: Condition, identifier: str) -> bool:
    """Simple conditions (length range inclusive, begins with, ends with: all given must
    hold) or an advanced regular expression (searched from the start, ``re.fullmatch``
    when anchored is up to the analyst)."""
    if condition.regex is not None:
        return re.search(condition.regex, identifier) is not None
    if condition.length is not None:
        low, high = condition.length.min, condition.length.max
        if (low is not None and len(identifier) < low) or (
            high is not None and len(identifier) > high
        ):
            return False
    if condition.begins_with is not None and not identifier.startswith(condition.begins_with):
        return False
    return not (condition.ends_with is not None and not identifier.endswith(condition.ends_with))


def adjust_identifier(identifier: str, keep: str, characters: int | None) -> str:
    """``keep: first|last`` N characters, or ``all``."""
    if keep == "first" and characters is not None:
        return identifier[:characters]
    if keep == "last" and characters is not None:
        return identifier[-characters:] if characters else ""
    return identifier


def automate(medium: dict[str, Any], rules: Rules) -> dict[str, Any]:
    """Brand/type from the first matching rule when missing, then the adjustment."""
    identifier = medium.get("identifier")
    if identifier is None:
        return medium
    result = dict(medium)
    if result.get("brand") is None:
        result["brand"] = next(
            (rule.brand for rule in rules.brand_rules if matches(rule.when, identifier)), None
        )
    if result.get("type") is None:
        result["type"] = next(
            (rule.type for rule in rules.type_rules if matches(rule.when, identifier)), None
        )
    adjustment = rules.identifier_adjustment
    result["identifier"] = adjust_identifier(identifier, adjustment.keep, adjustment.characters)
    return {key: value for key, value in result.items() if value is not None}
