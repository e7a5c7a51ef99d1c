"""Loading the ruleset folder: parse, validate, cross-check, compile, run the examples.

``load_rulesets(path)`` reads ``definition.yaml`` and every ``<classification>.yaml``
in the folder (other files are ignored). Each file is checked against its JSON Schema
(:mod:`rewards.engine.schema`), then against the definition and the other files
(cross-checks), then compiled into durable-rules rulesets and every embedded example is
run through the real engine. Problems are collected across all files and stages that
can run; any problem refuses the whole folder with ``RulesetLoadError``, whose
``errors`` say ``file:line:column: message`` (line and column of the YAML key or value).
A value the schema refuses is left out (its key, or its condition) and the cross-checks
run on the rest, so one pass reports every mistake it can. Problems inside an offer
name it by its id (``offer basket-over-50: award.percentage: ...``). Examples only run
when everything else is valid.

Warnings do not refuse the folder (``Rulesets.warnings``, logged once per load): offers
without examples, fixed amounts below a cent, percentages above the definition's
``checks.max_percentage``, validity that ended, and a definition without catalogues
(``segments``, ``catalogue``: then the segments and product codes offers name are not
checked).
"""

from __future__ import annotations

import copy
import hashlib
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar, cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import jsonschema
import msgspec

from rewards.domain.money import quantize
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
    TypeRule,
)
from rewards.engine.rulesets import RulesetLoadError, RulesetProblem, Rulesets
from rewards.engine.schema import ID_PATTERN, condition_keys, definition_schema, ruleset_schema
from rewards.engine.sources import Path_, Position, SourceMap, describe_path, parse

DEFINITION_FILE = "definition.yaml"
log = logging.getLogger(__name__)

_T = TypeVar("_T")


@dataclass
class _Source:
    """One parsed file with its positions, and a helper to report problems in it."""

    name: str
    display: str
    sources: SourceMap
    problems: list[RulesetProblem]
    data: Any = None
    warnings: list[RulesetProblem] = field(default_factory=list)

    def error(self, path: Path_, message: str, *, at_key: bool = False) -> None:
        position = self.sources.key(path) if at_key else self.sources.value(path)
        self.report(position, self._where(path, message))

    def warn(self, path: Path_, message: str) -> None:
        position = self.sources.value(path)
        self.warnings.append(
            RulesetProblem(
                self.display, position.line, position.column, self._where(path, message), True
            )
        )

    def report(self, position: Position, message: str) -> None:
        self.problems.append(RulesetProblem(self.display, position.line, position.column, message))

    def _where(self, path: Path_, message: str) -> str:
        where = describe_path(path, self.offer_id(path))
        return f"{where}: {message}" if where else message

    def offer_id(self, path: Path_) -> str | None:
        """The id of the offer ``path`` points into, when it is written and valid."""
        if len(path) < 2 or path[0] != "offers" or not isinstance(path[1], int):
            return None
        offers = self.data.get("offers") if isinstance(self.data, dict) else None
        if not isinstance(offers, list) or path[1] >= len(offers):
            return None
        offer = offers[path[1]]
        offer_id = offer.get("id") if isinstance(offer, dict) else None
        return offer_id if isinstance(offer_id, str) and _ID.fullmatch(offer_id) else None


_ID = re.compile(ID_PATTERN)


def _folder_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_file() and p.name.endswith(".yaml"))


def folder_version(path: str | Path) -> str:
    """The ``version`` the folder would load as (a hash of its files), without loading it:
    cheap enough to poll. Raises ``OSError`` when the folder cannot be read."""
    folder = Path(path)
    return _version({name: (folder / name).read_bytes() for name in _folder_files(folder)})


def load_rulesets(
    path: str | Path,
    *,
    run_examples: bool = True,
    today: date | None = None,
    log_warnings: bool = True,
) -> Rulesets:
    """Load, validate and compile the ruleset folder, or raise ``RulesetLoadError``.

    Creates the set's engine host (on the engine thread) and, unless ``run_examples`` is
    false, runs every offer's examples through it. ``today`` (default: today in the
    business time zone) is the day validity is compared with for the "ended" warning;
    warnings are logged unless ``log_warnings`` is false (``rewards rulesets check``
    prints them itself).
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
    definition_source: _Source | None = None
    unreliable: set[str] = set()  # definition keys left out for their mistakes
    if DEFINITION_FILE not in contents:
        problems.append(
            RulesetProblem(display(DEFINITION_FILE), 1, 1, "the definition file is missing")
        )
    else:
        definition_source = _parse(
            DEFINITION_FILE, display(DEFINITION_FILE), contents[DEFINITION_FILE], problems
        )
        if definition_source is not None:
            wrong = _validate(definition_source, _definition_validator())
            unreliable = {str(p[0]) for p in wrong if p}
            data = {k: v for k, v in definition_source.data.items() if k not in unreliable}
            if not any(not p for p in wrong):
                definition = _convert(definition_source, data, Definition, quiet=bool(wrong))
            if definition is not None:
                _check_definition(definition, definition_source, unreliable)

    # --- classification files ---
    files: list[tuple[_Source, str, list[tuple[int, Offer, frozenset[str]]]]] = []
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
        wrong = _validate(source, _ruleset_validator())
        classification = source.data.get("classification")
        if any(p[:1] in ((), ("classification",)) or p == ("offers",) for p in wrong) or (
            classification not in CLASSIFICATIONS
        ):
            continue  # the file's shape is wrong: nothing to cross-check
        if classification != stem:
            source.error(
                ("classification",),
                f"'{classification}' does not match the file name '{name}'",
            )
        files.append((source, classification, _offers(source, wrong)))

    # --- offers and cross-checks ---
    offers: list[Offer] = []
    grouped: list[tuple[int, Offer]] = []  # for the exclusive groups, when known
    seen_ids: dict[str, tuple[str, Position]] = {}
    for source, classification, items in files:
        for index, offer, left_out in items:
            evaluation = offer.evaluation or (
                "batch" if classification in AGGREGATE_CLASSIFICATIONS else "immediate"
            )
            offer = msgspec.structs.replace(
                offer,
                evaluation=evaluation,
                classification=classification,
                ruleset_file=source.name,
            )
            offers.append(offer)
            if not left_out & {"exclusive_group", "priority"}:
                grouped.append((index, offer))
            position = source.sources.value(("offers", index, "id"))
            if "id" in left_out:
                pass
            elif offer.id in seen_ids:
                first_file, first = seen_ids[offer.id]
                source.error(
                    ("offers", index, "id"),
                    f"duplicate offer id '{offer.id}' (first used at {first_file}:{first.line}:{first.column})",
                )
            else:
                seen_ids[offer.id] = (source.display, position)
            _check_offer(offer, ("offers", index), source, definition, unreliable, left_out)
    _check_exclusive_groups(grouped, {s.name: s for s, _, _ in files})
    _check_prior_awards(files, {offer.id for offer in offers})

    # --- warnings ---
    if definition is not None and definition_source is not None:
        _warn_catalogues(definition, definition_source)
        day = today or _today(definition)
        for source, _, items in files:
            for index, offer, left_out in items:
                _warn_offer(offer, ("offers", index), source, definition, day, left_out)
    warnings = [w for source, _, _ in files for w in source.warnings]
    if definition_source is not None:
        warnings += definition_source.warnings
    warnings = _ordered(warnings)

    if problems:
        raise RulesetLoadError(_ordered(problems), warnings)

    assert definition is not None
    sources = {source.name: source.sources for source, _, _ in files}
    rulesets = Rulesets(
        path=folder,
        version=version,
        loaded_at=datetime.now(UTC),
        files=names,
        definition=definition,
        offers=offers,
        sources=sources,
        warnings=warnings,
    )
    problems.extend(check_rulesets(rulesets, display, run_examples=run_examples))
    if problems:
        raise RulesetLoadError(_ordered(problems), warnings)
    if log_warnings:
        for warning in warnings:
            log.warning("rulesets %s: %s", version, warning)
    return rulesets


def _offers(source: _Source, wrong: list[Path_]) -> list[tuple[int, Offer, frozenset[str]]]:
    """The offers of a classification file whose shape is right, each with the keys left
    out for their mistakes (``conditions.<key>`` for a condition): the cross-checks run on
    the rest. An offer missing a required key, or not a mapping, is left out whole."""
    left_out: dict[int, set[str]] = {}
    whole: set[int] = set()
    for path in wrong:
        if len(path) < 2 or path[0] != "offers" or not isinstance(path[1], int):
            continue
        index, rest = path[1], path[2:]
        if not rest:
            whole.add(index)
        elif rest[0] == "conditions" and len(rest) > 1:
            left_out.setdefault(index, set()).add(f"conditions.{rest[1]}")
        else:
            left_out.setdefault(index, set()).add(str(rest[0]))
    result = []
    for index, raw in enumerate(source.data.get("offers") or []):
        if index in whole or not isinstance(raw, dict):
            continue
        keys = left_out.get(index, set())
        data = copy.copy(raw)
        conditions = data.get("conditions")
        for key in keys:
            if key.startswith("conditions."):
                if isinstance(conditions, dict):
                    conditions = {k: v for k, v in conditions.items() if k != key.split(".", 1)[1]}
                    data["conditions"] = conditions
            else:
                data.pop(key, None)
        # stand-ins for required keys left out, so the rest can be checked
        data.setdefault("id", f"offers-{index}")
        data.setdefault("name", "?")
        data.setdefault("award", {"amount": 1})
        offer = _convert(source, data, Offer, quiet=bool(keys))
        if offer is not None:
            result.append((index, offer, frozenset(keys)))
    return result


def _today(definition: Definition) -> date:
    try:
        zone = ZoneInfo(definition.time_zone)
    except (ZoneInfoNotFoundError, ValueError):
        zone = ZoneInfo("UTC")
    return datetime.now(zone).date()


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


def _validate(source: _Source, validator: jsonschema.protocols.Validator) -> list[Path_]:
    """Report every schema error of the file at its source position; the paths of the
    values in error (an unknown key: the key's path), none when the file is valid."""
    wrong: list[Path_] = []
    for error in validator.iter_errors(source.data):
        path = tuple(error.absolute_path)
        if error.validator == "additionalProperties" and isinstance(error.instance, dict):
            # the schema holding additionalProperties is an object schema (a mapping)
            schema = cast("Mapping[str, Any]", error.schema)
            allowed = set(schema.get("properties", {}))
            for key in error.instance:
                if key not in allowed:
                    source.error((*path, key), _unknown_key(path, key, source), at_key=True)
                    wrong.append((*path, key))
            continue
        wrong.append(path)
        if error.validator == "required":
            source.error(path, error.message.replace("is a required property", "is required"))
        else:
            source.error(path, _schema_message(error))
    return wrong


#: What a value of the wrong type must be, in words.
_TYPE_WORDS = {
    "boolean": "must be true or false",
    "number": "must be a number",
    "integer": "must be a whole number",
    "string": "must be text",
    "array": "must be a list",
    "object": "must be a mapping of keys to values",
}


def _shown(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "nothing"
    return repr(value) if isinstance(value, str) else str(value)


def _schema_message(error: jsonschema.ValidationError) -> str:
    """The schema's refusal in words for people (no regular expressions, no type names)."""
    schema = error.schema if isinstance(error.schema, dict) else {}
    if error.validator == "type":
        expected = cast("str | list[str]", error.validator_value)
        first = expected if isinstance(expected, str) else expected[0]
        if first in _TYPE_WORDS:
            return f"{_TYPE_WORDS[first]}, not {_shown(error.instance)}"
    if error.validator == "pattern" and "patternErrorMessage" in schema:
        return f"{schema['patternErrorMessage']}, not {_shown(error.instance)}"
    bounds = {
        "minimum": "at least",
        "exclusiveMinimum": "more than",
        "maximum": "at most",
        "exclusiveMaximum": "less than",
    }
    if error.validator in bounds and not isinstance(error.instance, bool):
        return f"must be {bounds[str(error.validator)]} {error.validator_value}, not {_shown(error.instance)}"
    if error.validator == "const" and error.validator_value is True:
        return f"must be true, not {_shown(error.instance)}"
    if error.validator == "oneOf" and "description" in schema:
        return f"{_shown(error.instance)} is not valid: {schema['description']}"
    return error.message


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


def _convert(source: _Source, data: Any, kind: type[_T], *, quiet: bool = False) -> _T | None:
    """``data`` as ``kind``; None when it does not fit (said unless ``quiet``: the
    schema's errors were reported already)."""
    try:
        return msgspec.convert(data, kind)
    except msgspec.ValidationError as error:  # the schema should have caught it
        if not quiet:
            source.report(Position(1, 1), f"invalid content: {error}")
        return None


# --- cross-checks ------------------------------------------------------------------


def _check_definition(
    definition: Definition, source: _Source, unreliable: set[str] | frozenset[str] = frozenset()
) -> None:
    """Cross-checks of the definition; ``unreliable``: keys left out for their mistakes."""
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
    if "units" not in unreliable:
        _check_merchants(definition, source)
    if definition.segments is not None:
        segment_codes = [segment.code for segment in definition.segments.codes]
        _unique(source, ("segments", "codes"), segment_codes, "segment")
    if definition.catalogue is not None:
        skus = [product.sku for product in definition.catalogue]
        _unique(source, ("catalogue",), skus, "product")
        for index, sku in enumerate(skus):
            try:
                globs.validate(sku)
            except globs.GlobError as error:
                source.error(("catalogue", index, "sku"), f"invalid pattern '{sku}': {error}")
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


def _check_offer(
    offer: Offer,
    path: Path_,
    source: _Source,
    definition: Definition | None,
    unreliable: set[str] | frozenset[str] = frozenset(),
    left_out: frozenset[str] = frozenset(),
) -> None:
    """Check one offer; ``unreliable``: definition keys left out for their own mistakes
    (what offers name there is not checked); ``left_out``: the offer's keys left out."""
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
    _check_names(offer, cpath, source, definition, unreliable)


def _check_names(
    offer: Offer,
    cpath: Path_,
    source: _Source,
    definition: Definition,
    unreliable: set[str] | frozenset[str],
) -> None:
    """What the offer names (units, merchants, classifications, KPIs, segments, product
    codes) is declared in the definition."""
    conditions = offer.conditions
    units = {u.code for u in definition.units} | {u.group for u in definition.units}
    for index, code in enumerate(conditions.units or []):
        if code not in units and "units" not in unreliable:
            source.error(
                (*cpath, "units", index),
                f"unknown unit or unit group '{code}' (declare it in units of definition.yaml)",
            )
    merchants = {m.id for m in definition.merchants}
    for index, merchant_id in enumerate(conditions.merchants or []):
        if merchant_id not in merchants and "merchants" not in unreliable:
            source.error(
                (*cpath, "merchants", index),
                f"unknown merchant '{merchant_id}' (declare it in merchants of definition.yaml)",
            )
    segments = definition.segments
    if segments is not None and not segments.allow_unknown and "segments" not in unreliable:
        codes = {s.code for s in segments.codes}
        for key in ("include", "exclude"):
            for index, code in enumerate(getattr(conditions.segments, key, None) or []):
                if code not in codes:
                    source.error(
                        (*cpath, "segments", key, index),
                        f"unknown segment '{code}' (declare it in segments of definition.yaml, "
                        "or set allow_unknown: true there)",
                    )
    catalogue = definition.catalogue
    if catalogue is not None and "catalogue" not in unreliable:
        for index, product in enumerate(conditions.products or []):
            if not _in_catalogue(product.sku, [entry.sku for entry in catalogue]):
                source.error(
                    (*cpath, "products", index, "sku"),
                    f"'{product.sku}' matches no product of the catalogue "
                    "(add the product to catalogue in definition.yaml, or correct the code)",
                )
    if "event_classifications" in unreliable:
        return
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
        if target.kpi not in kpis and "kpis" not in unreliable:
            source.error((*cpath, "kpis", index, "kpi"), f"unknown KPI '{target.kpi}'")


def _check_prior_awards(
    files: list[tuple[_Source, str, list[tuple[int, Offer, frozenset[str]]]]], ids: set[str]
) -> None:
    """An example's ``prior_awards`` written as {offer id: count} names offers that exist."""
    for source, _, items in files:
        for index, offer, _ in items:
            for number, example in enumerate(offer.examples):
                given = example.event.get("prior_awards")
                for offer_id in given if isinstance(given, dict) else ():
                    if offer_id not in ids:
                        source.error(
                            (
                                "offers",
                                index,
                                "examples",
                                number,
                                "event",
                                "prior_awards",
                                offer_id,
                            ),
                            f"no offer has the id '{offer_id}'",
                        )


def _in_catalogue(pattern: str, entries: list[str]) -> bool:
    """Whether a product code or pattern of an offer names something of the catalogue: it
    matches an entry (a code, or a pattern's text), or an entry's pattern matches it."""
    try:
        mine = globs.to_regex(pattern)
    except globs.GlobError:
        return True  # reported as an invalid glob
    for entry in entries:
        if entry == pattern or mine.fullmatch(entry):
            return True
        try:
            if globs.to_regex(entry).fullmatch(pattern):
                return True
        except globs.GlobError:
            continue  # reported in the definition
    return False


# --- warnings ----------------------------------------------------------------------


def _warn_catalogues(definition: Definition, source: _Source) -> None:
    missing = [key for key in ("segments", "catalogue") if getattr(definition, key) is None]
    if missing:
        what = {"segments": "the segments", "catalogue": "the product codes"}
        source.warn(
            (),
            f"no catalogue: {' and '.join(what[k] for k in missing)} offers name are not "
            f"checked (declare {' and '.join(missing)} in definition.yaml)",
        )


def _warn_offer(
    offer: Offer,
    path: Path_,
    source: _Source,
    definition: Definition,
    today: date,
    left_out: frozenset[str],
) -> None:
    if not offer.examples and "examples" not in left_out:
        source.warn(
            path,
            "no examples: add one that earns and one that just misses, so every check tries "
            "the offer",
        )
    award = offer.award
    if "award" not in left_out:
        amounts: list[tuple[Path_, Decimal | None]] = [
            (("amount",), award.amount),
            (("max",), award.max),
            (("referred", "amount"), award.referred.amount if award.referred else None),
            (("referrer", "amount"), award.referrer.amount if award.referrer else None),
        ]
        for key, value in amounts:
            if value is not None and value != quantize(value):
                source.warn(
                    (*path, "award", *key),
                    f"{value} has more than 2 decimals: it is paid rounded to the cent "
                    f"({quantize(value)})",
                )
        ceiling = definition.checks.max_percentage
        if award.percentage is not None and award.percentage > ceiling:
            source.warn(
                (*path, "award", "percentage"),
                f"{award.percentage}% is above the usual ceiling of {ceiling}% "
                "(checks: max_percentage in definition.yaml)",
            )
    if offer.valid and offer.valid.until and offer.valid.until < today:
        source.warn(
            (*path, "valid", "until"),
            f"the offer ended on {offer.valid.until.isoformat()} (before today, "
            f"{today.isoformat()}): remove it or move its dates",
        )


def _check_exclusive_groups(
    offers: Iterable[tuple[int, Offer]], sources: dict[str, _Source]
) -> None:
    """Equal priorities in one group across files would let file names decide: refuse.
    ``offers``: (index in its file, offer)."""
    first: dict[tuple[str, int], Offer] = {}
    for index, offer in offers:
        if offer.exclusive_group is None:
            continue
        key = (offer.exclusive_group, offer.priority)
        other = first.setdefault(key, offer)
        if other is not offer and other.ruleset_file != offer.ruleset_file:
            sources[offer.ruleset_file].error(
                ("offers", index, "priority"),
                f"offer '{offer.id}' and '{other.id}' ({other.ruleset_file}) share exclusive group "
                f"'{offer.exclusive_group}' and priority {offer.priority}: give them different "
                "priorities so precedence is explicit",
            )


__all__ = ["RulesetLoadError", "RulesetProblem", "Rulesets", "folder_version", "load_rulesets"]
