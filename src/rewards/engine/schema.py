"""JSON Schemas (Draft 2020-12) of the ruleset files, built here and exported to ``schemas/``.

The loader validates with these dicts; ``schemas/definition.schema.json`` and
``schemas/ruleset.schema.json`` are the same documents written out for editors (a test
keeps them equal; regenerate with ``python -m rewards.engine.schema schemas``).
Every object has ``additionalProperties: false``. The condition keys, award shape and
example event fields allowed depend on the classification: the ruleset schema selects
a per-classification offer definition with ``if``/``then`` on ``classification``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from rewards.engine.model import (
    AGGREGATE_CLASSIFICATIONS,
    CLASSIFICATION_EVENT_TYPES,
    CLASSIFICATIONS,
    EVENT_TYPES,
    WEEKDAYS,
)

DRAFT = "https://json-schema.org/draft/2020-12/schema"
ID_PATTERN = "^[a-z0-9-]+$"
# As the API's patterns for a terminal id and a SKU (schemas/processor_transaction.json).
TERMINAL_PATTERN = "^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,99}$"
SKU_PATTERN = "^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,99}$"
HOUR_PATTERN = "^([01][0-9]|2[0-3]):[0-5][0-9]$|^24:00$"
#: Words for a value a pattern refuses: editors (VS Code, yaml-language-server) show a
#: schema's ``patternErrorMessage`` instead of the regular expression, and so does the loader.
_HOUR = {
    "type": "string",
    "pattern": HOUR_PATTERN,
    "patternErrorMessage": "time must be HH:MM, 00:00 to 23:59 (24:00 allowed as until)",
}
_ID = {
    "type": "string",
    "pattern": ID_PATTERN,
    "patternErrorMessage": "use lower-case letters a-z, digits 0-9 and - only",
}
#: An invoice type, as ``schemas/invoice.json`` accepts it in ``invoice_type`` (no "/":
#: a purchase made from an invoice is referenced as "<type>/<number>").
INVOICE_TYPE_PATTERN = "^[A-Za-z0-9][A-Za-z0-9._:@+-]*$"
INVOICE_TYPE_MAX_LENGTH = 50

PURCHASE_CLASSIFICATIONS = frozenset(
    c for c, types in CLASSIFICATION_EVENT_TYPES.items() if types == ("purchase",)
)
PERCENTAGE_CLASSIFICATIONS = frozenset(
    {
        "utilise_free_capacity",
        "increase_revenue_transaction",
        "increase_revenue_product",
        "loyalty_transaction_amount",
        "financial_achievement",
    }
)


def _obj(
    properties: dict[str, Any], required: list[str] | None = None, **extra: Any
) -> dict[str, Any]:
    schema: dict[str, Any] = {
        "type": "object",
        "properties": properties,
        "additionalProperties": False,
    }
    if required:
        schema["required"] = required
    schema.update(extra)
    return schema


def _strings(min_items: int = 1) -> dict[str, Any]:
    return {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": min_items}


_NUMBER = {"type": "number"}
_MONEY = {"type": "number", "minimum": 0}
_POSITIVE = {"type": "number", "exclusiveMinimum": 0}


def _range(minimum: float | None = None) -> dict[str, Any]:
    bound = {"type": "number"} if minimum is None else {"type": "number", "minimum": minimum}
    return _obj({"min": bound, "max": bound}, minProperties=1)


def _condition_properties() -> dict[str, dict[str, Any]]:
    return {
        "segments": _obj({"include": _strings(), "exclude": _strings()}, minProperties=1),
        "units": _strings(),
        "merchants": _strings(),
        "payment_medium": _obj({"brands": _strings(), "types": _strings()}, minProperties=1),
        "schedule": _obj(
            {
                "days": {"type": "array", "items": {"enum": list(WEEKDAYS)}, "minItems": 1},
                "hours": {
                    "type": "array",
                    "minItems": 1,
                    "items": _obj(
                        {
                            "from": _HOUR,
                            "until": _HOUR,
                        },
                        ["from", "until"],
                    ),
                },
            },
            minProperties=1,
        ),
        "products": {
            "type": "array",
            "minItems": 1,
            "items": _obj(
                {"sku": {"type": "string", "minLength": 1}, "amount": _range(0)}, ["sku"]
            ),
        },
        "transaction_amount": _range(0),
        "period": {"enum": ["day", "week", "month", "year"]},
        "total_amount": _range(0),
        "count": _range(0),
        "quantity": _range(0),
        "event_classifications": _strings(),
        "amount": _range(0),
        "kpis": {
            "type": "array",
            "minItems": 1,
            "items": _obj(
                {"kpi": {"type": "string", "minLength": 1}, "min": _NUMBER}, ["kpi", "min"]
            ),
        },
        "platforms": _strings(),
        "actions": _strings(),
        "websites": _strings(),
        "max_awards": _obj(
            {
                "count": {"type": "integer", "minimum": 1},
                "window_days": {"type": "integer", "minimum": 1},
            },
            ["count", "window_days"],
        ),
    }


def condition_keys(classification: str) -> list[str]:
    """The condition keys an offer of this classification may use (RULESETS.md table)."""
    keys = ["segments", "units", "merchants", "schedule", "max_awards"]
    if classification in PURCHASE_CLASSIFICATIONS or classification == "financial_achievement":
        keys.append("payment_medium")
    if classification in (
        "utilise_free_capacity",
        "increase_revenue_product",
        "loyalty_item_quantity",
    ):
        keys.append("products")
    if classification == "increase_revenue_transaction":
        keys.append("transaction_amount")
    if classification in AGGREGATE_CLASSIFICATIONS:
        keys.append("period")
        keys.append(
            {
                "loyalty_transaction_amount": "total_amount",
                "loyalty_transaction_number": "count",
                "loyalty_item_quantity": "quantity",
            }[classification]
        )
    if classification in (
        "achievement",
        "financial_achievement",
        "financial_statement",
        "referral",
    ):
        keys.append("event_classifications")
    if classification == "financial_achievement":
        keys.append("amount")
    if classification == "financial_statement":
        keys.append("kpis")
    if classification == "behaviour":
        keys += ["platforms", "actions", "websites"]
    return keys


def _award(classification: str) -> dict[str, Any]:
    if classification == "referral":
        part = _obj({"amount": _POSITIVE}, ["amount"])
        return _obj({"referred": part, "referrer": part}, ["referred"])
    properties: dict[str, Any] = {"amount": _POSITIVE}
    if classification in PERCENTAGE_CLASSIFICATIONS:
        properties["percentage"] = {"type": "number", "exclusiveMinimum": 0, "maximum": 100}
        properties["max"] = _POSITIVE
    if classification in PURCHASE_CLASSIFICATIONS:
        properties["instant_spend"] = {"type": "boolean"}
    return _obj(properties, minProperties=1)


def _payment_medium_event() -> dict[str, Any]:
    return _obj(
        {
            "brand": {"type": "string"},
            "type": {"type": "string"},
            "identifier": {"type": "string"},
        }
    )


def example_event_properties(classification: str) -> dict[str, dict[str, Any]]:
    """Fields an example event of this classification may carry (API body names)."""
    types = CLASSIFICATION_EVENT_TYPES[classification]
    properties: dict[str, Any] = {
        "type": {"enum": list(types)},
        "performed_on": {"type": "string", "minLength": 1},
        "performed_by_unit": {"type": "string"},
        "classification": {"type": "string"},
        "description": {"type": "string"},
        "segments": {"type": "array", "items": {"type": "string"}},
        "prior_awards": {
            "description": "awards already received within max_awards windows: a number "
            "(from the offer being tested), or {offer id: number}",
            "oneOf": [
                {"type": "integer", "minimum": 0},
                {
                    "type": "object",
                    "propertyNames": {"pattern": ID_PATTERN},
                    "additionalProperties": {"type": "integer", "minimum": 0},
                },
            ],
        },
    }
    if "purchase" in types:
        properties.update(
            {
                "reference_number": {"type": "string"},
                "currency": {"type": "string", "pattern": "^[A-Z]{3}$"},
                "products": {
                    "type": "array",
                    "items": _obj(
                        {
                            "sku": {"type": "string", "minLength": 1},
                            "quantity": {"type": "number", "exclusiveMinimum": 0},
                            "net_amount": _NUMBER,
                            "vat_amount": _NUMBER,
                            "total_amount": _NUMBER,
                        },
                        ["sku"],
                    ),
                },
                "total_amount": _NUMBER,
                "payment_medium": _payment_medium_event(),
            }
        )
    if classification in AGGREGATE_CLASSIFICATIONS:
        properties["period_totals"] = _obj(
            {
                "total_amount": _MONEY,
                "count": {"type": "integer", "minimum": 0},
                "quantity": _MONEY,
            },
            minProperties=1,
        )
    if "financial_achievement" in types:
        properties.update(
            {
                "amount": _NUMBER,
                "product": {"type": "string"},
                "payment_medium": _payment_medium_event(),
            }
        )
    if "financial_statement" in types:
        properties.update(
            {
                "period": {"type": "string", "pattern": "^[0-9]{4}-(0[1-9]|1[0-2])$"},
                "kpis": {
                    "type": "array",
                    "items": _obj(
                        {
                            "kpi": {"type": "string"},
                            "product": {"type": "string"},
                            "value": _NUMBER,
                        },
                        ["kpi", "value"],
                    ),
                },
            }
        )
    if "social_media" in types:
        properties.update(
            {
                "platform": {"type": "string"},
                "profile": {"type": "string"},
                "action": {"type": "string"},
            }
        )
    if "web" in types:
        properties["website"] = {"type": "string"}
    if "referral" in types:
        properties.update({"referred": {"type": "object"}, "referred_by": {"type": "object"}})
    return properties


def _example(classification: str) -> dict[str, Any]:
    expect_properties: dict[str, Any] = {"award": _MONEY}
    if classification == "referral":
        expect_properties["referrer"] = _MONEY
    if classification in ("utilise_free_capacity", "increase_revenue_product"):
        expect_properties["lines"] = {
            "type": "array",
            "items": _obj(
                {"index": {"type": "integer", "minimum": 0}, "amount": _MONEY}, ["index", "amount"]
            ),
        }
    return _obj(
        {
            "description": {"type": "string"},
            "event": _obj(example_event_properties(classification), ["performed_on"]),
            "expect": _obj(expect_properties, ["award"]),
            "not_awarded": {"const": True},
        },
        ["event"],
    )


def _offer(classification: str) -> dict[str, Any]:
    allowed = condition_keys(classification)
    evaluation = (
        ["batch"] if classification in AGGREGATE_CLASSIFICATIONS else ["immediate", "batch"]
    )
    required_conditions = ["period"] if classification in AGGREGATE_CLASSIFICATIONS else []
    return _obj(
        {
            "id": _ID,
            "name": {"type": "string", "minLength": 1},
            "description": {"type": "string"},
            "evaluation": {"enum": evaluation},
            "valid": _obj(
                {
                    "from": {"type": "string", "format": "date"},
                    "until": {"type": "string", "format": "date"},
                },
                minProperties=1,
            ),
            "award": _award(classification),
            "priority": {"type": "integer"},
            "exclusive_group": _ID,
            "budget": _obj(
                {
                    "amount": {"type": "number", "exclusiveMinimum": 0, "multipleOf": 0.01},
                    "period": {"enum": ["day", "week", "month", "year", "total"]},
                },
                ["amount", "period"],
            ),
            "conditions": _obj(
                {key: {"$ref": f"#/$defs/condition_{key}"} for key in allowed},
                required_conditions or None,
            ),
            "examples": {"type": "array", "items": _example(classification)},
        },
        ["id", "name", "award", *(["conditions"] if required_conditions else [])],
    )


def ruleset_schema() -> dict[str, Any]:
    """Schema of one ``<classification>.yaml`` file."""
    return {
        "$schema": DRAFT,
        "$id": "https://rewards.example/schemas/ruleset.schema.json",
        "title": "Reward offers of one classification",
        "type": "object",
        "properties": {
            "classification": {"enum": list(CLASSIFICATIONS)},
            "offers": {"type": "array"},
        },
        "required": ["classification", "offers"],
        "additionalProperties": False,
        "allOf": [
            {
                "if": {
                    "properties": {"classification": {"const": c}},
                    "required": ["classification"],
                },
                "then": {"properties": {"offers": {"items": {"$ref": f"#/$defs/offer_{c}"}}}},
            }
            for c in CLASSIFICATIONS
        ],
        "$defs": {
            **{f"offer_{c}": _offer(c) for c in CLASSIFICATIONS},
            **{f"condition_{key}": value for key, value in _condition_properties().items()},
        },
    }


def _medium_condition() -> dict[str, Any]:
    return _obj(
        {
            "length": _obj(
                {
                    "min": {"type": "integer", "minimum": 0},
                    "max": {"type": "integer", "minimum": 0},
                },
                minProperties=1,
            ),
            "begins_with": {"type": "string", "minLength": 1},
            "ends_with": {"type": "string", "minLength": 1},
            "regex": {"type": "string", "minLength": 1},
        },
        minProperties=1,
    )


def definition_schema() -> dict[str, Any]:
    """Schema of ``definition.yaml``."""
    code = {"type": "string", "minLength": 1}
    invoice_types = {
        "type": "array",
        "items": {
            "type": "string",
            "maxLength": INVOICE_TYPE_MAX_LENGTH,
            "pattern": INVOICE_TYPE_PATTERN,
        },
    }
    return {
        "$schema": DRAFT,
        "$id": "https://rewards.example/schemas/definition.schema.json",
        "title": "Business definition of the rewards service",
        **_obj(
            {
                "currency": {"type": "string", "pattern": "^[A-Z]{3}$"},
                "time_zone": {"type": "string", "minLength": 1},
                "exchange_rates": {
                    "type": "object",
                    "propertyNames": {"pattern": "^[A-Z]{3}$"},
                    "additionalProperties": _POSITIVE,
                },
                "immediate_event_types": {"type": "array", "items": {"enum": list(EVENT_TYPES)}},
                "referrals_per_day": {"type": "integer", "minimum": 0},
                "units": {
                    "type": "array",
                    "items": _obj(
                        {
                            "code": code,
                            "group": code,
                            "reduction": {"enum": ["front_end", "back_end"]},
                        },
                        ["code", "group", "reduction"],
                    ),
                },
                "merchants": {
                    "type": "array",
                    "items": _obj(
                        {
                            "id": _ID,
                            "name": code,
                            "units": _strings(),
                            "terminals": {
                                "type": "array",
                                "items": {"type": "string", "pattern": TERMINAL_PATTERN},
                            },
                            "processor_mode": {"enum": ["direct", "matching", "claim"]},
                            "match_window_minutes": {"type": "integer", "minimum": 1},
                            "default_sku": {"type": "string", "pattern": SKU_PATTERN},
                        },
                        ["id", "name", "units"],
                    ),
                },
                "event_classifications": {
                    "type": "array",
                    "items": _obj(
                        {
                            "code": code,
                            "types": {
                                "type": "array",
                                "items": {"enum": list(EVENT_TYPES)},
                                "minItems": 1,
                            },
                        },
                        ["code", "types"],
                    ),
                },
                "kpis": {
                    "type": "array",
                    "items": _obj({"code": code, "products": _strings(0)}, ["code"]),
                },
                "payment_medium": _obj(
                    {
                        "brand_rules": {
                            "type": "array",
                            "items": _obj(
                                {"brand": code, "when": _medium_condition()}, ["brand", "when"]
                            ),
                        },
                        "type_rules": {
                            "type": "array",
                            "items": _obj(
                                {"type": code, "when": _medium_condition()}, ["type", "when"]
                            ),
                        },
                        "identifier_adjustment": _obj(
                            {
                                "keep": {"enum": ["all", "first", "last"]},
                                "characters": {"type": "integer", "minimum": 1},
                            },
                            ["keep"],
                        ),
                    }
                ),
                "spend_requests": _obj(
                    {
                        "allow_specific_amount": {"type": "boolean"},
                        "min_amount": _MONEY,
                        "max_amount": _MONEY,
                        "reject_if_not_covered": {"type": "boolean"},
                        "allowed_days_after_purchase": {
                            "type": "integer",
                            "minimum": 1,
                            "maximum": 180,
                        },
                        "applicable_classifications": _strings(0),
                    }
                ),
                "purchase_automation": _obj(
                    {"invoice_types": invoice_types, "credit_note_types": invoice_types}
                ),
                **_catalogues(),
            }
        ),
    }


def _catalogues() -> dict[str, Any]:
    """``segments``, ``catalogue`` and ``checks``: what offers may name, and the limits
    above which the check warns (docs/analysts.md, "Catalogues and warnings")."""
    text = {"type": "string", "minLength": 1}
    return {
        "segments": _obj(
            {
                "codes": {
                    "type": "array",
                    "items": _obj({"code": text, "name": text}, ["code"]),
                },
                "allow_unknown": {"type": "boolean"},
            },
            minProperties=1,
            description="the customer segments offers may name; allow_unknown: true when "
            "segments come from another system and any code is accepted",
        ),
        "catalogue": {
            "type": "array",
            "description": "the products offers may name: codes or patterns (* ? [0-9])",
            "items": _obj({"sku": text, "name": text, "category": text}, ["sku"]),
        },
        "checks": _obj(
            {"max_percentage": {"type": "number", "exclusiveMinimum": 0, "maximum": 100}},
            description="limits of the check's warnings",
        ),
    }


SCHEMA_FILES = {
    "definition.schema.json": definition_schema,
    "ruleset.schema.json": ruleset_schema,
}


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def write_schemas(folder: Path) -> None:
    """Write both schema files into ``folder`` (the repository's ``schemas/``)."""
    for name, build in SCHEMA_FILES.items():
        (folder / name).write_text(render(build()), encoding="utf-8")


if __name__ == "__main__":  # pragma: no cover
    write_schemas(Path(sys.argv[1] if len(sys.argv) > 1 else "schemas"))
