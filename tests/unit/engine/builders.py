"""Builders for engine tests: ruleset folders on disk, in-memory rulesets, event facts."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec

from rewards.engine import EventFacts, ProductLine, Rulesets
from rewards.engine.model import AGGREGATE_CLASSIFICATIONS, Definition, Offer

DEFINITION_YAML = """\
currency: EUR
time_zone: Europe/Nicosia
exchange_rates: {USD: 0.92}
immediate_event_types: [purchase]
units:
  - {code: store-001, group: north, reduction: front_end}
  - {code: store-002, group: north, reduction: back_end}
  - {code: store-003, group: south, reduction: front_end}
event_classifications:
  - {code: 5-star-service, types: [achievement]}
  - {code: course-completed, types: [achievement]}
  - {code: top-up, types: [financial_achievement]}
  - {code: monthly-statement, types: [financial_statement]}
  - {code: friend-referral, types: [referral]}
kpis:
  - {code: loan-balance, products: [LOAN-BUSINESS, LOAN-HOME]}
  - {code: savings-balance}
"""

DEFINITION = msgspec.convert(
    {
        "currency": "EUR",
        "time_zone": "Europe/Nicosia",
        "exchange_rates": {"USD": "0.92"},
        "units": [
            {"code": "store-001", "group": "north", "reduction": "front_end"},
            {"code": "store-002", "group": "north", "reduction": "back_end"},
            {"code": "store-003", "group": "south", "reduction": "front_end"},
        ],
        "event_classifications": [
            {"code": "5-star-service", "types": ["achievement"]},
            {"code": "course-completed", "types": ["achievement"]},
            {"code": "top-up", "types": ["financial_achievement"]},
            {"code": "loan-repayment", "types": ["financial_achievement"]},
            {"code": "monthly-statement", "types": ["financial_statement"]},
            {"code": "friend-referral", "types": ["referral"]},
        ],
        "kpis": [
            {"code": "loan-balance", "products": ["LOAN-BUSINESS", "LOAN-HOME"]},
            {"code": "savings-balance"},
        ],
    },
    Definition,
    strict=False,
)


def write_folder(
    root: Path, files: dict[str, str], *, definition: str | None = DEFINITION_YAML
) -> Path:
    """Write a rulesets folder: ``files`` maps file names to (dedented) YAML text."""
    root.mkdir(parents=True, exist_ok=True)
    if definition is not None:
        (root / "definition.yaml").write_text(definition, encoding="utf-8")
    for name, text in files.items():
        (root / name).write_text(textwrap.dedent(text), encoding="utf-8")
    return root


def offer(classification: str, offer_id: str = "o", **fields: Any) -> Offer:
    """An Offer from plain data (as the YAML would hold it), already resolved."""
    data = {"id": offer_id, "name": fields.pop("name", offer_id), **fields}
    data.setdefault("award", {"amount": 1})
    result = msgspec.convert(data, Offer, strict=False)
    evaluation = result.evaluation or (
        "batch" if classification in AGGREGATE_CLASSIFICATIONS else "immediate"
    )
    return msgspec.structs.replace(
        result,
        classification=classification,
        ruleset_file=f"{classification}.yaml",
        evaluation=evaluation,
    )


def rulesets(
    *offers: Offer, definition: Definition = DEFINITION, version: str = "test"
) -> Rulesets:
    """Rulesets straight from model objects (no files, no validation, no examples)."""
    return Rulesets(
        path=Path("."),
        version=version,
        loaded_at=datetime.now(UTC),
        files=sorted({o.ruleset_file for o in offers}),
        definition=definition,
        offers=list(offers),
    )


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


def purchase(
    when: str = "2026-03-02T11:00:00+02:00",
    *lines: tuple[str, str],
    total: str | None = None,
    **fields: Any,
) -> EventFacts:
    """A purchase; ``lines`` are (sku, line total) pairs."""
    products = [ProductLine(sku=sku, total_amount=Decimal(amount)) for sku, amount in lines]
    return EventFacts(
        event_type="purchase",
        performed_on=at(when),
        unit=fields.pop("unit", "store-001"),
        products=products,
        total_amount=None if total is None else Decimal(total),
        **fields,
    )


def event(event_type: str, when: str = "2026-03-02T11:00:00+02:00", **fields: Any) -> EventFacts:
    return EventFacts(event_type=event_type, performed_on=at(when), **fields)


def summary(decisions: list) -> list[tuple]:
    """Decisions as comparable tuples: (offer, beneficiary, amount, ((index, amount), ...))."""
    return [
        (
            d.offer_id,
            d.beneficiary,
            d.amount,
            None if d.lines is None else tuple((line.index, line.amount) for line in d.lines),
        )
        for d in decisions
    ]
