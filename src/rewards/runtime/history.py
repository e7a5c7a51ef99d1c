"""Ruleset history: every ruleset version a process loads is stored in the database.

``record_load`` runs after each successful load (a process starting, ``POST
/v1/rulesets/reload``, the folder watcher, ``rewards evaluate``): it reads the loaded
files back from the folder, checks that they still hash to the loaded version (a folder
edited meanwhile is not stored under a version it does not have: the watcher loads the
new content next), and writes, in one transaction, the version with its files (once:
``INSERT .. ON CONFLICT DO NOTHING``, so another worker, a restart or a reload of the same
content adds no second copy) and a row for this load. A failure to record is logged and
never stops the rulesets from serving.

``stored_evaluator`` compiles a stored version in memory (its files written to a
temporary folder and loaded as the server loads a folder, examples left out) for the
explanation of an event under the version that evaluated it; the last few are kept.
"""

from __future__ import annotations

import logging
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, cast

from sqlalchemy import CursorResult, insert, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, col

from rewards.db import outbox
from rewards.db.database import Database
from rewards.db.history_tables import RulesetLoad, RulesetVersion
from rewards.db.types import table_of
from rewards.engine import Evaluator, RulesetLoadError, Rulesets, load_rulesets
from rewards.engine.loader import folder_version
from rewards.errors import DomainError
from rewards.runtime.context import Runtime
from rewards.wire import RulesetsReloaded, RulesetsReloadRefused

log = logging.getLogger("rewards.rulesets")

SOURCES = ("start", "reload", "watcher", "cli")
KEPT_EVALUATORS = 4  # stored versions kept compiled for explanations, per process


def folder_files(folder: str | Path) -> dict[str, str]:
    """The folder's ruleset files (``*.yaml``, as the loader reads them) as text."""
    path = Path(folder)
    return {
        p.name: p.read_bytes().decode("utf-8")
        for p in sorted(path.iterdir())
        if p.is_file() and p.name.endswith(".yaml")
    }


def _written(files: Mapping[str, str], folder: Path) -> Path:
    for name, text in files.items():
        (folder / name).write_bytes(text.encode("utf-8"))
    return folder


def files_version(files: Mapping[str, str]) -> str:
    """The version these files load as (the loader's own hash, over a temporary copy)."""
    with tempfile.TemporaryDirectory(prefix="rewards-rulesets-") as tmp:
        return folder_version(_written(files, Path(tmp)))


def snapshot(rulesets: Rulesets) -> dict[str, str] | None:
    """The files of a loaded set read back from its folder, or None when the folder no
    longer holds that version (edited meanwhile, or unreadable)."""
    try:
        files = folder_files(rulesets.path)
    except (OSError, UnicodeDecodeError):
        return None
    return files if files_version(files) == rulesets.version else None


def record(
    session: Session,
    version: str,
    files: Mapping[str, str],
    *,
    source: str,
    loaded_by: str,
    now: datetime,
) -> None:
    """Store ``version`` (unless stored already) and this load of it, in ``session``."""
    table = table_of(RulesetVersion)
    dialect = session.get_bind().dialect.name
    upsert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    row = {
        "version": version,
        "files": dict(files),
        "loaded_at": now,
        "source": source,
        "loaded_by": loaded_by,
    }
    stored = session.execute(
        upsert(table).values(row).on_conflict_do_nothing(index_elements=["version"])
    )
    if cast("CursorResult[Any]", stored).rowcount == 1:  # the first load of this version, by any process: told once
        outbox.emit(
            session,
            [
                outbox.notice(
                    "rulesets.reloaded",
                    None,
                    RulesetsReloaded(
                        version=version, source=source, loaded_by=loaded_by, files=len(files)
                    ),
                )
            ],
            now,
        )
    session.execute(
        insert(table_of(RulesetLoad)).values(
            version=version, loaded_at=now, source=source, loaded_by=loaded_by
        )
    )


def record_load(
    database: Database, runtime: Runtime, rulesets: Rulesets, *, source: str, loaded_by: str
) -> bool:
    """Store a load of ``rulesets`` in its own transaction; False (logged) when it could
    not be stored."""
    now = runtime.now()  # first: the load is as close as can be to the swap
    files = snapshot(rulesets)
    if files is None:
        log.warning(
            "ruleset history: %s no longer holds version %s (changed while loading); "
            "not stored, the next load stores what the folder holds",
            rulesets.path,
            rulesets.version,
        )
        return False
    try:
        with database.transaction() as session:
            record(
                session,
                rulesets.version,
                files,
                source=source,
                loaded_by=loaded_by,
                now=now,
            )
    except SQLAlchemyError:
        log.exception("ruleset history: version %s could not be stored", rulesets.version)
        return False
    return True


def record_refusal(
    database: Database, runtime: Runtime, refused: DomainError, *, trigger: str
) -> None:
    """Tell the outbox of a refused reload, in its own transaction (logged, never
    raised: the refusal itself is what the caller reports)."""
    data = RulesetsReloadRefused(
        serving_version=runtime.rulesets.version, trigger=trigger, errors=refused.errors or []
    )
    try:
        with database.transaction() as session:
            outbox.emit(session, [outbox.notice("rulesets.reload_refused", None, data)])
    except SQLAlchemyError:
        log.exception("the refused reload could not be told to the outbox")


def stored_files(session: Session, version: str) -> dict[str, str] | None:
    files = session.scalars(
        select(col(RulesetVersion.files)).where(col(RulesetVersion.version) == version)
    ).first()
    return None if files is None else dict(files)


_EVALUATORS: OrderedDict[str, Evaluator] = OrderedDict()
_EVALUATORS_LOCK = threading.Lock()


def stored_evaluator(session: Session, runtime: Runtime, version: str) -> Evaluator | None:
    """An evaluator of a stored ``version`` (the serving one when it is that version),
    or None when the version is not stored or no longer loads (a stricter loader)."""
    serving = runtime.evaluator
    if serving.rulesets.version == version:
        return serving
    with _EVALUATORS_LOCK:
        if version in _EVALUATORS:
            _EVALUATORS.move_to_end(version)
            return _EVALUATORS[version]
    files = stored_files(session, version)
    if files is None:
        return None
    try:
        with tempfile.TemporaryDirectory(prefix="rewards-rulesets-") as tmp:
            rulesets = load_rulesets(_written(files, Path(tmp)), run_examples=False)
    except (RulesetLoadError, OSError):
        log.warning("ruleset history: stored version %s does not load any more", version)
        return None
    evaluator = Evaluator(rulesets)
    with _EVALUATORS_LOCK:
        _EVALUATORS[version] = evaluator
        while len(_EVALUATORS) > KEPT_EVALUATORS:
            _EVALUATORS.popitem(last=False)
    return evaluator


__all__ = [
    "SOURCES",
    "files_version",
    "folder_files",
    "record",
    "record_load",
    "snapshot",
    "stored_evaluator",
    "stored_files",
]
