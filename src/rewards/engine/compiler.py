"""Offers -> durable-rules JSON rulesets, and ``EventFacts`` -> the facts those rules read.

One durable-rules ruleset per classification (named after it), one rule per offer
(named ``o<k>``, k = the offer's position among the offers of its classification); its
condition is an
``$and`` of the offer's conditions in the engine's own language. durable-rules fails
(error 303) when more than 64 rule paths match one fact in one ruleset (measured), so a
classification whose offers could together exceed ``MAX_PATHS`` simultaneous paths
(``simultaneous_paths``) is split into ``<classification>``, ``<classification>__2``...
in file order; a rule also fires once per matching ``$or`` alternative, so hits are
de-duplicated. The engine decides
every match; Python only flattens the event into a fact beforehand and computes amounts
afterwards. Evaluation runs assert an event into its event type's rulesets merged into
one (``merge_rulesets``), which the engine parses and matches once.

The event fact: the fields below are computed once per event and encoded once; the
same JSON (id ``"e"`` in session ``"0"``), with each ruleset's ``q<i>`` fields spliced
in, is asserted into every ruleset of the event type. A fact may hold at most 255 properties (measured): when an event type needs more
fields than ``MAX_FACT_FIELDS`` (many max_awards, KPI or aggregate offers), each ruleset
gets only the fields its rules read (``CompiledRulesets.fields``; compilation refuses a
single ruleset that needs more). The retract sends only ``{"sid", "id"}``: the engine
finds the stored fact by id.

======== ==================================================================== =========
field    meaning                                                              type
======== ==================================================================== =========
et       event type                                                           str
cls      event classification, "" when none                                   str
unit/ug  performed_by_unit and its group from the definition, "" when unknown str
seg      ``[""] + segments`` (the leading "" keeps ``$iall`` true on no       [str]
         segments: durable-rules' ``$iall`` is false on an empty array)
d        business-time-zone date of performed_on as YYYYMMDD                  int
wd, mod  weekday (0 = mon .. 6 = sun) and minute of the day, business zone    int
aw<c_k>  awards already given by offer k of classification c (its position   int
         in ``CLASSIFICATIONS``) in its max_awards window
tot      purchase total in cents                                              int
ln       purchase lines ``[{s: sku, a: line total in cents}]``                [obj]
pb/pt    payment medium brand / type, "" when none                            str
amt, ha  financial achievement amount in cents; ha = 1 when given, else 0     int
kv<j>    sum of KPI j's values (x100) over its products; kn<j> = entries      int
plat/act social media platform / action, "" when none                         str
web      web site URL, "" when none                                           str
ap<c_k>  period totals of aggregate offer c_k: ap = 1 when given, at = amount int
         in cents, ac = count x 100, aq = quantity x 100
q<i>     constants of the conditions of the ruleset asserted into (``Params``) int/str
======== ==================================================================== =========

Names depend only on the offer's classification and its position there, never on other
files: the compiled rules of a classification are the same JSON whatever happens to the
other files, so a reload re-uses the engine rulesets of every unchanged classification
(see :mod:`rewards.engine.adapter`). The constants of the conditions (amounts, dates,
hours, weekdays, counts, classification/unit/brand/platform codes) are not in the rules
either: each is a field ``q<i>`` of the facts asserted into that ruleset (``Params``),
so an edit of values re-uses the classification's engine ruleset too; only an edit of
the shape of the conditions (a condition added, a list grown, a glob, segment or
product changed) compiles to a new one.

Amounts are rounded half-up to cents before anything else (a percentage award is taken
of the rounded amount). Every number the engine compares is an integer (cents, or
hundredths for counts, quantities and KPI values): durable-rules compares doubles inexactly and a string with
a number as text. Range bounds are rounded inwards (min up, max down) to the cent,
which is exact because values are whole cents. Every field a rule reads is always
present with that type, and optional numbers carry a presence flag, so a missing value
can never satisfy a range by accident.

Per-line classifications (utilise_free_capacity, increase_revenue_product): the offer's
rule includes ``$iany`` over ``ln`` (the engine decides whether the offer applies at
all), and a second ruleset ``<classification>__lines`` holds, per offer, only its
product predicate over one line fact ``{s, a}``. Line facts are asserted (in one
``assert_facts`` call) only when an offer of that classification matched the event,
and the engine then says which lines each matched offer awards. That costs one small
extra call on the events that earn something instead of one full fact per line on
every event. Conditions are ordered cheap-and-selective first (single comparisons,
then ``$or`` memberships, then array tests): durable-rules expands ``$or`` into
alternative paths and stops a path at its first failing test.

Schedules and validity use ``Definition.time_zone``; SKU and website globs become
``$mt`` patterns (:mod:`rewards.engine.globs`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import msgspec

from rewards.domain.money import to_cents
from rewards.engine import globs
from rewards.engine.facts import EventFacts, PeriodTotals
from rewards.engine.model import (
    AGGREGATE_CLASSIFICATIONS,
    CLASSIFICATION_EVENT_TYPES,
    CLASSIFICATIONS,
    PER_LINE_CLASSIFICATIONS,
    WEEKDAYS,
    Definition,
    Offer,
    ProductCondition,
    Range,
)

Condition = dict[str, Any]
LINES_SUFFIX = "__lines"
SESSION = "0"
EVENT_FACT_ID = "e"
_HUNDRED = Decimal(100)
_AGGREGATE_FIELD = {
    "loyalty_transaction_amount": ("at", "total_amount"),
    "loyalty_transaction_number": ("ac", "count"),
    "loyalty_item_quantity": ("aq", "quantity"),
}


@dataclass(frozen=True)
class CompiledOffer:
    offer: Offer
    index: int  # position in Rulesets.offers (file order)
    rule: str  # rule name, "o<k>": k = position among the offers of its classification
    ruleset: str  # durable-rules ruleset name (the classification)
    per_line: bool
    aggregate: bool
    key: str = ""  # fact field suffix "<c>_<k>" (c = the classification's position)


@dataclass
class CompiledRulesets:
    """Everything the adapter registers and the evaluator needs to build facts."""

    rulesets: dict[str, dict[str, Any]]  # name -> {rule: {"all": [{"m": ...}], "run": rule}}
    offers: list[CompiledOffer]
    by_rule: dict[tuple[str, str], CompiledOffer]
    event_rulesets: dict[str, list[str]]  # event type -> per-event rulesets (aggregates excluded)
    aggregate_rulesets: dict[str, list[str]]  # event type -> aggregate rulesets
    time_zone: ZoneInfo
    unit_groups: dict[str, str]
    kpis: list[tuple[int, frozenset[str]]]  # (j, products; empty = all) for KPIs offers use
    kpi_index: dict[str, int] = field(default_factory=dict)
    windows: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # type -> (id, field)
    aggregates: dict[str, str] = field(default_factory=dict)  # offer id -> field suffix
    fields: dict[str, tuple[str, ...]] = field(default_factory=dict)  # ruleset -> its fact fields
    line_rulesets: dict[str, list[str]] = field(
        default_factory=dict
    )  # ruleset -> its line rulesets
    params: dict[str, dict[str, Any]] = field(default_factory=dict)  # ruleset -> Params values
    unit_merchants: dict[str, str] = field(default_factory=dict)  # unit -> its merchant
    paths: dict[str, int] = field(
        default_factory=dict
    )  # ruleset -> bound of paths matching at once
    _param_json: dict[str, str] = field(default_factory=dict, init=False, repr=False)
    max_params: int = field(default=0, init=False)  # the most Params of any ruleset

    def __post_init__(self) -> None:
        self.max_params = max(map(len, self.params.values()), default=0)
        # ',"q0":5000,...' per ruleset: spliced into the fact JSON before its closing brace
        self._param_json = {
            name: "," + _encode(values).decode()[1:-1] for name, values in self.params.items()
        }

    def payload(self, name: str, fact_json: str) -> str:
        """The JSON asserted into ruleset ``name``: the fact's, plus its ``Params``."""
        extra = self._param_json.get(name)
        return fact_json if extra is None else f"{fact_json[:-1]}{extra}}}"


def scaled(value: Decimal) -> int:
    """Decimal -> integer hundredths (cents), half-up."""
    return to_cents(value)


def _lower(bound: Decimal) -> int:
    return math.ceil(bound * _HUNDRED)


def _upper(bound: Decimal) -> int:
    return math.floor(bound * _HUNDRED)


Param = Callable[[Any], Any]  # a constant -> what the rule compares with (see Params)


def _inline(value: Any) -> Any:
    return value


class Params:
    """The constants of one ruleset's rules, compared as fact fields (``$m``).

    A rule reads ``{"$gte": {"tot": {"$m": "q0"}}}`` and every fact asserted into that
    ruleset carries ``"q0": 5000`` (``CompiledRulesets.params``), so the ruleset's JSON
    holds the shape of its conditions but not their values: an edit of amounts, dates,
    hours, counts or codes compiles to the same definition and a reload re-uses its
    engine ruleset, which durable-rules would otherwise leak (ENGINE-NOTES.md). Names
    are numbered in the order the rules use them, so they depend only on that shape;
    equal values are not merged for the same reason. Past ``limit`` (the fact property
    cap) values stay in the rules. Globs, segments and per-line conditions are always
    in the rules (``$mt`` patterns and ``$iany`` item tests take no field references).
    Cost: the engine parses the longer facts, about 5-10% more engine time per event
    (``evaluate_many`` of the bench purchases, measured with and without in one process).
    """

    def __init__(self, limit: int) -> None:
        self.values: dict[str, Any] = {}
        self._limit = limit

    def __call__(self, value: Any) -> Any:
        if len(self.values) >= self._limit:
            return value
        name = f"q{len(self.values)}"
        self.values[name] = value
        return {"$m": name}


def _range(name: str, value: Range | None, param: Param = _inline) -> list[Condition]:
    if value is None:
        return []
    conditions: list[Condition] = []
    if value.min is not None:
        conditions.append({"$gte": {name: param(_lower(value.min))}})
    if value.max is not None:
        conditions.append({"$lte": {name: param(_upper(value.max))}})
    return conditions


def _one_of(name: str, values: list[Any], param: Param = _inline) -> Condition:
    """Set membership: an ``$or`` of equalities (durable-rules has no ``$in``)."""
    unique = list(dict.fromkeys(values))
    if len(unique) == 1:
        return {name: param(unique[0])}
    return {"$or": [{name: param(value)} for value in unique]}


def _all(conditions: list[Condition]) -> Condition:
    if not conditions:
        return {"$ex": {"et": 1}}  # no conditions: every fact of the ruleset
    if len(conditions) == 1:
        return conditions[0]
    return {"$and": conditions}


def _any(conditions: list[Condition]) -> Condition:
    return conditions[0] if len(conditions) == 1 else {"$or": conditions}


def _item_test(test: Condition, guard: Condition) -> Condition:
    """The item test of ``$iany``/``$iall``, never ending in an ``$or``.

    durable-rules checks the type of the right operand of the node an item test ends
    in, and an ``$or`` node never sets it: whether ``create_ruleset`` then fails
    (error 102) depends on leftover heap bytes (rete.c ``createAlpha``). So an ``$or``
    item test becomes ``$and: [$or, guard]`` with a comparison every item passes.
    """
    if "$or" in test:
        return {"$and": [test, guard]}
    if "$and" in test and "$or" in test["$and"][-1]:
        return {"$and": [*test["$and"], guard]}
    return test


def _date(value: date) -> int:
    return value.year * 10000 + value.month * 100 + value.day


def _minutes(text: str) -> int:
    hours, minutes = text.split(":")
    return int(hours) * 60 + int(minutes)


def _product_predicate(products: list[ProductCondition], sku: str, amount: str) -> Condition:
    alternatives = []
    for product in products:
        parts = [
            {"$mt": {sku: globs.to_engine_pattern(product.sku)}},
            *_range(amount, product.amount),
        ]
        alternatives.append(_all(parts))
    return _any(alternatives)


def offer_condition(
    offer: Offer,
    n: int | str,
    kpi_index: dict[str, int],
    groups: set[str],
    param: Param = _inline,
) -> Condition:
    """The engine condition of one offer (event-level), cheap and selective tests first.

    ``n`` is the offer's fact field suffix (``CompiledOffer.key``); ``param`` turns a
    constant into what the rule compares with (``Params``; default: the constant)."""
    c = offer.conditions
    first: list[Condition] = []  # single comparisons: no $or fan-out in the network
    later: list[Condition] = []  # memberships ($or)
    arrays: list[Condition] = []  # $iany / $iall
    if offer.classification == "behaviour":
        if c.websites:
            first += [{"et": "web"}, {"$neq": {"web": ""}}]  # no URL: no website matches
            later.append(_any([{"$mt": {"web": globs.to_engine_pattern(w)}} for w in c.websites]))
        if c.platforms or c.actions:
            first.append({"et": "social_media"})
        if c.platforms:
            later.append(_one_of("plat", c.platforms, param))
        if c.actions:
            later.append(_one_of("act", c.actions, param))
    if c.event_classifications:
        later.insert(0, _one_of("cls", c.event_classifications, param))
    if c.amount is not None:
        first += [{"ha": 1}, *_range("amt", c.amount, param)]
    first += _range("tot", c.transaction_amount, param)
    for target in c.kpis or []:
        j = kpi_index[target.kpi]
        first += [{"$gte": {f"kn{j}": 1}}, {"$gte": {f"kv{j}": param(_lower(target.min))}}]
    if offer.classification in AGGREGATE_CLASSIFICATIONS:
        prefix, key = _AGGREGATE_FIELD[offer.classification]
        first += [{f"ap{n}": 1}, *_range(f"{prefix}{n}", getattr(c, key), param)]
    if c.schedule is not None:
        days = sorted({WEEKDAYS.index(day) for day in c.schedule.days})
        if days and len(days) < 7:
            later.append(_one_of("wd", days, param))
        windows = [
            [
                {"$gte": {"mod": param(_minutes(h.from_))}},
                {"$lt": {"mod": param(_minutes(h.until))}},
            ]
            for h in c.schedule.hours
        ]
        if len(windows) == 1:
            first += windows[0]
        elif windows:
            later.append(_any([_all(w) for w in windows]))
    if offer.valid is not None:
        if offer.valid.from_ is not None:
            first.append({"$gte": {"d": param(_date(offer.valid.from_))}})
        if offer.valid.until is not None:
            first.append({"$lte": {"d": param(_date(offer.valid.until))}})
    if c.max_awards is not None:
        first.append({"$lt": {f"aw{n}": param(c.max_awards.count)}})
    if c.payment_medium is not None:
        if c.payment_medium.brands:
            later.append(_one_of("pb", c.payment_medium.brands, param))
        if c.payment_medium.types:
            later.append(_one_of("pt", c.payment_medium.types, param))
    if c.units:
        later.append(
            _any(
                [
                    {"ug" if code in groups else "unit": param(code)}
                    for code in dict.fromkeys(c.units)
                ]
            )
        )
    if c.merchants:
        later.append(_one_of("mer", c.merchants, param))
    if c.products and offer.classification in PER_LINE_CLASSIFICATIONS:
        lines = _product_predicate(c.products, "$i.s", "$i.a")
        arrays.append({"$iany": {"ln": _item_test(lines, {"$ex": {"$i.s": 1}})}})
    if c.segments is not None:
        if c.segments.include:
            include = _any([{"$i": s} for s in dict.fromkeys(c.segments.include)])
            # the leading "" item never equals a segment code (minLength 1)
            arrays.append({"$iany": {"seg": _item_test(include, {"$neq": {"$i": ""}})}})
        if c.segments.exclude:
            arrays.append(
                {
                    "$iall": {
                        "seg": _item_test(
                            _all([{"$neq": {"$i": s}} for s in dict.fromkeys(c.segments.exclude)]),
                            {"$neq": {"$i": ""}},
                        )
                    }
                }
            )
    return _all(first + later + arrays)


def line_condition(offer: Offer) -> Condition:
    """The per-line rule of a per-line offer: its product predicate over one line fact."""
    if offer.conditions.products:
        return _product_predicate(offer.conditions.products, "s", "a")
    return {"$ex": {"s": 1}}  # no product condition: every line


MAX_FACT_FIELDS = 250  # durable-rules refuses facts of 256 properties or more (measured)
_OPERATORS = frozenset(
    {
        "$and",
        "$or",
        "$lt",
        "$lte",
        "$gt",
        "$gte",
        "$eq",
        "$neq",
        "$ex",
        "$nex",
        "$mt",
        "$imt",
        "$iany",
        "$iall",
    }
)


def _fields(condition: Any, found: set[str]) -> None:
    """Collect the fact fields a condition reads (item fields ``$i...`` excluded)."""
    if isinstance(condition, list):
        for item in condition:
            _fields(item, found)
        return
    if not isinstance(condition, dict):
        return
    for key, value in condition.items():
        if key in ("$and", "$or"):
            _fields(value, found)
        elif key in _OPERATORS:
            for name in value:
                if not name.startswith("$i"):
                    found.add(name)
        elif not key.startswith("$i"):
            found.add(key)


class CompileError(ValueError):
    """An offer cannot be compiled (``offer_id`` says which)."""

    def __init__(self, offer_id: str, message: str) -> None:
        super().__init__(message)
        self.offer_id = offer_id


MAX_PATHS = 60  # durable-rules fails (error 303) past 64 alpha paths matching one fact
PARAM_LIMIT = 120  # Params per ruleset (each one is a property of the facts it gets)


def simultaneous_paths(offer: Offer, groups: set[str]) -> int:
    """Upper bound of the engine paths of this offer's rule one fact can match at once.

    ``$and`` over ``$or`` becomes one path per combination; equalities on one field
    (days, classifications, brands...) match at most one alternative, but a unit and its
    group, overlapping hour windows, several websites or product predicates can match
    together.
    """
    c = offer.conditions
    count = 1
    if c.units:
        count *= (
            2 if any(u in groups for u in c.units) and any(u not in groups for u in c.units) else 1
        )
    if c.schedule is not None and len(c.schedule.hours) > 1:
        count *= len(c.schedule.hours)
    if c.websites:
        count *= len(c.websites)
    return count


def _line_paths(offer: Offer) -> int:
    return len(offer.conditions.products or [None])


def _chunks(items: list[tuple[int, Offer]], weight: Any) -> list[list[tuple[int, Offer]]]:
    """Split offers (in file order) into groups whose path bounds add up to MAX_PATHS."""
    chunks: list[list[tuple[int, Offer]]] = [[]]
    used = 0
    for n, offer in items:
        paths = weight(offer)
        if paths > MAX_PATHS:
            raise CompileError(
                offer.id,
                f"these conditions can match {paths} ways at once; the rules engine handles at "
                f"most {MAX_PATHS} (fewer websites, hour windows or products in one offer)",
            )
        if used + paths > MAX_PATHS and chunks[-1]:
            chunks.append([])
            used = 0
        chunks[-1].append((n, offer))
        used += paths
    return chunks


def compile_rulesets(definition: Definition, offers: list[Offer]) -> CompiledRulesets:
    """Compile every offer into durable-rules JSON (see the module docstring)."""
    groups = {unit.group for unit in definition.units}
    used_kpis = list(dict.fromkeys(t.kpi for o in offers for t in (o.conditions.kpis or [])))
    kpi_index = {code: j for j, code in enumerate(used_kpis)}
    kpi_products = {k.code: frozenset(k.products) for k in definition.kpis}
    rulesets: dict[str, dict[str, Any]] = {}
    params: dict[str, Params] = {}
    paths: dict[str, int] = {}
    line_rulesets: dict[str, list[str]] = {}
    compiled: list[CompiledOffer | None] = [None] * len(offers)
    by_rule: dict[tuple[str, str], CompiledOffer] = {}
    windows: dict[str, list[tuple[str, str]]] = {}
    aggregates: dict[str, str] = {}
    event_rulesets: dict[str, list[str]] = {}
    aggregate_rulesets: dict[str, list[str]] = {}
    by_classification: dict[str, list[tuple[int, Offer]]] = {}
    for n, offer in enumerate(offers):
        by_classification.setdefault(offer.classification, []).append((n, offer))
    for classification, members in by_classification.items():
        code = CLASSIFICATIONS.index(classification)
        position = {n: k for k, (n, _) in enumerate(members)}
        per_line = classification in PER_LINE_CLASSIFICATIONS
        aggregate = classification in AGGREGATE_CLASSIFICATIONS
        for part, chunk in enumerate(_chunks(members, lambda o: simultaneous_paths(o, groups))):
            name = classification if part == 0 else f"{classification}__{part + 1}"
            target = aggregate_rulesets if aggregate else event_rulesets
            for event_type in CLASSIFICATION_EVENT_TYPES[classification]:
                target.setdefault(event_type, []).append(name)
            params[name] = Params(PARAM_LIMIT)
            paths[name] = sum(simultaneous_paths(offer, groups) for _, offer in chunk)
            for n, offer in chunk:
                rule = f"o{position[n]}"
                key = f"{code}_{position[n]}"
                item = CompiledOffer(offer, n, rule, name, per_line, aggregate, key)
                compiled[n] = item
                by_rule[(name, rule)] = item
                rulesets.setdefault(name, {})[rule] = {
                    "all": [{"m": offer_condition(offer, key, kpi_index, groups, params[name])}],
                    "run": rule,
                }
                if offer.conditions.max_awards is not None:
                    for event_type in CLASSIFICATION_EVENT_TYPES[classification]:
                        windows.setdefault(event_type, []).append((offer.id, f"aw{key}"))
                if aggregate:
                    aggregates[offer.id] = key
            if per_line:
                for line_part, line_chunk in enumerate(_chunks(chunk, _line_paths)):
                    lines = f"{name}{LINES_SUFFIX}" + (
                        "" if line_part == 0 else f"_{line_part + 1}"
                    )
                    for n, offer in line_chunk:
                        rule = f"o{position[n]}"
                        rulesets.setdefault(lines, {})[rule] = {
                            "all": [{"m": line_condition(offer)}],
                            "run": rule,
                        }
                        by_rule[(lines, rule)] = by_rule[(name, rule)]  # the chunk's offer
                line_rulesets[name] = [
                    f"{name}{LINES_SUFFIX}" + ("" if i == 0 else f"_{i + 1}")
                    for i in range(len(_chunks(chunk, _line_paths)))
                ]
    fields: dict[str, tuple[str, ...]] = {}
    for name, rules in rulesets.items():
        found: set[str] = set()
        for rule in rules.values():
            for pattern in rule["all"]:
                _fields(pattern["m"], found)
        fields[name] = ("sid", "id", *sorted(found))
        room = MAX_FACT_FIELDS - len(fields[name])
        if name in params and len(params[name].values) > room:  # values back into the rules
            params[name] = Params(max(room, 0))
            for rule in rules:
                item = by_rule[(name, rule)]
                condition = offer_condition(item.offer, item.key, kpi_index, groups, params[name])
                rules[rule]["all"] = [{"m": condition}]
        if len(fields[name]) > MAX_FACT_FIELDS:  # pragma: no cover - chunks keep rulesets small
            last = by_rule[(name, list(rules)[-1])].offer
            raise CompileError(
                last.id,
                f"the {name} offers need {len(fields[name])} fact fields; the engine takes at most "
                f"{MAX_FACT_FIELDS}",
            )
    return CompiledRulesets(
        rulesets=rulesets,
        offers=[item for item in compiled if item is not None],
        by_rule=by_rule,
        event_rulesets=event_rulesets,
        aggregate_rulesets=aggregate_rulesets,
        time_zone=ZoneInfo(definition.time_zone),
        unit_groups={unit.code: unit.group for unit in definition.units},
        unit_merchants={unit: m.id for m in definition.merchants for unit in m.units},
        kpis=[(kpi_index[code], kpi_products.get(code, frozenset())) for code in used_kpis],
        kpi_index=kpi_index,
        windows=windows,
        aggregates=aggregates,
        fields=fields,
        line_rulesets=line_rulesets,
        params={name: p.values for name, p in params.items() if p.values},
        paths=paths,
    )


# --- merged rulesets (evaluation runs) ----------------------------------------------


@dataclass(frozen=True)
class MergedRulesets:
    """Each event type's per-event rulesets merged into as few durable-rules rulesets as
    the engine's limits allow (``MAX_PATHS`` paths matching one fact at once,
    ``PARAM_LIMIT`` constants), for evaluation runs: an event's fact is then parsed and
    asserted once instead of once per classification (a purchase meets three), about a
    third less engine time. The rules and their constants (``Params``) are renamed
    apart (``r<i>_<rule>``, ``p<i>_<q>`` for the i-th ruleset merged), and each merged
    rule maps back to its (ruleset, rule), so everything after the match is unchanged.
    Requests keep the rulesets of one classification each: a reload then re-uses the
    engine rulesets of every classification it did not change (see the adapter); a
    merged ruleset is built again only when one of its classifications changes shape,
    and shared like any other."""

    definitions: dict[str, dict[str, Any]]  # merged ruleset -> definition
    by_type: dict[str, list[tuple[str, str]]]  # event type -> (merged ruleset, Params splice)
    rules: dict[tuple[str, str], tuple[str, str]]  # (merged ruleset, rule) -> (ruleset, rule)
    params: int  # the most Params of a merged ruleset (its facts carry them all)


def _renamed(condition: Any, prefix: str) -> Any:
    """``condition`` with every ``Params`` reference (``{"$m": "q<i>"}``) prefixed."""
    if isinstance(condition, list):
        return [_renamed(item, prefix) for item in condition]
    if not isinstance(condition, dict):
        return condition
    if set(condition) == {"$m"}:
        return {"$m": prefix + condition["$m"]}
    return {key: _renamed(value, prefix) for key, value in condition.items()}


def merge_rulesets(compiled: CompiledRulesets) -> MergedRulesets:
    """``MergedRulesets`` of ``compiled`` (consecutive rulesets of an event type merged
    while their path bounds and constants fit)."""
    definitions: dict[str, dict[str, Any]] = {}
    by_type: dict[str, list[tuple[str, str]]] = {}
    rules: dict[tuple[str, str], tuple[str, str]] = {}
    most = 0
    for event_type, names in compiled.event_rulesets.items():
        groups: list[list[str]] = [[]]
        used_paths = used_params = 0
        for name in names:
            paths = compiled.paths.get(name, MAX_PATHS)
            count = len(compiled.params.get(name, {}))
            if groups[-1] and (used_paths + paths > MAX_PATHS or used_params + count > PARAM_LIMIT):
                groups.append([])
                used_paths = used_params = 0
            groups[-1].append(name)
            used_paths += paths
            used_params += count
        for g, group in enumerate(groups):
            merged = f"{event_type}__merged" + ("" if g == 0 else f"_{g + 1}")
            definition: dict[str, Any] = {}
            values: dict[str, Any] = {}
            for i, name in enumerate(group):
                for rule, body in compiled.rulesets[name].items():
                    renamed = f"r{i}_{rule}"
                    definition[renamed] = {"all": _renamed(body["all"], f"p{i}_"), "run": renamed}
                    rules[(merged, renamed)] = (name, rule)
                values.update({f"p{i}_{k}": v for k, v in compiled.params.get(name, {}).items()})
            definitions[merged] = definition
            splice = "," + _encode(values).decode()[1:-1] + "}" if values else "}"
            by_type.setdefault(event_type, []).append((merged, splice))
            most = max(most, len(values))
    return MergedRulesets(definitions, by_type, rules, most)


# --- facts ---------------------------------------------------------------------------

_encode = msgspec.json.Encoder().encode
RETRACT_EVENT = f'{{"sid":"{SESSION}","id":"{EVENT_FACT_ID}"}}'


def _text(value: object) -> str:
    return "" if value is None else str(value)


def _decimal(value: object) -> Decimal:
    if isinstance(value, Decimal):
        return value
    if isinstance(value, int | str):
        return Decimal(value)
    if isinstance(value, float):
        return Decimal(str(value))
    raise TypeError(f"expected a decimal amount, got {type(value).__name__}")


def _cents(value: object) -> int:
    """Amount -> integer cents, half-up (fast when the amount already is whole cents)."""
    amount = value if type(value) is Decimal else _decimal(value)
    hundredths = amount * _HUNDRED
    whole = int(hundredths)
    return whole if whole == hundredths else to_cents(amount)


@dataclass
class PreparedEvent:
    """An event flattened for the engine: one JSON fact per ruleset to assert into."""

    event_type: str
    fact: dict[str, Any]  # every field of the event type
    payloads: list[tuple[str, str]]  # (ruleset, JSON of its fact), in evaluation order
    skus: list[str]
    line_cents: list[int]
    _lines_json: str | None = None

    def lines_json(self) -> str:
        """Line facts ``[{sid, id: "<index>", s, a}]`` for ``<classification>__lines``."""
        if self._lines_json is None:
            self._lines_json = _encode(
                [
                    {"sid": SESSION, "id": str(k), "s": sku, "a": cents}
                    for k, (sku, cents) in enumerate(zip(self.skus, self.line_cents, strict=True))
                ]
            ).decode()
        return self._lines_json

    def retract_lines_json(self) -> str:
        return _retract_lines(len(self.skus))


_RETRACT_LINES: dict[int, str] = {}


def _retract_lines(count: int) -> str:
    text = _RETRACT_LINES.get(count)
    if text is None:
        text = _encode([{"sid": SESSION, "id": str(k)} for k in range(count)]).decode()
        if count <= 256:
            _RETRACT_LINES[count] = text
    return text


def _base_fact(
    compiled: CompiledRulesets,
    event_type: str,
    performed_on: datetime,
    classification: object,
    unit: object,
    segments: list[str],
    awards_in_window: dict[str, int],
) -> dict[str, Any]:
    """The fields every event type has, and the max_awards counts."""
    if performed_on.tzinfo is None or performed_on.utcoffset() is None:
        raise ValueError("performed_on must be timezone-aware")
    local = performed_on.astimezone(compiled.time_zone)
    unit_code = "" if unit is None else str(unit)
    fact: dict[str, Any] = {
        "sid": SESSION,
        "id": EVENT_FACT_ID,
        "et": event_type,
        "cls": "" if classification is None else str(classification),
        "unit": unit_code,
        "ug": compiled.unit_groups.get(unit_code, ""),
        "mer": compiled.unit_merchants.get(unit_code, ""),
        "seg": ["", *map(str, segments)],
        "d": local.year * 10000 + local.month * 100 + local.day,
        "wd": local.weekday(),
        "mod": local.hour * 60 + local.minute,
    }
    for offer_id, name in compiled.windows.get(event_type, ()):
        fact[name] = int(awards_in_window.get(offer_id, 0))
    return fact


def _purchase_fields(
    fact: dict[str, Any],
    lines: list[dict[str, Any]],
    total_cents: int | None,
    payment_brand: object,
    payment_type: object,
) -> None:
    fact["tot"] = sum(line["a"] for line in lines) if total_cents is None else total_cents
    fact["ln"] = lines
    fact["pb"] = "" if payment_brand is None else str(payment_brand)
    fact["pt"] = "" if payment_type is None else str(payment_type)


def purchase_fact(
    compiled: CompiledRulesets,
    *,
    performed_on: datetime,
    classification: object,
    unit: object,
    segments: list[str],
    awards_in_window: dict[str, int],
    lines: list[dict[str, Any]],
    total_cents: int | None,
    payment_brand: object,
    payment_type: object,
) -> dict[str, Any]:
    """``build_fact`` of a purchase whose amounts are already cents: ``lines`` are the
    fact's own ``{"s": sku, "a": cents}`` (evaluation runs read the amounts straight
    from the stored event, without ``EventFacts``' Decimals; no period totals)."""
    fact = _base_fact(
        compiled,
        "purchase",
        performed_on,
        classification,
        unit,
        segments,
        awards_in_window,
    )
    _purchase_fields(fact, lines, total_cents, payment_brand, payment_type)
    return fact


def build_fact(
    compiled: CompiledRulesets, facts: EventFacts, *, aggregates: bool = False
) -> dict[str, Any]:
    """Every engine field of the event (see the module docstring)."""
    event_type = str(facts.event_type)
    fact = _base_fact(
        compiled,
        event_type,
        facts.performed_on,
        facts.classification,
        facts.unit,
        facts.segments,
        facts.awards_in_window,
    )
    if event_type == "purchase":
        lines = [{"s": str(line.sku), "a": _cents(line.total_amount)} for line in facts.products]
        total = None if facts.total_amount is None else _cents(facts.total_amount)
        _purchase_fields(fact, lines, total, facts.payment_brand, facts.payment_type)
    elif event_type == "financial_achievement":
        fact["amt"] = 0 if facts.amount is None else _cents(facts.amount)
        fact["ha"] = 0 if facts.amount is None else 1
        fact["pb"] = _text(facts.payment_brand)
        fact["pt"] = _text(facts.payment_type)
    elif event_type == "financial_statement":
        sums: dict[int, Decimal] = {}
        counts: dict[int, int] = {}
        for entry in facts.kpis:
            j = compiled.kpi_index.get(str(entry.kpi))
            if j is None:
                continue
            products = compiled.kpis[j][1]
            if products and (entry.product is None or str(entry.product) not in products):
                continue
            sums[j] = sums.get(j, Decimal(0)) + _decimal(entry.value)
            counts[j] = counts.get(j, 0) + 1
        for j, _ in compiled.kpis:
            fact[f"kv{j}"] = _cents(sums[j]) if j in sums else 0
            fact[f"kn{j}"] = counts.get(j, 0)
    elif event_type in ("social_media", "web"):
        fact["plat"] = _text(facts.platform)
        fact["act"] = _text(facts.action)
        fact["web"] = _text(facts.website)
    if aggregates:
        add_period_totals(compiled, fact, facts.period_totals)
    return fact


def add_period_totals(
    compiled: CompiledRulesets, fact: dict[str, Any], period_totals: dict[str, PeriodTotals]
) -> None:
    """The aggregate offers' fields of ``fact`` (``build_fact(..., aggregates=True)``)."""
    for offer_id, n in compiled.aggregates.items():
        totals = period_totals.get(offer_id)
        fact[f"ap{n}"] = 0 if totals is None else 1
        fact[f"at{n}"] = 0 if totals is None else _cents(totals.total_amount)
        fact[f"ac{n}"] = 0 if totals is None else int(totals.count) * 100
        fact[f"aq{n}"] = 0 if totals is None else _cents(totals.quantity)


def prepare(
    compiled: CompiledRulesets,
    facts: EventFacts,
    *,
    aggregates: bool = False,
    per_event: bool = True,
    merged: MergedRulesets | None = None,
) -> PreparedEvent:
    """Flatten ``facts``: the full fact and, per ruleset to evaluate, the JSON of its fields."""
    fact = build_fact(compiled, facts, aggregates=aggregates)
    return prepare_fact(compiled, fact, aggregates=aggregates, per_event=per_event, merged=merged)


def prepare_fact(
    compiled: CompiledRulesets,
    fact: dict[str, Any],
    *,
    aggregates: bool = False,
    per_event: bool = True,
    only: str | None = None,
    merged: MergedRulesets | None = None,
) -> PreparedEvent:
    """``prepare`` of a fact already built (``build_fact``, ``purchase_fact``).

    ``aggregates``: the aggregate rulesets too (the fact has the period totals);
    ``per_event=False``: only those (a caller that decides nothing but period aggregates);
    ``only``: only that ruleset of them (the one of the single offer the fact has period
    totals for: the other aggregate offers' rules need theirs, so cannot match);
    ``merged``: the per-event rulesets merged (``MergedRulesets``), when the fact with all
    their constants fits the engine's property limit (else the rulesets one by one).
    """
    event_type = fact["et"]
    if (
        merged is not None
        and per_event
        and not aggregates
        and len(fact) + merged.params <= MAX_FACT_FIELDS
    ):
        whole = _encode(fact).decode()
        payloads = [
            (name, whole[:-1] + splice) for name, splice in merged.by_type.get(event_type, [])
        ]
        return _prepared(event_type, fact, payloads)
    rulesets = compiled.event_rulesets.get(event_type, []) if per_event else []
    if aggregates:
        found = compiled.aggregate_rulesets.get(event_type, [])
        rulesets = rulesets + (found if only is None else [n for n in found if n == only])
    if len(fact) + compiled.max_params <= MAX_FACT_FIELDS:
        whole = _encode(fact).decode()  # usual case: one JSON for every ruleset (cheapest)
        payloads = [(name, compiled.payload(name, whole)) for name in rulesets]
    else:  # many max_awards/KPI/aggregate fields: each ruleset gets only the fields it reads
        fields = compiled.fields
        payloads = [
            (name, compiled.payload(name, _encode({k: fact[k] for k in fields[name]}).decode()))
            for name in rulesets
        ]
    return _prepared(event_type, fact, payloads)


def _prepared(
    event_type: str, fact: dict[str, Any], payloads: list[tuple[str, str]]
) -> PreparedEvent:
    if event_type == "purchase":
        lines = fact["ln"]
        skus = [line["s"] for line in lines]
        line_cents = [line["a"] for line in lines]
    else:
        skus, line_cents = [], []
    return PreparedEvent(event_type, fact, payloads, skus, line_cents)
