"""``rewards backtest``: a recorded history replayed against the current and a new folder,
with a cost difference worked out by hand; nothing is written."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from decimal import Decimal as D
from pathlib import Path
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import TestClient
from sqlalchemy import func, select

from rewards.analyst.backtest import backtest
from rewards.cli import main
from rewards.db.tables import Award, Event, WalletTransaction
from rewards.engine import load_rulesets
from tests.conftest import BOTH, ROOT

Client = TestClient[Litestar]


@pytest.fixture
def rulesets_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "current"
    shutil.copytree(ROOT / "tests" / "api" / "offer_rulesets", folder)
    return folder


@pytest.fixture
def new_dir(tmp_path: Path, rulesets_dir: Path) -> Path:
    """The analyst's change: gold-basket 10% instead of 5% (still max 8), weekly-once twice a
    week, a new course offer, electron-any-type removed."""
    folder = tmp_path / "new"
    shutil.copytree(rulesets_dir, folder)

    def edit(file: str, old: str, new: str) -> None:
        path = folder / file
        text = path.read_text()
        assert old in text, (file, old)
        path.write_text(text.replace(old, new, 1))

    edit(
        "increase_revenue_transaction.yaml",
        "award: {percentage: 5, max: 8}",
        "award: {percentage: 10, max: 8}",
    )
    edit(
        "increase_revenue_transaction.yaml",
        "max_awards: {count: 1, window_days: 7}",
        "max_awards: {count: 2, window_days: 7}",
    )
    edit(
        "increase_revenue_transaction.yaml",
        """  - id: electron-any-type
    name: EUR 1 for any electron payment at the card desk
    evaluation: immediate
    award: {amount: 1}
    conditions:
      units: [card-desk]
      payment_medium: {brands: [electron]}
""",
        "",
    )
    edit(
        "achievement.yaml",
        "offers:\n",
        "offers:\n  - {id: course-extra, name: EUR 1 more per course, award: {amount: 1}, "
        "conditions: {event_classifications: [course-completed]}}\n",
    )
    return folder


@pytest.fixture
def history(client: Client, new_contact: Callable[..., Any]) -> dict[str, Any]:
    ann = new_contact(segments=["gold"])
    bob = new_contact()
    cy = new_contact()

    def post(path: str, contact: dict[str, Any], at: str, **fields: Any) -> dict[str, Any]:
        body = {
            "contact": {"contact_id": contact["id"]},
            "performed_on": at,
            "process_immediately": True,
            **fields,
        }
        response = client.post(f"/v1/events/{path}", json=body)
        assert response.status_code == 201, response.text
        event: dict[str, Any] = response.json()
        return event

    def buy(contact: dict[str, Any], at: str, unit: str, net: str, **fields: Any) -> dict[str, Any]:
        return post(
            "purchases",
            contact,
            at,
            performed_by_unit=unit,
            reference_number="R",
            products=[{"sku": "BASKET", "net_amount": net}],
            **fields,
        )

    visa_credit = {"payment_medium": {"brand": "visa", "type": "credit"}}
    before = buy(bob, "2026-02-27T10:00:00+02:00", "weekly-shop", "5.00")  # outside the window
    assert [a["offer_id"] for a in before["awards"]] == ["weekly-once"]
    buy(ann, "2026-03-04T10:00:00+02:00", "store-003", "100.00", **visa_credit)
    buy(ann, "2026-03-05T10:00:00+02:00", "store-003", "60.00", **visa_credit)
    cancelled = buy(ann, "2026-03-07T10:00:00+02:00", "store-003", "100.00", **visa_credit)
    assert client.post(f"/v1/events/{cancelled['id']}/cancel").status_code == 200
    for day in ("02", "04", "10"):
        buy(bob, f"2026-03-{day}T10:00:00+02:00", "weekly-shop", "5.00")
    post("achievements", cy, "2026-03-06T10:00:00+02:00", classification="course-completed")
    post("achievements", cy, "2026-03-06T11:00:00+02:00", classification="5-star-service")
    buy(cy, "2026-04-01T10:00:00+03:00", "store-003", "100.00")  # after the window
    return {"ann": ann, "bob": bob, "cy": cy}


def table(result: Any) -> dict[str, tuple[int, D, int, D, int, D]]:
    return {
        o.offer_id: (
            o.current_count,
            o.current_amount,
            o.new_count,
            o.new_amount,
            o.count_difference,
            o.amount_difference,
        )
        for o in result.offers
        if o.current_count or o.new_count or o.offer_id == "electron-any-type"
    }


EXPECTED = {
    # 5% of 100 (5.00) and of 60 (3.00) -> 10%: 10.00 capped at 8.00, and 6.00
    "gold-basket": (2, D("8.00"), 2, D("14.00"), 0, D("6.00")),
    # Feb 27 award counts in the window: current 1/week pays only Mar 10; 2/week: Mar 2, Mar 10
    "weekly-once": (1, D("3.00"), 2, D("6.00"), 1, D("3.00")),
    "course-bonus": (1, D("2.50"), 1, D("2.50"), 0, D("0.00")),
    "five-star-service": (1, D("5.00"), 1, D("5.00"), 0, D("0.00")),  # batch offers count too
    "course-extra": (0, D("0.00"), 1, D("1.00"), 1, D("1.00")),
    "electron-any-type": (0, D("0.00"), 0, D("0.00"), 0, D("0.00")),  # only in the current
}


def counts(app: Litestar) -> tuple[int, ...]:
    with app.state.database.transaction(write=False) as session:
        return tuple(
            session.scalar(select(func.count()).select_from(table))
            for table in (Event, Award, WalletTransaction)
        )


@pytest.mark.parametrize("database_url", BOTH, indirect=True)
def test_backtest_service_known_cost_difference(
    app: Litestar, history: dict[str, Any], rulesets_dir: Path, new_dir: Path
) -> None:
    from datetime import datetime

    current, new = load_rulesets(rulesets_dir), load_rulesets(new_dir)
    seen: list[tuple[int, int]] = []
    before = counts(app)
    start = datetime.fromisoformat("2026-03-01T00:00:00+02:00")
    end = datetime.fromisoformat("2026-04-01T00:00:00+03:00")
    with app.state.database.session(write=False) as session:
        result = backtest(
            session, current, new, start, end, progress=lambda d, t: seen.append((d, t))
        )
        session.rollback()
    assert counts(app) == before
    assert result.events == 7  # the cancelled purchase and the events outside are left out
    assert seen[0] == (0, 7) and seen[-1] == (7, 7)
    assert table(result) == EXPECTED
    assert (result.current_count, result.current_amount) == (5, D("18.50"))
    assert (result.new_count, result.new_amount) == (7, D("28.50"))
    assert (result.count_difference, result.amount_difference) == (2, D("10.00"))
    assert (result.current_version, result.new_version) == (current.version, new.version)
    assert result.not_replayed == []  # the test folders have no period aggregate offers


@pytest.mark.parametrize("database_url", BOTH, indirect=True)
def test_backtest_command_json_and_table(
    app: Litestar,
    history: dict[str, Any],
    rulesets_dir: Path,
    new_dir: Path,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("REWARDS_DATABASE_URL", database_url)
    monkeypatch.setenv("REWARDS_RULESETS_DIR", str(rulesets_dir))
    before = counts(app)
    window = ["--from", "2026-03-01", "--to", "2026-03-31"]
    assert (
        main(["backtest", "--rulesets", str(new_dir), *window, "--format", "json", "--no-progress"])
        == 0
    )
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    assert captured.err == ""
    assert result["events"] == 7
    assert (result["window_from"], result["window_to"]) == (
        "2026-03-01T00:00:00+02:00",
        "2026-04-01T00:00:00+03:00",
    )
    rows = {o["offer_id"]: o for o in result["offers"]}
    assert rows["gold-basket"]["amount_difference"] == 6.0
    assert rows["weekly-once"]["count_difference"] == 1
    assert result["amount_difference"] == 10.0

    assert main(["backtest", "--rulesets", str(new_dir), *window, "--progress"]) == 0
    captured = capsys.readouterr()
    assert "replaying" in captured.err and "100% 7/7 events" in captured.err
    lines = captured.out.splitlines()
    assert lines[0].startswith("Backtest 2026-03-01T00:00:00+02:00 .. 2026-04-01T00:00:00+03:00")
    assert lines[0].endswith(": 7 events replayed")
    gold = next(line for line in lines if line.startswith("gold-basket"))
    assert gold.split() == ["gold-basket", "2", "8.00", "2", "14.00", "0", "+6.00"]
    total = next(line for line in lines if line.startswith("total"))
    assert total.split() == ["total", "5", "18.50", "7", "28.50", "+2", "+10.00"]
    assert counts(app) == before

    # a window without events: no bar at all, never "0/0"
    empty = ["--from", "2025-03-01", "--to", "2025-03-31"]
    assert main(["backtest", "--rulesets", str(new_dir), *empty, "--progress"]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    assert captured.out.splitlines()[0].endswith(": 0 events replayed")


def test_backtest_command_refusals(
    database_url: str,
    rulesets_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("REWARDS_DATABASE_URL", database_url)
    monkeypatch.setenv("REWARDS_RULESETS_DIR", str(rulesets_dir))
    broken = tmp_path / "broken"
    shutil.copytree(rulesets_dir, broken)
    (broken / "achievement.yaml").write_text("classification: achievement\noffers: [{id: X}]\n")
    assert (
        main(["backtest", "--rulesets", str(broken), "--from", "2026-03-01", "--to", "2026-03-02"])
        == 1
    )
    assert f"{broken}/achievement.yaml:2:" in capsys.readouterr().err
    assert (
        main(["backtest", "--rulesets", str(rulesets_dir), "--from", "March", "--to", "2026-03-02"])
        == 2
    )
    assert "'March' is not a date" in capsys.readouterr().err
    assert (
        main(
            [
                "backtest",
                "--rulesets",
                str(rulesets_dir),
                "--from",
                "2026-03-02",
                "--to",
                "2026-03-01",
            ]
        )
        == 2
    )
    assert "--to is before --from" in capsys.readouterr().err


def test_backtest_without_a_database_says_so_in_one_line_and_creates_nothing(
    rulesets_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("REWARDS_DATABASE_URL", raising=False)
    monkeypatch.setenv("REWARDS_RULESETS_DIR", str(rulesets_dir))
    window = ["--rulesets", str(rulesets_dir), "--from", "2026-03-01", "--to", "2026-03-02"]
    assert main(["backtest", *window]) == 1
    assert capsys.readouterr().err == (
        "rewards backtest: no database file rewards.db (give --database or REWARDS_DATABASE_URL)\n"
    )
    assert main(["backtest", *window, "--database", f"sqlite:///{tmp_path / 'gone.db'}"]) == 1
    assert "no database file" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["current"]  # no database made
    (tmp_path / "empty.db").touch()
    assert main(["backtest", *window, "--database", "sqlite:///empty.db"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "holds no rewards schema" in err and "rewards migrate" in err


def test_backtest_database_option_wins_over_the_environment(
    app: Litestar,
    history: dict[str, Any],
    rulesets_dir: Path,
    new_dir: Path,
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("REWARDS_DATABASE_URL", f"sqlite:///{tmp_path / 'elsewhere.db'}")
    monkeypatch.setenv("REWARDS_RULESETS_DIR", str(rulesets_dir))
    window = ["--from", "2026-03-01", "--to", "2026-03-31", "--format", "json"]
    argv = ["backtest", "--rulesets", str(new_dir), *window, "--database", database_url]
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["events"] == 7
    assert not (tmp_path / "elsewhere.db").exists()


def offer_rows(lines: list[str]) -> list[str]:
    """The offers of a backtest table: after the two heading lines, before the rule."""
    heading = next(i for i, line in enumerate(lines) if line.startswith("offer"))
    rule = next(i for i, line in enumerate(lines) if line.startswith("---"))
    return [line.split()[0] for line in lines[heading + 2 : rule]]


@pytest.mark.parametrize("database_url", BOTH, indirect=True)
def test_backtest_lists_the_offers_the_change_touches_first_and_the_rest_with_all(
    app: Litestar,
    history: dict[str, Any],
    rulesets_dir: Path,
    new_dir: Path,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("REWARDS_DATABASE_URL", database_url)
    monkeypatch.setenv("REWARDS_RULESETS_DIR", str(rulesets_dir))
    path = new_dir / "achievement.yaml"  # a description is not a change of the offer
    path.write_text(
        path.read_text().replace(
            "    name: EUR 2.50 per completed course\n",
            "    name: EUR 2.50 per completed course\n    description: reworded\n",
        )
    )
    window = ["--from", "2026-03-01", "--to", "2026-03-31", "--no-progress"]
    assert main(["backtest", "--rulesets", str(new_dir), *window, "--format", "json"]) == 0
    result = json.loads(capsys.readouterr().out)
    touched = ["course-extra", "gold-basket", "weekly-once", "electron-any-type"]
    assert [(o["offer_id"], o["definition_changed"]) for o in result["offers"] if o["changed"]] == [
        (offer_id, True) for offer_id in touched
    ]  # electron-any-type: removed, no cost either way; course-extra: added
    assert result["changed_offers"] == 4
    assert [o["changed"] for o in result["offers"]] == [True] * 4 + [False] * (
        len(result["offers"]) - 4
    )  # the changed first

    assert main(["backtest", "--rulesets", str(new_dir), *window]) == 0
    lines = capsys.readouterr().out.splitlines()
    listed = offer_rows(lines)
    assert listed == touched
    changed = next(line for line in lines if line.startswith("changed"))
    assert changed.split() == [
        "changed",
        "(4",
        "offers)",
        "3",
        "11.00",
        "5",
        "21.00",
        "+2",
        "+10.00",
    ]
    total = next(line for line in lines if line.startswith("total"))
    assert total.split() == ["total", "5", "18.50", "7", "28.50", "+2", "+10.00"]
    unlisted = len(result["offers"]) - 4
    assert (
        f"{unlisted} offers the change does not touch (same definition, same cost) are not "
        "listed: --all lists them."
    ) in lines
    assert not any(line.startswith("course-bonus") for line in lines)

    assert main(["backtest", "--rulesets", str(new_dir), *window, "--all"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = offer_rows(lines)
    assert rows[:4] == touched and len(rows) == len(result["offers"])
    course = next(line for line in lines if line.startswith("course-bonus"))
    assert course.split() == ["course-bonus", "1", "2.50", "1", "2.50", "0", "0.00"]
    assert not any("not listed" in line for line in lines)
