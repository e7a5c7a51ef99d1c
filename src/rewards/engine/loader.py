"""Loading the ruleset folder: parse, validate, cross-check, compile, run the examples.

``load_rulesets(path)`` reads ``definition.yaml`` and every ``<classification>.yaml``
in the folder (other files are ignored). Each file is checked against its JSON Schema
(:mod:`rewards.engine.schema`), then against the definition and the other files
(cross-checks), then compiled into durable-rules rulesets and every embedded example is
run through the real engine. Problems are collected across all files and stages that
can run; any problem refuses the whole folder with ``RulesetLoadError``, whose
``errors`` say ``file:line:column: message`` (line and column of the YAML key or value).
Examples only run when everything else is valid.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar, cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import jsonschema
import msgspec

from rewards.engine import globs
from rewards.engine.examples import check_rulesets
from rewards.engine.model import (
    AGGREGATE_CLASSIFICATIONS,
    CLASSIFICATION_EVENT_TYPES,
    CLASSIFICATIONS,
    BrandRule,
    Definition,
    Offer,
    Range,
    RulesetFile,
    TypeRule,
)
from rewards.engine.rulesets import RulesetLoadError, RulesetProblem, Rulesets
from rewards.engine.schema import condition_keys, definition_schema, ruleset_schema
from rewards.engine.sources import Path_, Position, SourceMap, format_path, parse

DEFINITION_FILE = "definition.yaml"

_T = TypeVar("_T")


@dataclass
class _Source:
    """One parsed file with its positions, and a helper to report problems in it."""

    name: str
    display: str
    sources: SourceMap
    problems: list[RulesetProblem]
    data: Any = None

    def error(self, path: Path_, message: str, *, at_key: bool = False) -> None:
        position = self.sources.key(path) if at_key else self.sources.value(path)
        self.report(position, f"{format_path(path)}: {message}" if path else message)

    def report(self, position: Position, message: str) -> None:
        self.problems.append(RulesetProblem(self.display, position.line, position.column, message))


def _folder_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_file() and p.name.endswith(".yaml"))


def folder_version(path: str | Path) -> str:
    """The ``version`` the folder would load as (a hash of its files), without loading it:
    cheap enough to poll. Raises ``OSError`` when the folder cannot be read."""
    folder = Path(path)
    return _version({name: (folder / name).read_bytes() for name in _folder_files(folder)})


def load_rulesets(path: str | Path, *, run_examples: bool = True) -> Rulesets:
    """Load, validate and compile the ruleset folder, or raise ``RulesetLoadError``.

    Creates the set's engine host (on the engine thread) and, unless ``run_examples`` is
    false, runs every offer's examples through it.
    """
    folder = Path(path)
    problems: list[RulesetProblem] = []

    def display(name: str) -> str:
        return str(folder / name)

    if not folder.is_dir():
        raise RulesetLoadError([RulesetProblem(str(folder), 1, 1, "not a folder")])
    names = _folder_files(folder)
    contents: dict[str, bytes] = {name: (folder / name).read_bytes() for name in names}
    version = _version(contents)

    # --- definition ---
    definition: Definition | None = None
    if DEFINITION_FILE not in contents:
        problems.append(
            RulesetProblem(display(DEFINITION_FILE), 1, 1, "the definition file is missing")
        )
    else:
        source = _parse(
            DEFINITION_FILE, display(DEFINITION_FILE), contents[DEFINITION_FILE], problems
        )
        if source is not None and _validate(source, _definition_validator()):
            definition = _convert(source, Definition)
            if definition is not None:
                _check_definition(definition, source)
                if any(p.file == source.display for p in problems):
                    definition = None

    # --- classification files ---
    files: list[tuple[_Source, RulesetFile]] = []
    for name in names:
        if name == DEFINITION_FILE:
            continue
        stem = name.removesuffix(".yaml")
        source = _parse(name, display(name), contents[name], problems)
        if source is None:
            continue
        if stem not in CLASSIFICATIONS:
            source.report(
                Position(1, 1),
                f"'{name}' is not a classification file: name it after one of {', '.join(CLASSIFICATIONS)}",
            )
        if not _validate(source, _ruleset_validator()):
            continue
        ruleset = _convert(source, RulesetFile)
        if ruleset is None:
            continue
        if ruleset.classification != stem:
            source.error(
                ("classification",),
                f"'{ruleset.classification}' does not match the file name '{name}'",
            )
        files.append((source, ruleset))

    # --- offers and cross-checks ---
    offers: list[Offer] = []
    seen_ids: dict[str, tuple[str, Position]] = {}
    for source, ruleset in files:
        for index, offer in enumerate(ruleset.offers):
            evaluation = offer.evaluation or (
                "batch" if ruleset.classification in AGGREGATE_CLASSIFICATIONS else "immediate"
            )
            offer = msgspec.structs.replace(
                offer,
                evaluation=evaluation,
                classification=ruleset.classification,
                ruleset_file=source.name,
            )
            offers.append(offer)
            position = source.sources.value(("offers", index, "id"))
            if offer.id in seen_ids:
                first_file, first = seen_ids[offer.id]
                source.error(
                    ("offers", index, "id"),
                    f"duplicate offer id '{offer.id}' (first used at {first_file}:{first.line}:{first.column})",
                )
            else:
                seen_ids[offer.id] = (source.display, position)
            _check_offer(offer, ("offers", index), source, definition)
    _check_exclusive_groups(offers, {s.name: s for s, _ in files})

    if problems:
        raise RulesetLoadError(_ordered(problems))

    assert definition is not None
    sources = {source.name: source.sources for source, _ in files}
    rulesets = Rulesets(
        path=folder,
        version=version,
        loaded_at=datetime.now(UTC),
        files=names,
        definition=definition,
        offers=offers,
        sources=sources,
    )
    problems.extend(check_rulesets(rulesets, display, run_examples=run_examples))
    if problems:
        raise RulesetLoadError(_ordered(problems))
    return rulesets


def _ordered(problems: list[RulesetProblem]) -> list[RulesetProblem]:
    unique = list(dict.fromkeys(problems))
    return sorted(unique, key=lambda p: (p.file, p.line, p.column))


def _version(contents: dict[str, bytes]) -> str:
    digest = hashlib.sha256()
    for name in sorted(contents):
        digest.update(name.encode() + b"\0")
        digest.update(hashlib.sha256(contents[name]).digest())
    return digest.hexdigest()[:12]


def _parse(name: str, shown: str, content: bytes, problems: list[RulesetProblem]) -> _Source | None:
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as error:
        problems.append(RulesetProblem(shown, 1, 1, f"not UTF-8 text ({error.reason})"))
        return None
    data, sources, errors = parse(text)
    source = _Source(name, shown, sources, problems, data)
    for problem in errors:
        source.report(problem.position, problem.message)
    if data is None or errors:
        return None
    if not isinstance(data, dict):
        source.report(Position(1, 1), "the file must be a mapping of keys to values")
        return None
    return source


_VALIDATORS: dict[str, jsonschema.protocols.Validator] = {}


def _definition_validator() -> jsonschema.protocols.Validator:
    if "definition" not in _VALIDATORS:
        _VALIDATORS["definition"] = _validator(definition_schema())
    return _VALIDATORS["definition"]


def _ruleset_validator() -> jsonschema.protocols.Validator:
    if "ruleset" not in _VALIDATORS:
        _VALIDATORS["ruleset"] = _validator(ruleset_schema())
    return _VALIDATORS["ruleset"]


def _validator(schema: dict[str, Any]) -> jsonschema.protocols.Validator:
    cls = jsonschema.Draft202012Validator  # the schemas are checked by the tests, not here
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def _validate(source: _Source, validator: jsonschema.protocols.Validator) -> bool:
    """Report every schema error of the file at its source position; True when valid."""
    valid = True
    for error in validator.iter_errors(source.data):
        valid = False
        path = tuple(error.absolute_path)
        if error.validator == "additionalProperties" and isinstance(error.instance, dict):
            # the schema holding additionalProperties is an object schema (a mapping)
            schema = cast("Mapping[str, Any]", error.schema)
            allowed = set(schema.get("properties", {}))
            for key in error.instance:
                if key not in allowed:
                    source.error((*path, key), _unknown_key(path, key, source), at_key=True)
        elif error.validator == "required":
            source.error(path, error.message.replace("is a required property", "is required"))
        else:
            source.error(path, error.message)
    return valid


def _unknown_key(path: Path_, key: str, source: _Source) -> str:
    if len(path) == 3 and path[0] == "offers" and path[2] == "conditions":
        classification = (
            source.data.get("classification") if isinstance(source.data, dict) else None
        )
        if classification in CLASSIFICATIONS and key in _ALL_CONDITION_KEYS:
            allowed = ", ".join(condition_keys(classification))
            return (
                f"condition '{key}' is not allowed for {classification} offers (allowed: {allowed})"
            )
        return f"unknown condition '{key}'"
    return f"unknown key '{key}'"


_ALL_CONDITION_KEYS = frozenset(k for c in CLASSIFICATIONS for k in condition_keys(c))


def _convert(source: _Source, kind: type[_T]) -> _T | None:
    try:
        return msgspec.convert(source.data, kind)
    except msgspec.ValidationError as error:  # the schema should have caught it
        source.report(Position(1, 1), f"invalid content: {error}")
        return None


# --- cross-checks ------------------------------------------------------------------


def _check_definition(definition: Definition, source: _Source) -> None:
    try:
        ZoneInfo(definition.time_zone)
    except (ZoneInfoNotFoundError, ValueError):
        source.error(("time_zone",), f"unknown time zone '{definition.time_zone}'")
    if definition.currency in definition.exchange_rates:
        source.error(("exchange_rates", definition.currency), "the business currency needs no rate")
    _unique(source, ("units",), [u.code for u in definition.units], "unit code")
    codes = {u.code for u in definition.units}
    for index, unit in enumerate(definition.units):
        if unit.group in codes:
            source.error(("units", index, "group"), f"group '{unit.group}' is also a unit code")
    _unique(
        source,
        ("event_classifications",),
        [c.code for c in definition.event_classifications],
        "event classification",
    )
    _unique(source, ("kpis",), [k.code for k in definition.kpis], "KPI")
    _check_merchants(definition, source)
    medium = definition.payment_medium
    rule_lists: tuple[tuple[str, Sequence[BrandRule | TypeRule]], ...] = (
        ("brand_rules", medium.brand_rules),
        ("type_rules", medium.type_rules),
    )
    for key, rules in rule_lists:
        for index, rule in enumerate(rules):
            path = ("payment_medium", key, index, "when")
            when = rule.when
            if when.regex is not None:
                if when.length or when.begins_with or when.ends_with:
                    source.error(
                        path, "'regex' stands alone: leave out length, begins_with and ends_with"
                    )
                try:
                    re.compile(when.regex)
                except re.error as error:
                    source.error((*path, "regex"), f"invalid regular expression: {error}")
            if when.length and when.length.min is not None and when.length.max is not None:
                if when.length.min > when.length.max:
                    source.error((*path, "length"), "min is greater than max")
    adjustment = medium.identifier_adjustment
    if adjustment.keep != "all" and adjustment.characters is None:
        source.error(
            ("payment_medium", "identifier_adjustment"),
            f"keep: {adjustment.keep} needs 'characters'",
        )
    spend = definition.spend_requests
    if spend.min_amount is not None and spend.max_amount is not None:
        if spend.min_amount > spend.max_amount:
            source.error(("spend_requests", "min_amount"), "min_amount is greater than max_amount")
    automation = definition.purchase_automation
    for key, types in (
        ("invoice_types", automation.invoice_types),
        ("credit_note_types", automation.credit_note_types),
    ):
        _unique(source, ("purchase_automation", key), types, "invoice type")
    invoice_types = set(automation.invoice_types)
    for index, code in enumerate(automation.credit_note_types):
        if code in invoice_types:
            source.error(
                ("purchase_automation", "credit_note_types", index),
                f"'{code}' is also listed in invoice_types: a type either creates a purchase "
                "or credits one",
            )


def _check_merchants(definition: Definition, source: _Source) -> None:
    """Merchants name units of the definition; a unit belongs to at most one merchant
    (a terminal may be shared: its transactions go to each merchant listing it)."""
    _unique(source, ("merchants",), [m.id for m in definition.merchants], "merchant id")
    codes = {u.code for u in definition.units}
    owner: dict[str, str] = {}
    for index, merchant in enumerate(definition.merchants):
        path = ("merchants", index)
        for j, unit in enumerate(merchant.units):
            if unit not in codes:
                source.error((*path, "units", j), f"unknown unit '{unit}' (declare it in units)")
            elif unit in owner and owner[unit] != merchant.id:
                source.error(
                    (*path, "units", j),
                    f"unit '{unit}' already belongs to merchant '{owner[unit]}'",
                )
            else:
                owner[unit] = merchant.id
        _unique(source, (*path, "units"), merchant.units, "unit")
        _unique(source, (*path, "terminals"), merchant.terminals, "terminal")


def _unique(source: _Source, path: Path_, values: list[str], what: str) -> None:
    seen: set[str] = set()
    for index, value in enumerate(values):
        if value in seen:
            source.error((*path, index), f"duplicate {what} '{value}'")
        seen.add(value)


def _check_range(source: _Source, path: Path_, value: Range | None) -> None:
    if (
        value is not None
        and value.min is not None
        and value.max is not None
        and value.min > value.max
    ):
        source.error(
            path, f"the range is inverted: min {value.min} is greater than max {value.max}"
        )


def _minutes(text: str) -> int:
    hours, minutes = text.split(":")
    return int(hours) * 60 + int(minutes)


def _check_offer(offer: Offer, path: Path_, source: _Source, definition: Definition | None) -> None:
    conditions = offer.conditions
    cpath = (*path, "conditions")
    award = offer.award
    if offer.classification != "referral":
        if (award.amount is None) == (award.percentage is None):
            source.error(
                (*path, "award"), "the award needs exactly one of 'amount' or 'percentage'"
            )
    if (
        offer.valid
        and offer.valid.from_
        and offer.valid.until
        and offer.valid.from_ > offer.valid.until
    ):
        source.error((*path, "valid"), "'from' is after 'until'")
    for key in ("transaction_amount", "total_amount", "count", "quantity", "amount"):
        _check_range(source, (*cpath, key), getattr(conditions, key))
    for index, product in enumerate(conditions.products or []):
        _check_range(source, (*cpath, "products", index, "amount"), product.amount)
        try:
            globs.validate(product.sku)
        except globs.GlobError as error:
            source.error(
                (*cpath, "products", index, "sku"), f"invalid glob '{product.sku}': {error}"
            )
    for index, website in enumerate(conditions.websites or []):
        try:
            globs.validate(website)
        except globs.GlobError as error:
            source.error((*cpath, "websites", index), f"invalid glob '{website}': {error}")
    if conditions.schedule:
        for index, hours in enumerate(conditions.schedule.hours):
            hpath = (*cpath, "schedule", "hours", index)
            if hours.from_ == "24:00":
                source.error((*hpath, "from"), "'from' must be before 24:00")
            elif _minutes(hours.from_) >= _minutes(hours.until):
                source.error(hpath, f"'from' {hours.from_} must be before 'until' {hours.until}")
    if conditions.segments:
        both = set(conditions.segments.include) & set(conditions.segments.exclude)
        if both:
            source.error(
                (*cpath, "segments"), f"segments both included and excluded: {sorted(both)}"
            )
    for index, example in enumerate(offer.examples):
        if (example.expect is None) == (not example.not_awarded):
            source.error(
                (*path, "examples", index),
                "an example needs exactly one of 'expect' or 'not_awarded: true'",
            )
    if definition is None:
        return
    units = {u.code for u in definition.units} | {u.group for u in definition.units}
    for index, code in enumerate(conditions.units or []):
        if code not in units:
            source.error((*cpath, "units", index), f"unknown unit or unit group '{code}'")
    merchants = {m.id for m in definition.merchants}
    for index, merchant_id in enumerate(conditions.merchants or []):
        if merchant_id not in merchants:
            source.error((*cpath, "merchants", index), f"unknown merchant '{merchant_id}'")
    declared = {c.code: c.types for c in definition.event_classifications}
    event_types = CLASSIFICATION_EVENT_TYPES[offer.classification]
    for index, code in enumerate(conditions.event_classifications or []):
        if code not in declared:
            source.error(
                (*cpath, "event_classifications", index), f"unknown event classification '{code}'"
            )
        elif not set(declared[code]) & set(event_types):
            source.error(
                (*cpath, "event_classifications", index),
                f"event classification '{code}' is declared for {', '.join(declared[code])} events, "
                f"not {' or '.join(event_types)}",
            )
    kpis = {k.code for k in definition.kpis}
    for index, target in enumerate(conditions.kpis or []):
        if target.kpi not in kpis:
            source.error((*cpath, "kpis", index, "kpi"), f"unknown KPI '{target.kpi}'")


def _check_exclusive_groups(offers: Iterable[Offer], sources: dict[str, _Source]) -> None:
    """Equal priorities in one group across files would let file names decide: refuse."""
    first: dict[tuple[str, int], Offer] = {}
    indexes: dict[str, int] = {}
    counters: dict[str, int] = {}
    for offer in offers:
        indexes[offer.id] = counters.get(offer.ruleset_file, 0)
        counters[offer.ruleset_file] = indexes[offer.id] + 1
        if offer.exclusive_group is None:
            continue
        key = (offer.exclusive_group, offer.priority)
        other = first.setdefault(key, offer)
        if other is not offer and other.ruleset_file != offer.ruleset_file:
            sources[offer.ruleset_file].error(
                ("offers", indexes[offer.id], "priority"),
                f"offer '{offer.id}' and '{other.id}' ({other.ruleset_file}) share exclusive group "
                f"'{offer.exclusive_group}' and priority {offer.priority}: give them different "
                "priorities so precedence is explicit",
            )


__all__ = ["RulesetLoadError", "RulesetProblem", "Rulesets", "folder_version", "load_rulesets"]
