"""Scheduled evaluation runs inside ``rewards serve`` (issue 5)."""

from __future__ import annotations

from rewards.db.database import Database
from rewards.services.runtime import Runtime


def start(runtime: Runtime, database: Database) -> None:
    """Start the schedule (not yet)."""


def stop(runtime: Runtime, database: Database) -> None:
    """Stop the schedule."""
