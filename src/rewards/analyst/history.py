"""The ruleset history as analysts read it: the versions loaded (newest first, with the
awards each made), one version's files with a unified diff per file against the version
stored before it, the diff between any two versions (``rewards rulesets diff``), and the
version that evaluated a recorded event (for its explanation).

The versions are stored by :mod:`rewards.runtime.history` when a process loads them;
"previous" is the version stored just before (by first load), whichever version served
in between.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Literal

import msgspec
from sqlalchemy import func, select
from sqlmodel import Session, col

from rewards.db.history_tables import RulesetLoad, RulesetVersion
from rewards.db.pages import decode_cursor, encode_cursor
from rewards.db.run_tables import EvaluatedEvent, EvaluationRun
from rewards.db.tables import Award, Event
from rewards.domain.money import from_cents
from rewards.errors import refusal
from rewards.runtime.context import Runtime
from rewards.runtime.history import stored_files

RulesetVersionNotFound = refusal("ruleset_version_not_found", "Ruleset version not found", 404)
Change = Literal["added", "removed", "changed", "unchanged"]


class RulesetHistoryItem(msgspec.Struct, kw_only=True):
    """One stored ruleset version."""

    version: str
    loaded_at: datetime  # the first time any process loaded it
    source: str  # of that first load: start | reload | watcher | cli
    loaded_by: str  # the API key's role and short hash, or the trigger
    loads: int  # loads of this version by any process (starts, reloads, watchers)
    last_loaded_at: datetime
    serving: bool  # the version this server process serves now
    files: list[str]
    awards: int  # awards recorded with this version
    awarded: Decimal  # their amount


class RulesetHistoryPage(msgspec.Struct, kw_only=True):
    items: list[RulesetHistoryItem]
    next_cursor: str | None


class RulesetFileChange(msgspec.Struct, kw_only=True):
    """One file of a version against the previous version."""

    name: str
    change: Change
    content: str | None  # the file as loaded; null when the version removed it
    diff: str  # unified diff from the previous version ("" when unchanged)


class RulesetVersionDetail(msgspec.Struct, kw_only=True):
    version: str
    loaded_at: datetime
    source: str
    loaded_by: str
    serving: bool
    previous_version: str | None  # the version stored before it (null: the first one)
    files: list[RulesetFileChange]  # its files, then those the previous one had and it has not


def list_history(
    session: Session, runtime: Runtime, limit: int, cursor: str | None
) -> RulesetHistoryPage:
    """``GET /v1/rulesets/history``: stored versions, newest (first loaded last) first."""
    before = decode_cursor(cursor)
    query = select(RulesetVersion).order_by(col(RulesetVersion.number).desc()).limit(limit + 1)
    if before is not None:
        query = query.where(col(RulesetVersion.number) < before)
    rows = list(session.scalars(query))
    more = len(rows) > limit
    rows = rows[:limit]
    versions = [row.version for row in rows]
    loads = {
        version: (count, last)
        for version, count, last in session.execute(
            select(col(RulesetLoad.version), func.count(), func.max(RulesetLoad.loaded_at))
            .where(col(RulesetLoad.version).in_(versions))
            .group_by(col(RulesetLoad.version))
        )
    }
    awards = {
        version: (count, cents)
        for version, count, cents in session.execute(
            select(col(Award.ruleset_version), func.count(), func.sum(Award.amount_cents))
            .where(col(Award.ruleset_version).in_(versions))
            .group_by(col(Award.ruleset_version))
        )
    }
    serving = runtime.rulesets.version
    items = []
    for row in rows:
        count, last = loads.get(row.version, (0, row.loaded_at))
        awarded, cents = awards.get(row.version, (0, 0))
        items.append(
            RulesetHistoryItem(
                version=row.version,
                loaded_at=row.loaded_at,
                source=row.source,
                loaded_by=row.loaded_by,
                loads=count,
                last_loaded_at=last,
                serving=row.version == serving,
                files=sorted(row.files),
                awards=awarded,
                awarded=from_cents(int(cents or 0)),
            )
        )
    next_cursor = encode_cursor(rows[-1].number or 0) if more and rows else None
    return RulesetHistoryPage(items=items, next_cursor=next_cursor)


def _lines(text: str) -> list[str]:
    return [line if line.endswith("\n") else line + "\n" for line in text.splitlines(True)]


def file_diff(name: str, old: str | None, new: str | None, old_label: str, new_label: str) -> str:
    """Unified diff of one file between two versions (``None``: the version lacks it)."""
    return "".join(
        difflib.unified_diff(
            _lines(old or ""),
            _lines(new or ""),
            fromfile=f"{old_label}/{name}" if old is not None else "/dev/null",
            tofile=f"{new_label}/{name}" if new is not None else "/dev/null",
        )
    )


def compare(
    old: Mapping[str, str], new: Mapping[str, str], old_label: str, new_label: str
) -> list[RulesetFileChange]:
    """Every file of ``new`` against ``old``, then the files only ``old`` has."""
    changes = []
    for name in [*sorted(new), *sorted(set(old) - set(new))]:
        before, after = old.get(name), new.get(name)
        change: Change = (
            "added"
            if before is None
            else "removed"
            if after is None
            else "unchanged"
            if before == after
            else "changed"
        )
        changes.append(
            RulesetFileChange(
                name=name,
                change=change,
                content=after,
                diff=file_diff(name, before, after, old_label, new_label),
            )
        )
    return changes


def version_detail(session: Session, runtime: Runtime, version: str) -> RulesetVersionDetail:
    """``GET /v1/rulesets/history/{version}``."""
    row = session.scalars(
        select(RulesetVersion).where(col(RulesetVersion.version) == version)
    ).first()
    if row is None:
        raise RulesetVersionNotFound(f"No stored ruleset version {version!r}.")
    previous = session.scalars(
        select(RulesetVersion)
        .where(col(RulesetVersion.number) < row.number)
        .order_by(col(RulesetVersion.number).desc())
        .limit(1)
    ).first()
    return RulesetVersionDetail(
        version=row.version,
        loaded_at=row.loaded_at,
        source=row.source,
        loaded_by=row.loaded_by,
        serving=row.version == runtime.rulesets.version,
        previous_version=previous.version if previous is not None else None,
        files=compare(
            previous.files if previous is not None else {},
            row.files,
            previous.version if previous is not None else "",
            row.version,
        ),
    )


def version_files(session: Session, version: str) -> dict[str, str]:
    """A stored version's files, or ``RulesetVersionNotFound``."""
    files = stored_files(session, version)
    if files is None:
        raise RulesetVersionNotFound(f"No stored ruleset version {version!r}.")
    return files


# --- the version that evaluated a recorded event ------------------------------------------

ChosenBy = Literal["awards", "evaluation_run", "loaded_when_recorded", "serving"]


def evaluating_version(session: Session, event: Event) -> tuple[str | None, ChosenBy]:
    """The ruleset version that evaluated ``event``, and how it is known: its awards
    record it; else, evaluated on intake, the version this service loaded last before the
    event was recorded (the history: an inference, exact unless a reload happened in the
    same moment); else the evaluation run that evaluated it. ``(None, "serving")`` when
    nothing says (not evaluated yet, or recorded before the history was kept)."""
    awarded = session.scalars(
        select(col(Award.ruleset_version))
        .where(col(Award.event_id) == event.id)
        .order_by(col(Award.created_at).desc())
        .limit(1)
    ).first()
    if awarded is not None:
        return awarded, "awards"
    if event.evaluated:
        loaded = session.scalars(
            select(col(RulesetLoad.version))
            .where(col(RulesetLoad.loaded_at) <= event.created_at)
            .order_by(col(RulesetLoad.loaded_at).desc(), col(RulesetLoad.id).desc())
            .limit(1)
        ).first()
        if loaded is not None:
            return loaded, "loaded_when_recorded"
    if event.number is not None:
        run = session.scalars(
            select(col(EvaluationRun.ruleset_version))
            .join(EvaluatedEvent, col(EvaluatedEvent.run_id) == col(EvaluationRun.id))
            .where(col(EvaluatedEvent.event_number) == event.number)
        ).first()
        if run is not None:
            return run, "evaluation_run"
    return None, "serving"


__all__ = [
    "RulesetFileChange",
    "RulesetHistoryItem",
    "RulesetHistoryPage",
    "RulesetVersionDetail",
    "RulesetVersionNotFound",
    "compare",
    "evaluating_version",
    "file_diff",
    "list_history",
    "version_detail",
    "version_files",
]
