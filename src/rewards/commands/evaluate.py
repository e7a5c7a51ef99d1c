"""``rewards evaluate`` (issue 5)."""

from __future__ import annotations

import argparse
from typing import Any


def register(commands: Any) -> None:
    """Add the sub-command to ``commands`` (an argparse sub-parsers object)."""
    del commands  # not yet


def run(args: argparse.Namespace) -> int:
    return 0
