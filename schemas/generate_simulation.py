"""Writes the per-type `event` schemas of simulation.json from schemas/events/*.json.

A simulation's `event` is the body of `POST /v1/events/<type>` except that it may leave
its contact identifiers (and a purchase its reference number) out: the simulation puts
placeholders in. simulation.json says so exactly, type by type, so a client generated
from OpenAPI sends what the server accepts. Run after changing an event schema:

    .venv/bin/python schemas/generate_simulation.py

tests/unit/test_schema_files.py fails while simulation.json is out of date.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SIMULATION = HERE / "simulation.json"
# Event type -> its schema file; spend requests earn nothing and are not simulated.
TYPES = {
    "purchase": "purchase",
    "referral": "referral",
    "achievement": "achievement",
    "financial_achievement": "financial_achievement",
    "financial_statement": "financial_statement",
    "social_media": "social_media",
    "web": "web",
}
# Filled in by the simulation when left out (analyst/simulation.py).
OPTIONAL_IN_SIMULATIONS = {"contact", "referred", "referred_by", "reference_number"}
_COUNT = {"type": "integer", "minimum": 0, "maximum": 1000000}
# The same two shapes as an offer example's prior_awards (docs/analysts.md).
PRIOR_AWARDS = {
    "description": "Awards the contact already received within the offers' `max_awards` "
    "windows: offer id -> count, or one count for every offer. Default: none.",
    "oneOf": [
        {
            "type": "object",
            "maxProperties": 1000,
            "propertyNames": {"pattern": "^[a-z0-9-]+$", "maxLength": 100},
            "additionalProperties": _COUNT,
        },
        _COUNT,
    ],
}


def event_schema(event_type: str) -> dict[str, Any]:
    document = json.loads((HERE / "events" / f"{TYPES[event_type]}.json").read_text())
    schema = {k: copy.deepcopy(v) for k, v in document.items() if k not in ("$schema", "$id")}
    schema["required"] = [r for r in schema["required"] if r not in OPTIONAL_IN_SIMULATIONS]
    return schema


def simulation_document() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(SIMULATION.read_text())
    document["properties"]["event"] = {
        "type": "object",
        "description": "The event body, as sent to `POST /v1/events/<type>` (the schema of "
        "`type`); its contact identifiers and a purchase's `reference_number` may be left out.",
    }
    document["properties"]["prior_awards"] = PRIOR_AWARDS
    document.pop("allOf", None)
    document["oneOf"] = [
        {
            "properties": {
                "type": {"const": event_type},
                "event": {"$ref": f"#/$defs/{event_type}_event"},
            }
        }
        for event_type in TYPES
    ]
    document["$defs"] = {f"{t}_event": event_schema(t) for t in TYPES}
    return document


def render(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, ensure_ascii=True) + "\n"


if __name__ == "__main__":
    SIMULATION.write_text(render(simulation_document()))
    print(f"wrote {SIMULATION.relative_to(HERE.parent)}")
