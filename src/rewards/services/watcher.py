"""Hot reload of the rulesets folder (issue 6)."""

from __future__ import annotations

from rewards.db.database import Database
from rewards.services.runtime import Runtime


def start(runtime: Runtime, database: Database) -> None:
    """Start watching the rulesets folder (not yet)."""


def stop(runtime: Runtime, database: Database) -> None:
    """Stop watching."""
