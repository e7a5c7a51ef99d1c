"""Tables of evaluation runs (issue 5). Imported by rewards.db.tables so they share its
metadata (migrations, tests)."""

from __future__ import annotations
