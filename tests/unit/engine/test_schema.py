"""The JSON Schemas in schemas/ are the generated ones and validate the shipped files."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from rewards.engine.schema import SCHEMA_FILES, render

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize("name", sorted(SCHEMA_FILES))
def test_schema_files_are_up_to_date(name: str) -> None:
    expected = render(SCHEMA_FILES[name]())
    actual = (ROOT / "schemas" / name).read_text(encoding="utf-8")
    assert actual == expected, f"regenerate with: python -m rewards.engine.schema schemas ({name})"


@pytest.mark.parametrize("name", sorted(SCHEMA_FILES))
def test_schemas_are_valid_draft_2020_12(name: str) -> None:
    jsonschema.Draft202012Validator.check_schema(json.loads((ROOT / "schemas" / name).read_text()))


def _shipped() -> list[Path]:
    return sorted((ROOT / "rulesets").glob("*.yaml"))


@pytest.mark.parametrize("path", _shipped(), ids=lambda p: p.name)
def test_shipped_files_name_their_schema_first(path: Path) -> None:
    schema = "definition.schema.json" if path.name == "definition.yaml" else "ruleset.schema.json"
    first = path.read_text(encoding="utf-8").splitlines()[0]
    assert first == f"# yaml-language-server: $schema=../schemas/{schema}"


@pytest.mark.parametrize("path", _shipped(), ids=lambda p: p.name)
def test_shipped_files_validate_with_the_exported_schema(path: Path) -> None:
    """What an editor would check: plain YAML (dates as strings) against the JSON file."""
    schema = "definition.schema.json" if path.name == "definition.yaml" else "ruleset.schema.json"

    class Loader(yaml.SafeLoader):
        pass

    Loader.yaml_implicit_resolvers = {
        key: [(tag, regex) for tag, regex in resolvers if tag != "tag:yaml.org,2002:timestamp"]
        for key, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    data = yaml.load(path.read_text(encoding="utf-8"), Loader=Loader)
    validator = jsonschema.Draft202012Validator(json.loads((ROOT / "schemas" / schema).read_text()))
    assert [error.message for error in validator.iter_errors(data)] == []


def test_every_classification_has_a_shipped_file() -> None:
    from rewards.engine.model import CLASSIFICATIONS

    assert {p.stem for p in _shipped()} == {*CLASSIFICATIONS, "definition"}
