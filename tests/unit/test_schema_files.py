"""Every JSON Schema file in schemas/ is a valid Draft 2020-12 schema."""

from __future__ import annotations

import copy
import importlib.util
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from rewards.engine.schema import INVOICE_TYPE_MAX_LENGTH, INVOICE_TYPE_PATTERN
from rewards.schemas import shared_registry

ROOT = Path(__file__).resolve().parents[2] / "schemas"
SCHEMAS = sorted(ROOT.rglob("*.json"))


@pytest.mark.parametrize("path", SCHEMAS, ids=lambda p: p.name)
def test_schema_file_is_valid_draft_2020_12(path: Path) -> None:
    Draft202012Validator.check_schema(json.loads(path.read_text()))


def test_request_bodies_are_all_there() -> None:
    names = {path.relative_to(ROOT).as_posix() for path in SCHEMAS}
    assert {"events/purchase.json", "purchase_estimate.json", "ruleset.schema.json"} <= names


# ---- the jsonschema-rs fast path never accepts what the Python validator refuses ----

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**12), max_value=10**12)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
    | st.sampled_from(["12.50", "0.00", "2026-03-02T10:00:00Z", "2026-03", "EUR", "x\n", "123456"]),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)

VALID_BODIES = {
    "events/purchase": {
        "contact": {"wallet_code": "W-1"},
        "performed_on": "2026-03-02T10:00:00Z",
        "performed_by_unit": "store-001",
        "external_reference": "r-1",
        "reference_number": "R-1",
        "payment_medium": {"brand": "visa", "type": "credit"},
        "spend": {"amount": "5.00"},
        "products": [
            {"sku": "COFFEE-LATTE", "quantity": 2, "net_amount": "3.20", "vat_amount": "0.61"}
        ],
    },
    "events/financial_statement": {
        "contact": {"contact_id": "1b4e28ba-2fa1-11d2-883f-0016d3cca427"},
        "performed_on": "2026-03-02T10:00:00+02:00",
        "period": "2026-02",
        "kpis": [{"kpi": "revenue", "value": "10.5", "product": "p"}],
    },
    "contact_create": {"name": "Ada", "segments": ["gold"]},
    "invoice": {
        "invoice_type": "credit-note",
        "number": "CN-1",
        "contact": {"cim": "CIM-1"},
        "issued_on": "2026-03-02T10:00:00Z",
        "performed_by_unit": "store-001",
        "currency": "USD",
        "credits_invoice": "INV-1",
        "lines": [{"sku": "BEANS", "quantity": 2, "unit_price": "3.20", "vat_amount": 0.61}],
    },
}


def _paths(value: object, prefix: tuple = ()) -> list[tuple]:
    found = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _paths(item, (*prefix, index))
    return found


def _mutate(body: object, path: tuple, action: str, replacement: object, key: str) -> object:
    body = copy.deepcopy(body)
    if not path:
        return replacement
    parent = body
    for part in path[:-1]:
        parent = parent[part]  # type: ignore[index]
    last = path[-1]
    if action == "replace":
        parent[last] = replacement  # type: ignore[index]
    elif action == "delete":
        del parent[last]  # type: ignore[arg-type, union-attr]
    elif isinstance(parent[last], dict):  # type: ignore[index]
        parent[last][key] = replacement  # type: ignore[index]
    return body


@pytest.mark.parametrize("name", sorted(VALID_BODIES))
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_fast_validator_never_accepts_a_body_the_python_validator_refuses(
    name: str, data: st.DataObject
) -> None:
    registry = shared_registry()
    assert registry.validators[name].is_valid(VALID_BODIES[name])
    body = VALID_BODIES[name]
    for _ in range(data.draw(st.integers(min_value=1, max_value=3))):
        path = data.draw(st.sampled_from(_paths(body)))
        action = data.draw(st.sampled_from(["replace", "delete", "add"]))
        body = _mutate(body, path, action, data.draw(JSON_VALUES), data.draw(st.text(max_size=6)))
    refused = bool(registry.errors(name, body))
    assert refused == (not registry.validators[name].is_valid(body))


def test_simulation_schema_is_generated_from_the_event_schemas() -> None:
    """schemas/simulation.json types its ``event`` per event type with the event
    schemas (contact identifiers optional): regenerate it after changing an event schema
    (``.venv/bin/python schemas/generate_simulation.py``)."""
    spec = importlib.util.spec_from_file_location("generate", ROOT / "generate_simulation.py")
    assert spec is not None and spec.loader is not None
    generate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generate)
    expected = generate.render(generate.simulation_document())
    assert (ROOT / "simulation.json").read_text() == expected


def test_an_invoice_shares_the_purchase_field_conventions() -> None:
    """schemas/invoice.json copies the purchase's contact object, unit, timestamp, line
    and money rules (a purchase is made from it): a change to one must reach the other."""
    purchase = json.loads((ROOT / "events" / "purchase.json").read_text())["properties"]
    invoice = json.loads((ROOT / "invoice.json").read_text())["properties"]
    product = purchase["products"]["items"]["properties"]
    line = invoice["lines"]["items"]["properties"]
    assert invoice["contact"] == purchase["contact"]
    for where in ("performed_by_unit", "performed_by_terminal"):  # descriptions differ
        assert {k: v for k, v in invoice[where].items() if k != "description"} == {
            k: v for k, v in purchase[where].items() if k != "description"
        }
    assert invoice["description"] == purchase["description"]
    assert invoice["issued_on"]["pattern"] == purchase["performed_on"]["pattern"]
    assert invoice["currency"]["pattern"] == purchase["currency"]["pattern"]
    assert invoice["number"]["pattern"] == purchase["reference_number"]["pattern"]
    assert invoice["number"]["maxLength"] == purchase["reference_number"]["maxLength"]
    assert (line["sku"], line["quantity"]) == (product["sku"], product["quantity"])
    for mine, theirs in (("unit_price", "net_amount"), ("vat_amount", "vat_amount")):
        assert line[mine]["anyOf"] == product[theirs]["anyOf"]
    assert invoice["lines"]["maxItems"] == purchase["products"]["maxItems"]
    # every type a definition may list can be posted, and "<type>/<number>" fits a
    # purchase's external_reference
    assert invoice["invoice_type"]["pattern"] == INVOICE_TYPE_PATTERN
    assert invoice["invoice_type"]["maxLength"] == INVOICE_TYPE_MAX_LENGTH
    longest = invoice["invoice_type"]["maxLength"] + 1 + invoice["number"]["maxLength"]
    assert longest <= purchase["external_reference"]["maxLength"]
