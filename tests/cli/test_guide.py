"""The examples of docs/analysts.md marked ``<!-- guide: ... -->`` run as shown: the
catalogue is the shipped one, and the check and the simulation print what the guide says."""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import pytest

from rewards.cli import main

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "analysts.md"


def blocks(label: str) -> list[list[str]]:
    """The lines of each fenced block right after a ``<!-- guide: <label>... -->`` line."""
    pattern = rf"<!-- guide: {re.escape(label)}[^\n]*-->\n```[a-z]*\n(.*?)```"
    found = [block.splitlines() for block in re.findall(pattern, GUIDE.read_text(), re.S)]
    assert found, f"no block '{label}' in {GUIDE}"
    return found


@pytest.fixture
def my_change(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    shutil.copytree(ROOT / "rulesets", tmp_path / "my-change")
    monkeypatch.chdir(tmp_path)
    return tmp_path / "my-change"


def run(command: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    words = shlex.split(command.removeprefix("$ "))
    assert words[0] == "rewards"
    code = main(words[1:])
    captured = capsys.readouterr()
    return code, captured.out.splitlines() + captured.err.splitlines()


def test_the_catalogue_shown_is_the_shipped_one() -> None:
    shipped = (ROOT / "rulesets" / "definition.yaml").read_text().splitlines()
    for block in blocks("catalogue"):
        for line in block:
            assert line in shipped, line


def test_the_new_offer_is_checked_as_shown(
    my_change: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    [offer] = blocks("new offer")
    achievement = my_change / "achievement.yaml"
    achievement.write_text(achievement.read_text() + "\n" + "\n".join(offer) + "\n")
    [(command, *shown)] = blocks("its check")
    code, printed = run(command, capsys)
    assert code == 1
    assert printed == shown
    achievement.write_text(achievement.read_text().replace("[staf]", "[staff]"))
    code, printed = run(command, capsys)
    assert code == 0
    assert printed[:-1] == [line for line in shown if ": warning: " in line]
    assert run(command.replace("check", "check --strict"), capsys)[0] == 1


def test_the_simulation_prints_the_warning_shown(
    my_change: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    [block] = blocks("simulate with a warning")
    cat, content, command, *shown = block
    assert cat.startswith("$ cat ")
    Path(cat.removeprefix("$ cat ")).write_text(content + "\n")
    code, printed = run(command, capsys)
    assert code == 0
    assert printed[:-1] == shown  # the last line: the summary (version)
