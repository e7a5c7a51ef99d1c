from __future__ import annotations

from pathlib import Path

import pytest

from rewards.engine import Rulesets, load_rulesets

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="session")
def shipped() -> Rulesets:
    """The shipped rulesets/ folder, loaded (and its examples run) once per session."""
    return load_rulesets(ROOT / "rulesets")
