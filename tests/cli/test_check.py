"""``rewards rulesets check``: every kind of broken edit of the shipped folder is refused with
its file and line (``file:line:column: message``, exit 1); a clean folder prints a one-line
summary (exit 0)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from rewards.cli import main

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "rulesets"


def run_check(folder: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str], str]:
    code = main(["rulesets", "check", str(folder)])
    captured = capsys.readouterr()
    return code, captured.out.splitlines(), captured.err


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    target = tmp_path / "rulesets"
    shutil.copytree(SHIPPED, target)
    return target


def test_the_shipped_folder_is_clean(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_check(SHIPPED, capsys)
    assert code == 0, out
    [summary] = out
    assert re.fullmatch(
        rf"{re.escape(str(SHIPPED))}: OK: 12 files, (\d+) offers, (\d+) examples passed "
        r"\(version [0-9a-f]{12}\)",
        summary,
    ), summary
    assert err == ""


def test_the_default_folder_comes_from_the_environment(
    folder: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REWARDS_RULESETS_DIR", str(folder))
    assert main(["rulesets", "check"]) == 0
    assert capsys.readouterr().out.startswith(f"{folder}: OK: 12 files,")


# (id, file, text to replace, replacement, text marking the expected line, message part)
# The expected line is the line of the marker in the edited file (its first occurrence).
EDITS = [
    (
        "bad-yaml",
        "achievement.yaml",
        "    award: {amount: 5}\n",
        "    award: {amount: 5\n",
        "    conditions: {event_classifications: [5-star-service]}",
        "YAML syntax error",
    ),
    (
        "tab-indentation",
        "referral.yaml",
        "    name: EUR 5 to the new friend",
        "\tname: EUR 5 to the new friend",
        "\tname",
        "YAML syntax error",
    ),
    (
        "duplicate-key",
        "achievement.yaml",
        "    award: {amount: 5}\n",
        "    award: {amount: 5}\n    award: {amount: 6}\n",
        "award: {amount: 6}",
        "duplicate key 'award'",
    ),
    (
        "unknown-key",
        "achievement.yaml",
        "    evaluation: batch\n",
        "    evaluation: batch\n    colour: red\n",
        "colour",
        "offers[0].colour: unknown key 'colour'",
    ),
    (
        "unknown-condition",
        "achievement.yaml",
        "{event_classifications: [5-star-service]}",
        "{event_classifications: [5-star-service], weather: sunny}",
        "weather",
        "unknown condition 'weather'",
    ),
    (
        "condition-not-allowed-for-classification",
        "achievement.yaml",
        "{event_classifications: [5-star-service]}",
        "{event_classifications: [5-star-service], transaction_amount: {min: 5}}",
        "transaction_amount",
        "condition 'transaction_amount' is not allowed for achievement offers",
    ),
    (
        "wrong-type",
        "achievement.yaml",
        "award: {amount: 5}",
        "award: {amount: five}",
        "{amount: five}",
        "offers[0].award.amount: 'five' is not of type 'number'",
    ),
    (
        "percentage-not-allowed",
        "achievement.yaml",
        "award: {amount: 5}",
        "award: {percentage: 5}",
        "percentage",
        "offers[0].award.percentage: unknown key 'percentage'",
    ),
    (
        "amount-and-percentage",
        "increase_revenue_transaction.yaml",
        "award: {percentage: 5, max: 10}",
        "award: {percentage: 5, max: 10, amount: 2}",
        "award: {percentage: 5, max: 10, amount: 2}",
        "the award needs exactly one of 'amount' or 'percentage'",
    ),
    (
        "unknown-unit",
        "increase_revenue_transaction.yaml",
        "units: [store-001, north]",
        "units: [store-001, west]",
        "west",
        "unknown unit or unit group 'west'",
    ),
    (
        "duplicate-offer-id",
        "behaviour.yaml",
        "  - id: facebook-like",
        "  - id: five-star-service",
        "five-star-service",
        "duplicate offer id 'five-star-service' (first used at",
    ),
    (
        "bad-offer-id",
        "achievement.yaml",
        "  - id: five-star-service",
        "  - id: Five Star",
        "Five Star",
        "does not match '^[a-z0-9-]+$'",
    ),
    (
        "bad-glob",
        "increase_revenue_product.yaml",
        'products: [{sku: "BEANS-PREMIUM-*", amount: {min: 20}}]',
        'products: [{sku: "BEANS-[PREMIUM-*", amount: {min: 20}}]',
        "BEANS-[PREMIUM",
        "invalid glob 'BEANS-[PREMIUM-*': '[' at position 7 is never closed",
    ),
    (
        "inverted-range",
        "increase_revenue_product.yaml",
        "amount: {min: 20}}]",
        "amount: {min: 20, max: 10}}]",
        "max: 10",
        "the range is inverted: min 20 is greater than max 10",
    ),
    (
        "inverted-validity",
        "increase_revenue_transaction.yaml",
        "valid: {from: 2026-01-01, until: 2026-12-31}",
        "valid: {from: 2026-12-31, until: 2026-01-01}",
        "from: 2026-12-31",
        "'from' is after 'until'",
    ),
    (
        "bad-date",
        "increase_revenue_transaction.yaml",
        "valid: {from: 2026-01-01, until: 2026-12-31}",
        "valid: {from: 2026-01-01, until: 2026-13-01}",
        "2026-13-01",
        "is not a 'date'",
    ),
    (
        "unknown-weekday",
        "increase_revenue_transaction.yaml",
        "schedule: {days: [sat, sun]}",
        "schedule: {days: [saturday, sun]}",
        "saturday",
        "'saturday' is not one of",
    ),
    (
        "inverted-hours",
        "utilise_free_capacity.yaml",
        'hours: [{from: "14:00", until: "17:00"}]',
        'hours: [{from: "17:00", until: "14:00"}]',
        'from: "17:00"',
        "'from' 17:00 must be before 'until' 14:00",
    ),
    (
        "unknown-event-classification",
        "achievement.yaml",
        "{event_classifications: [5-star-service]}",
        "{event_classifications: [6-star-service]}",
        "6-star",
        "unknown event classification '6-star-service'",
    ),
    (
        "event-classification-of-another-type",
        "achievement.yaml",
        "{event_classifications: [5-star-service]}",
        "{event_classifications: [top-up]}",
        "top-up",
        "event classification 'top-up' is declared for financial_achievement events, not achievement",
    ),
    (
        "unknown-kpi",
        "financial_statement.yaml",
        "kpis: [{kpi: loan-balance, min: 10000}]",
        "kpis: [{kpi: loan-balnce, min: 10000}]",
        "loan-balnce",
        "unknown KPI 'loan-balnce'",
    ),
    (
        "aggregate-immediate",
        "loyalty_transaction_number.yaml",
        "    evaluation: batch\n",
        "    evaluation: immediate\n",
        "evaluation: immediate",
        "'immediate' is not one of ['batch']",
    ),
    (
        "segments-both-included-and-excluded",
        "increase_revenue_transaction.yaml",
        "segments: {include: [gold, silver], exclude: [staff]}",
        "segments: {include: [gold, silver], exclude: [staff, gold]}",
        "segments: {include: [gold, silver], exclude: [staff, gold]}",
        "segments both included and excluded: ['gold']",
    ),
    (
        "classification-does-not-match-file",
        "utilise_free_capacity.yaml",
        "classification: utilise_free_capacity",
        "classification: increase_revenue_product",
        "classification: increase_revenue_product",
        "'increase_revenue_product' does not match the file name 'utilise_free_capacity.yaml'",
    ),
    (
        "failing-embedded-example",
        "achievement.yaml",
        "        expect: {award: 5}\n",
        "        expect: {award: 4}\n",
        "      - event:\n          performed_on",
        "example of offer 'five-star-service' fails: expected award 4.00, got 5.00",
    ),
    (
        "example-without-zone",
        "achievement.yaml",
        'performed_on: "2026-03-02T12:00:00+02:00"\n          classification: 5-star-service',
        'performed_on: "2026-03-02T12:00:00"\n          classification: 5-star-service',
        '"2026-03-02T12:00:00"',
        "performed_on needs a zone",
    ),
    (
        "example-with-unknown-field",
        "achievement.yaml",
        "          classification: 5-star-service\n        expect",
        "          classification: 5-star-service\n          amount: 5\n        expect",
        "          amount: 5",
        "unknown key 'amount'",
    ),
    (
        "definition-unknown-time-zone",
        "definition.yaml",
        "time_zone: Europe/Nicosia",
        "time_zone: Europe/Nicosa",
        "Europe/Nicosa",
        "unknown time zone 'Europe/Nicosa'",
    ),
    (
        "definition-bad-regex",
        "definition.yaml",
        'regex: "^4[0-9]{15}$"',
        'regex: "^4[0-9{15}$"',
        '"^4[0-9{15}$"',
        "invalid regular expression",
    ),
    (
        "definition-unknown-reduction",
        "definition.yaml",
        "{code: store-002, group: north, reduction: back_end}",
        "{code: store-002, group: north, reduction: backend}",
        "backend",
        "'backend' is not one of ['front_end', 'back_end']",
    ),
    (
        "merchant-unknown-unit",
        "definition.yaml",
        "    units: [fuel-001]\n",
        "    units: [fuel-002]\n",
        "fuel-002",
        "merchants[2].units[0]: unknown unit 'fuel-002'",
    ),
    (
        "merchant-unit-of-another-merchant",
        "definition.yaml",
        "    units: [fuel-001]\n",
        "    units: [fuel-001, cafe-001]\n",
        "fuel-001, cafe-001",
        "unit 'cafe-001' already belongs to merchant 'bean-co'",
    ),
    (
        "merchant-unknown-mode",
        "definition.yaml",
        "processor_mode: claim ",
        "processor_mode: claims ",
        "claims",
        "'claims' is not one of ['direct', 'matching', 'claim']",
    ),
    (
        "merchant-duplicate-id",
        "definition.yaml",
        "  - id: fuel-stop\n",
        "  - id: bean-co\n",
        "id: bean-co\n    name: Fuel",
        "duplicate merchant id 'bean-co'",
    ),
    (
        "offer-unknown-merchant",
        "increase_revenue_transaction.yaml",
        "merchants: [bean-co, page-turners, fuel-stop]",
        "merchants: [bean-co, page-turner, fuel-stop]",
        "page-turner,",
        "unknown merchant 'page-turner'",
    ),
]


@pytest.mark.parametrize(
    ("file", "old", "new", "marker", "message"),
    [pytest.param(*edit[1:], id=edit[0]) for edit in EDITS],
)
def test_a_broken_edit_is_refused_at_its_line(
    folder: Path,
    capsys: pytest.CaptureFixture[str],
    file: str,
    old: str,
    new: str,
    marker: str,
    message: str,
) -> None:
    path = folder / file
    text = path.read_text(encoding="utf-8")
    assert text.count(old) >= 1, f"{old!r} not in {file}"
    edited = text.replace(old, new, 1)
    path.write_text(edited, encoding="utf-8")
    line = edited[: edited.index(marker)].count("\n") + 1
    code, out, err = run_check(folder, capsys)
    assert code == 1
    assert out, "no problem printed"
    for printed in out:
        assert re.match(r"^.+\.yaml:\d+:\d+: .+$", printed), printed
    hits = [p for p in out if p.startswith(f"{path}:{line}:") and message in p]
    assert hits, f"expected {path}:{line}: ... {message}\ngot:\n" + "\n".join(out)
    assert err.strip().startswith(f"{folder}: refused: {len(out)} problem(s) in")


def test_the_kinds_of_edits_are_many() -> None:
    assert len(EDITS) >= 20


def test_errors_in_several_files_are_all_reported(
    folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for file, old, new in (
        ("achievement.yaml", "award: {amount: 5}", "award: {amount: x}"),
        ("referral.yaml", "classification: referral", "classification: nope"),
    ):
        path = folder / file
        path.write_text(path.read_text().replace(old, new, 1))
    code, out, err = run_check(folder, capsys)
    assert code == 1
    assert {Path(p.split(":")[0]).name for p in out} == {"achievement.yaml", "referral.yaml"}
    assert "in 2 file(s)" in err


def test_a_missing_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_check(tmp_path / "nope", capsys)
    assert code == 1
    assert out == [f"{tmp_path / 'nope'}:1:1: not a folder"]


def test_shipped_files_carry_the_editor_schema_header() -> None:
    for path in sorted(SHIPPED.glob("*.yaml")):
        schema = "definition" if path.name == "definition.yaml" else "ruleset"
        first = path.read_text(encoding="utf-8").splitlines()[0]
        assert first == f"# yaml-language-server: $schema=../schemas/{schema}.schema.json", path
