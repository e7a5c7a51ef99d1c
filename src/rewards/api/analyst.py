"""Analyst endpoints: simulations and ruleset reload (issue 6). Wired by create_app."""

from __future__ import annotations

from typing import Any


def analyst_handlers() -> list[Any]:
    """Route handlers mounted under /v1 (none yet)."""
    return []
