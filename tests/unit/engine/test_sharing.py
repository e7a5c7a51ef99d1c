"""Engine rulesets are shared by definition: a reload only creates the rulesets of the
classifications whose offers changed, and a discarded set's rulesets are released safely
(never while a set still uses them)."""

from __future__ import annotations

import gc
import shutil
from pathlib import Path

import pytest

from rewards.engine import Evaluator, load_rulesets
from rewards.engine import adapter as engine
from rewards.engine.loader import folder_version
from tests.unit.engine.builders import event, offer, purchase, rulesets, summary

ROOT = Path(__file__).resolve().parents[3]


def copy_shipped(tmp_path: Path) -> Path:
    folder = tmp_path / "rulesets"
    shutil.copytree(ROOT / "rulesets", folder)
    return folder


def edit(folder: Path, file: str, old: str, new: str) -> None:
    path = folder / file
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def created() -> int:
    return engine.collect()["created"]


def test_folder_version_is_the_loaded_version(tmp_path: Path) -> None:
    folder = copy_shipped(tmp_path)
    assert folder_version(folder) == load_rulesets(folder, run_examples=False).version
    edit(folder, "achievement.yaml", "award: {amount: 5}", "award: {amount: 6}")
    assert folder_version(folder) == load_rulesets(folder, run_examples=False).version


def test_reloads_reuse_the_rulesets_of_unchanged_classifications(tmp_path: Path) -> None:
    folder = copy_shipped(tmp_path)
    first = load_rulesets(folder)
    first.host  # noqa: B018
    before = created()
    # the same folder again, and an award amount edit (the rules themselves are equal)
    again = load_rulesets(folder)
    edit(folder, "achievement.yaml", "award: {amount: 5}", "award: {amount: 6}")
    edit(folder, "achievement.yaml", "expect: {award: 5}", "expect: {award: 6}")
    amount = load_rulesets(folder)
    assert created() == before
    assert amount.version not in (first.version, again.version)
    # a condition value edit: the rules keep their shape, the value travels in the facts
    edit(folder, "achievement.yaml", "max_awards: {count: 2,", "max_awards: {count: 3,")
    edit(folder, "achievement.yaml", "prior_awards: 2\n", "prior_awards: 3\n")
    value = load_rulesets(folder)
    assert created() == before
    assert value.compiled.rulesets == first.compiled.rulesets
    assert value.compiled.params["achievement"] != first.compiled.params["achievement"]
    third = event(
        "achievement",
        classification="course-completed",
        segments=["staff"],
        awards_in_window={"staff-course-completed": 2},
    )
    assert summary(Evaluator(first).evaluate(third, mode="all")) == []
    assert summary(Evaluator(value).evaluate(third, mode="all"))[0][0] == "staff-course-completed"
    # a condition shape edit (one more segment): only that classification's ruleset is new
    edit(folder, "achievement.yaml", "include: [staff]", "include: [staff, bronze]")
    shape = load_rulesets(folder)
    assert created() == before + 1
    changed = {
        name
        for name, definition in shape.compiled.rulesets.items()
        if first.compiled.rulesets.get(name) != definition
    }
    assert changed == {"achievement"}
    five = event("achievement", classification="5-star-service")
    assert summary(Evaluator(amount).evaluate(five, mode="all"))[0][2] == 6
    assert summary(Evaluator(first).evaluate(five, mode="all"))[0][2] == 5
    assert summary(Evaluator(shape).evaluate(five, mode="all"))[0][2] == 6
    crew = event("achievement", classification="course-completed", segments=["bronze"])
    assert summary(Evaluator(shape).evaluate(crew, mode="all"))[0][0] == "staff-course-completed"


def test_names_of_a_classification_do_not_depend_on_other_files(tmp_path: Path) -> None:
    folder = copy_shipped(tmp_path)
    first = load_rulesets(folder, run_examples=False)
    # an offer added to the first file in name order shifts every later offer's position
    text = (folder / "achievement.yaml").read_text()
    (folder / "achievement.yaml").write_text(
        text.replace(
            "offers:\n",
            "offers:\n  - {id: new-first, name: new, award: {amount: 1}, "
            "conditions: {event_classifications: [course-completed]}}\n",
            1,
        )
    )
    second = load_rulesets(folder, run_examples=False)
    for name, definition in first.compiled.rulesets.items():
        if name != "achievement":
            assert second.compiled.rulesets[name] == definition, name


def test_a_discarded_set_is_released_only_when_nothing_uses_it() -> None:
    unique = offer(
        "increase_revenue_transaction",
        "unique-to-this-test",
        conditions={"transaction_amount": {"min": "12345.67"}},
    )
    held = rulesets(unique)
    evaluator = Evaluator(held)  # a request in flight holds its evaluator
    engine.collect()
    counts = engine.collect()
    twin = rulesets(unique)  # same definition: shares the engine ruleset
    twin.host  # noqa: B018
    assert engine.collect()["created"] == counts["created"]
    del twin
    gc.collect()
    engine.collect()
    big = purchase("2026-03-02T11:00:00+02:00", ("X", "20000"))
    assert [d.offer_id for d in evaluator.evaluate(big, mode="all")] == ["unique-to-this-test"]
    del held, evaluator
    gc.collect()
    after = engine.collect()
    assert after["idle"] >= 1  # kept for a set that wants it again (an edit undone)
    again = rulesets(unique)
    assert [d.offer_id for d in Evaluator(again).evaluate(big, mode="all")] == [
        "unique-to-this-test"
    ]
    assert engine.collect()["created"] == counts["created"]
    again.host.close()  # explicit close deletes what no other set uses
    assert engine.collect()["deleted"] == after["deleted"] + 1


def test_idle_rulesets_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine, "IDLE_LIMIT", 2)
    before = engine.collect()
    for n in range(6):
        loaded = rulesets(
            offer(
                "increase_revenue_transaction",
                "bounded",
                conditions={"transaction_amount": {"min": f"{9000 + n}"}},
            )
        )
        loaded.host  # noqa: B018
        del loaded
        engine.collect()
    after = engine.collect()
    assert after["idle"] <= 2
    assert after["deleted"] >= before["deleted"] + 3
