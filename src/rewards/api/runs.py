"""Evaluation runs (issue 5). Wired by create_app."""

from __future__ import annotations

from typing import Any


def run_handlers() -> list[Any]:
    """Route handlers mounted under /v1 (none yet)."""
    return []
