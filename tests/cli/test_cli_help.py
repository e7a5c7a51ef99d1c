"""``rewards --version`` and ``rewards serve --help``: the flags with their defaults and
every environment variable the settings read, as README's configuration table does."""

from __future__ import annotations

import re
from importlib.metadata import version
from pathlib import Path

import pytest

from rewards.cli import main
from tests.conftest import ROOT

SETTINGS_VARIABLES = set(
    re.findall(r'"(REWARDS_[A-Z_]+)"', (ROOT / "src/rewards/settings.py").read_text())
)


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out == f"rewards {version('rewards')}\n"


def test_serve_help_lists_flags_defaults_and_environment(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as done:
        main(["serve", "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    for flag, default in [
        ("--host", "127.0.0.1"),
        ("--port", "8000"),
        ("--workers", "1"),
        ("--log-level", "info"),
    ]:
        assert re.search(rf"{flag} .*?\(default: {re.escape(default)}\)", text, re.S), flag
    assert len(SETTINGS_VARIABLES) >= 10
    listed = set(re.findall(r"^  (REWARDS_[A-Z_]+) ", text, re.M))
    assert listed == SETTINGS_VARIABLES
    assert "default: sqlite:///rewards.db" in text


def test_readme_lists_the_variables_users_set() -> None:
    table = set(re.findall(r"^\| `(REWARDS_[A-Z_]+)` \|", (ROOT / "README.md").read_text(), re.M))
    assert table == SETTINGS_VARIABLES - {"REWARDS_SUPERVISED"}  # set by serve for its workers


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("REWARDS_OTP_GUESSES_PER_KEY", "lots"),
        ("REWARDS_API_KEYS", "root:k"),
        ("REWARDS_OTP_TTL_SECONDS", "five minutes"),
        ("REWARDS_BULK_MAX_BODY_BYTES", "-1"),
        ("REWARDS_REQUEST_TIMEOUT", "nan"),
        ("REWARDS_EVALUATION_INTERVAL", "1.5"),
    ],
)
@pytest.mark.parametrize("command", ["serve", "migrate"])
def test_a_malformed_variable_is_one_line_and_starts_nothing(
    command: str,
    variable: str,
    value: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("REWARDS_DATABASE_URL", raising=False)
    monkeypatch.setenv(variable, value)
    assert main([command]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"rewards: {variable}: ") and error.count("\n") == 1, error
    assert "Traceback" not in error
    assert list(tmp_path.iterdir()) == []  # no database was made
