"""Every JSON Schema file in schemas/ is a valid Draft 2020-12 schema."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

ROOT = Path(__file__).resolve().parents[2] / "schemas"
SCHEMAS = sorted(ROOT.rglob("*.json"))


@pytest.mark.parametrize("path", SCHEMAS, ids=lambda p: p.name)
def test_schema_file_is_valid_draft_2020_12(path: Path) -> None:
    Draft202012Validator.check_schema(json.loads(path.read_text()))


def test_request_bodies_are_all_there() -> None:
    names = {path.relative_to(ROOT).as_posix() for path in SCHEMAS}
    assert {"events/purchase.json", "purchase_estimate.json", "ruleset.schema.json"} <= names
