"""``rewards simulate EVENTS.jsonl``: awards, and per offer applied or why not; no writes."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from rewards.cli import main

ROOT = Path(__file__).resolve().parents[2]

COFFEE_AND_GROCERIES = {
    "type": "purchase",
    "segments": ["gold", "staff"],
    "event": {
        "performed_on": "2026-03-02T15:10:00+02:00",
        "performed_by_unit": "store-001",
        "payment_medium": {"brand": "visa"},
        "products": [
            {"sku": "COFFEE-LATTE", "quantity": 2, "net_amount": 3.00, "vat_amount": 1.14},
            {"sku": "GROCERY", "net_amount": 34.86},
        ],
    },
}
FIVE_STAR = {
    "type": "achievement",
    "event": {"performed_on": "2026-03-02T12:00:00+02:00", "classification": "5-star-service"},
}


def write(tmp_path: Path, *lines: Any) -> Path:
    path = tmp_path / "events.jsonl"
    path.write_text(
        "\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n"
    )
    return path


def simulate(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["simulate", *args, "--rulesets", str(ROOT / "rulesets")])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_text_output_for_a_passing_and_a_failing_offer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    events = write(tmp_path, "# a comment", COFFEE_AND_GROCERIES, "", FIVE_STAR)
    code, out, err = simulate(capsys, str(events))
    assert code == 0, out + err
    lines = out.splitlines()
    assert lines[0] == (
        f"{events}:2: purchase performed 2026-03-02T15:10:00+02:00 at store-001: "
        "awards 1.00 (mode all)"
    )
    assert lines[1] == "  + 1.00 quiet-afternoon-coffee (lines 0 COFFEE-LATTE 1.00)"
    rows = {
        line.split()[1] if line.startswith("  applied") else line.split()[2]: line
        for line in lines
        if line.startswith(("  applied", "  not applied"))
    }
    assert rows["quiet-afternoon-coffee"].split() == ["applied", "quiet-afternoon-coffee", "1.00"]
    assert rows["basket-over-50"].endswith(
        "segment: contact in staff (excluded); transaction_amount 42.00 < min 50.00"
    )
    assert rows["north-weekend-basket"].endswith("schedule: mon not in sat, sun")
    assert (
        f"{events}:4: achievement performed 2026-03-02T12:00:00+02:00: awards 5.00 (mode all)"
        in lines
    )
    assert "  + 5.00 five-star-service" in lines
    assert err.strip().endswith(
        "2 event(s) simulated against "
        f"{ROOT / 'rulesets'} (version {err.split('(version ')[1].split(')')[0]}): "
        "2 earning, 6.00 awarded in total; 0 refused"
    )


def test_json_output_and_the_mode_option(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    events = write(tmp_path, FIVE_STAR)
    code, out, _ = simulate(capsys, str(events), "--format", "json", "--mode", "immediate")
    assert code == 0
    [line] = out.splitlines()
    result = json.loads(line)
    assert result["line"] == 1
    assert result["result"]["mode"] == "immediate"
    assert result["result"]["awards"] == []  # the five-star offer is batch
    outcome = {o["offer_id"]: o for o in result["result"]["offers"]}["five-star-service"]
    assert outcome["status"] == "not_applied"
    assert outcome["note"].startswith("conditions met, but its evaluation is batch")


def test_refused_lines_are_reported_and_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad_amount = json.loads(json.dumps(COFFEE_AND_GROCERIES))
    bad_amount["event"]["products"][0]["total_amount"] = 1
    events = write(
        tmp_path,
        {
            "type": "achievement",
            "event": {"performed_on": "2026-03-02T12:00:00Z", "classification": "nope"},
        },
        {"type": "web", "event": {}},
        "not json",
        {"type": "spend_request", "event": {}},
        bad_amount,
        FIVE_STAR,
    )
    code, out, err = simulate(capsys, str(events))
    assert code == 1
    lines = out.splitlines()
    assert (
        lines[0]
        == f"{events}:1: refused (classification_not_allowed): /event/classification: not declared for achievement events"
    )
    assert lines[1].startswith(f"{events}:2: refused (validation_failed): /event/performed_on:")
    assert lines[2].startswith(f"{events}:3: refused (invalid_json):")
    assert lines[3].startswith(f"{events}:4: refused (validation_failed): /type:")
    assert lines[4].startswith(
        f"{events}:5: refused (totals_mismatch): /event/products/0/total_amount: line total is 7.14"
    )
    assert lines[5].startswith(f"{events}:6: achievement")
    assert "1 event(s) simulated" in err and "5 refused" in err


def test_standard_input(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps(FIVE_STAR) + "\n"))
    code, out, _ = simulate(capsys, "-")
    assert code == 0
    assert out.startswith("<stdin>:1: achievement")


def test_a_refused_folder_is_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "rulesets"
    shutil.copytree(ROOT / "rulesets", folder)
    (folder / "achievement.yaml").write_text("classification: achievement\noffers: [\n")
    events = write(tmp_path, FIVE_STAR)
    code = main(["simulate", str(events), "--rulesets", str(folder)])
    captured = capsys.readouterr()
    assert code == 1
    assert captured.out == ""
    assert f"{folder}/achievement.yaml:3:1: YAML syntax error" in captured.err


def test_a_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = simulate(capsys, str(tmp_path / "none.jsonl"))
    assert code == 1
    assert "No such file or directory" in err


def test_an_unknown_store_or_segment_is_warned_about(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    typo = json.loads(json.dumps(COFFEE_AND_GROCERIES))
    typo["event"]["performed_by_unit"] = "store-01"
    typo["segments"] = ["gold", "stafff"]
    events = write(tmp_path, typo, COFFEE_AND_GROCERIES)
    code, out, _ = simulate(capsys, str(events))
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith(f"{events}:1: purchase performed 2026-03-02T15:10:00+02:00")
    assert lines[1:3] == [
        "  warning: performed_by_unit 'store-01' is not a unit of the definition: offers "
        "limited to units or merchants do not apply to it (the server would accept the event "
        "as it is)",
        "  warning: segment 'stafff' is not declared in the definition's segments: no offer "
        "names it",
    ]
    assert lines[3] == "  + 1.00 quiet-afternoon-coffee (lines 0 COFFEE-LATTE 1.00)"
    second = lines.index(next(line for line in lines if line.startswith(f"{events}:2:")))
    assert not any("warning" in line for line in lines[second:])
    code, out, _ = simulate(capsys, str(events), "--format", "json")
    first, other = (json.loads(line)["result"] for line in out.splitlines())
    assert len(first["warnings"]) == 2 and other["warnings"] == []


def test_prior_awards_as_one_number_or_per_offer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    top_up = {
        "type": "financial_achievement",
        "event": {
            "performed_on": "2026-03-02T12:00:00+02:00",
            "classification": "top-up",
            "amount": 150,
            "payment_medium": {"brand": "electron"},
        },
    }
    events = write(
        tmp_path,
        top_up,
        {**top_up, "prior_awards": 1},
        {**top_up, "prior_awards": {"electron-top-up": 1}},
        {**top_up, "prior_awards": {"five-star-service": 1}},
    )
    code, out, _ = simulate(capsys, str(events), "--format", "json")
    assert code == 0
    totals = [json.loads(line)["result"]["total_awarded"] for line in out.splitlines()]
    assert totals == [10, 0, 0, 10]
