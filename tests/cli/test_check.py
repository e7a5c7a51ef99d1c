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
        "tabs are not allowed, indent with spaces",
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
        "offer five-star-service: colour: unknown key 'colour'",
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
        "offer five-star-service: award.amount: must be a number, not 'five'",
    ),
    (
        "percentage-not-allowed",
        "achievement.yaml",
        "award: {amount: 5}",
        "award: {percentage: 5}",
        "percentage",
        "offer five-star-service: award.percentage: unknown key 'percentage'",
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
        "offers[0].id: use lower-case letters a-z, digits 0-9 and - only, not 'Five Star'",
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
        "offer five-star-service: examples[0]: the example fails: expected award 4.00, got 5.00",
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
    (
        "bad-hour",
        "utilise_free_capacity.yaml",
        'hours: [{from: "14:00", until: "17:00"}]',
        'hours: [{from: "14:00", until: "17:60"}]',
        '"17:60"',
        "offer quiet-afternoon-coffee: conditions.schedule.hours[0].until: "
        "time must be HH:MM, 00:00 to 23:59 (24:00 allowed as until), not '17:60'",
    ),
    (
        "yes-is-not-a-boolean",
        "increase_revenue_transaction.yaml",
        "award: {amount: 20, instant_spend: true}",
        "award: {amount: 20, instant_spend: yes}",
        "instant_spend: yes",
        "offer big-basket-bonus: award.instant_spend: must be true or false, not 'yes'",
    ),
    (
        "offer-named-by-its-id",
        "increase_revenue_transaction.yaml",
        "award: {percentage: 5, max: 10}",
        "award: {percentage: 5, max: 0}",
        "award: {percentage: 5, max: 0}",
        "offer basket-over-50: award.max: must be more than 0, not 0",
    ),
    (
        "example-prior-awards-shape",
        "behaviour.yaml",
        "prior_awards: 2",
        "prior_awards: [facebook-like]",
        "[facebook-like]",
        "offer facebook-like: examples[0].event.prior_awards: a list is not valid: awards "
        "already received within max_awards windows: a number (from the offer being tested), "
        "or {offer id: number}",
    ),
    (
        "example-prior-awards-of-an-unknown-offer",
        "behaviour.yaml",
        "prior_awards: {facebook-like: 3}",
        "prior_awards: {facebook-likes: 3}",
        "facebook-likes: 3",
        "offer facebook-like: examples[1].event.prior_awards.facebook-likes: "
        "no offer has the id 'facebook-likes'",
    ),
    (
        "undeclared-segment",
        "increase_revenue_transaction.yaml",
        "segments: {include: [gold, silver], exclude: [staff]}",
        "segments: {include: [gold, silvr], exclude: [staff]}",
        "silvr",
        "offer basket-over-50: conditions.segments.include[1]: unknown segment 'silvr' "
        "(declare it in segments of definition.yaml, or set allow_unknown: true there)",
    ),
    (
        "sku-pattern-outside-the-catalogue",
        "increase_revenue_product.yaml",
        'products: [{sku: "BEANS-PREMIUM-*", amount: {min: 20}}]',
        'products: [{sku: "BEENS-PREMIUM-*", amount: {min: 20}}]',
        "BEENS-PREMIUM",
        "offer premium-beans: conditions.products[0].sku: 'BEENS-PREMIUM-*' matches no "
        "product of the catalogue (add the product to catalogue in definition.yaml, or "
        "correct the code)",
    ),
    (
        "undeclared-unit-named",
        "increase_revenue_transaction.yaml",
        "units: [store-001, north]",
        "units: [store-004, north]",
        "store-004",
        "offer basket-over-50: conditions.units[0]: unknown unit or unit group 'store-004' "
        "(declare it in units of definition.yaml)",
    ),
    (
        "undeclared-merchant-named",
        "increase_revenue_transaction.yaml",
        "merchants: [bean-co, page-turners, fuel-stop]",
        "merchants: [bean-co, page-turners, fuel-stops]",
        "fuel-stops",
        "offer card-linked-cashback: conditions.merchants[2]: unknown merchant 'fuel-stops' "
        "(declare it in merchants of definition.yaml)",
    ),
    (
        "catalogue-duplicate-product",
        "definition.yaml",
        "  - {sku: CARD-PURCHASE, name: A card payment",
        "  - {sku: GROCERY, name: A card payment",
        "{sku: GROCERY, name: A card",
        "catalogue[11]: duplicate product 'GROCERY'",
    ),
    (
        "catalogue-bad-pattern",
        "definition.yaml",
        '{sku: "TV-*", name',
        '{sku: "TV-[*", name',
        '"TV-[*"',
        "catalogue[10].sku: invalid pattern 'TV-[*'",
    ),
    (
        "segments-duplicate-code",
        "definition.yaml",
        "{code: bronze, name: Bronze members}",
        "{code: silver, name: Bronze members}",
        "{code: silver, name: Bronze",
        "segments.codes[2]: duplicate segment 'silver'",
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
    assert not any(": warning: " in hit for hit in hits)
    errors = [p for p in out if ": warning: " not in p]
    assert err.strip().startswith(f"{folder}: refused: {len(errors)} problem(s) in")


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


def test_all_kinds_of_mistakes_are_reported_at_once(
    folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Schema errors and the cross-checks that can still run, in one pass: in one offer,
    in another file, and in the definition."""
    for file, old, new in (
        (
            "achievement.yaml",
            "    award: {amount: 5}\n    conditions: {event_classifications: [5-star-service]}",
            "    award: {amount: five}\n    conditions: {event_classifications: [6-star-service]}",
        ),
        (
            "increase_revenue_transaction.yaml",
            "units: [store-001, north]",
            "units: [store-001, west]",
        ),
        ("definition.yaml", "processor_mode: claim ", "processor_mode: claims "),
    ):
        path = folder / file
        text = path.read_text()
        assert old in text, old
        path.write_text(text.replace(old, new, 1))
    code, out, err = run_check(folder, capsys)
    assert code == 1
    expected = [
        ("achievement.yaml", "offer five-star-service: award.amount: must be a number, not 'five'"),
        (
            "achievement.yaml",
            "offer five-star-service: conditions.event_classifications[0]: "
            "unknown event classification '6-star-service'",
        ),
        ("increase_revenue_transaction.yaml", "unknown unit or unit group 'west'"),
        ("definition.yaml", "merchants[2].processor_mode: 'claims' is not one of"),
    ]
    for file, message in expected:
        assert any(p.startswith(f"{folder / file}:") and message in p for p in out), (
            f"{file}: {message}\n" + "\n".join(out)
        )
    assert "4 problem(s) in 3 file(s)" in err


# Warnings: (id, file, text to replace, replacement, file warned about, marker of the
# expected line there, message, extra arguments). Each one prints file:line:column: warning: ..., exits 0, and 1 with --strict.
WARNINGS = [
    (
        "offer-without-examples",
        "achievement.yaml",
        "  - id: staff-course-completed\n",
        "  - id: course-thanks\n    name: EUR 1 per course\n    award: {amount: 1}\n"
        "  - id: staff-course-completed\n",
        "achievement.yaml",
        "  - id: course-thanks",
        "offer course-thanks: no examples: add one that earns and one that just misses",
        [],
    ),
    (
        "amount-below-a-cent",
        "achievement.yaml",
        "  - id: staff-course-completed\n",
        "  - id: course-thanks\n    name: EUR 2.505 per course\n    award: {amount: 2.505}\n"
        "  - id: staff-course-completed\n",
        "achievement.yaml",
        "{amount: 2.505}",
        "offer course-thanks: award.amount: 2.505 has more than 2 decimals: it is paid rounded "
        "to the cent (2.51)",
        [],
    ),
    (
        "percentage-above-the-ceiling",
        "definition.yaml",
        "checks: {max_percentage: 50}",
        "checks: {max_percentage: 4}",
        "increase_revenue_transaction.yaml",
        "award: {percentage: 5, max: 10}",
        "offer basket-over-50: award.percentage: 5% is above the usual ceiling of 4% "
        "(checks: max_percentage in definition.yaml)",
        [],
    ),
    (
        "validity-ended",
        "increase_revenue_transaction.yaml",
        "",
        "",
        "increase_revenue_transaction.yaml",
        "until: 2026-12-31",
        "offer basket-over-50: valid.until: the offer ended on 2026-12-31 (before today, "
        "2027-01-15): remove it or move its dates",
        ["--today", "2027-01-15"],
    ),
]


@pytest.mark.parametrize(
    ("file", "old", "new", "warned", "marker", "message", "extra"),
    [pytest.param(*warning[1:], id=warning[0]) for warning in WARNINGS],
)
def test_a_doubtful_edit_is_warned_about_at_its_line(
    folder: Path,
    capsys: pytest.CaptureFixture[str],
    file: str,
    old: str,
    new: str,
    warned: str,
    marker: str,
    message: str,
    extra: list[str],
) -> None:
    edited_path = folder / file
    text = edited_path.read_text(encoding="utf-8")
    assert text.count(old) >= 1, f"{old!r} not in {file}"
    edited_path.write_text(text.replace(old, new, 1) if old else text, encoding="utf-8")
    path = folder / warned
    edited = path.read_text(encoding="utf-8")
    line = edited[: edited.index(marker)].count("\n") + 1
    assert main(["rulesets", "check", *extra, str(folder)]) == 0
    out = capsys.readouterr().out.splitlines()
    hits = [p for p in out if p.startswith(f"{path}:{line}:") and f": warning: {message}" in p]
    assert hits, f"expected {path}:{line}: warning: {message}\ngot:\n" + "\n".join(out)
    warnings = [p for p in out if ": warning: " in p]
    assert re.fullmatch(
        rf"{re.escape(str(folder))}: OK: 12 files, \d+ offers, \d+ examples passed, "
        rf"{len(warnings)} warning\(s\) \(version [0-9a-f]{{12}}\)",
        out[-1],
    ), out[-1]
    assert main(["rulesets", "check", "--strict", *extra, str(folder)]) == 1
    strict = capsys.readouterr()
    assert strict.out.splitlines() == warnings
    assert strict.err.strip() == f"{folder}: refused (--strict): {len(warnings)} warning(s)"


def test_the_shipped_folder_is_clean_even_when_strict(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # --today: the day is fixed so the test does not change with the calendar (the
    # shipped offers' validity: basket-over-50 ends on 2026-12-31)
    assert main(["rulesets", "check", "--strict", "--today", "2026-12-05", str(SHIPPED)]) == 0
    captured = capsys.readouterr()
    [summary] = captured.out.splitlines()
    assert summary.startswith(f"{SHIPPED}: OK: 12 files,"), summary
    assert "warning" not in summary
    assert captured.err == ""


def test_a_definition_without_catalogues_loads_as_before_with_one_warning(
    folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    definition = folder / "definition.yaml"
    text = definition.read_text(encoding="utf-8")
    start = text.index("\nsegments:")
    end = text.index("  - {sku: CARD-PURCHASE")
    end = text.index("\n", end) + 1
    definition.write_text(text[:start] + "\n" + text[end:], encoding="utf-8")
    assert "catalogue" not in definition.read_text() and "codes:" not in definition.read_text()
    code, out, _ = run_check(folder, capsys)
    assert code == 0, out
    warning, summary = out
    assert warning == (
        f"{definition}:3:1: warning: no catalogue: the segments and the product codes offers "
        "name are not checked (declare segments and catalogue in definition.yaml)"
    )
    assert ", 1 warning(s) (version" in summary
    # no catalogue, nothing to refuse: an unknown segment and product code are accepted
    offers = folder / "increase_revenue_transaction.yaml"
    offers.write_text(
        offers.read_text().replace("exclude: [staff]", "exclude: [staff, contractor]")
    )
    assert run_check(folder, capsys)[0] == 0
    assert main(["rulesets", "check", "--strict", str(folder)]) == 1


def test_a_bad_day_for_today(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["rulesets", "check", "--today", "2026-13-01", str(folder)])
    assert exit_.value.code == 2
    assert "'2026-13-01' is not a date (YYYY-MM-DD)" in capsys.readouterr().err
