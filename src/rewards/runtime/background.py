"""Work a server process does beside requests: watching the rulesets folder (hot
reload) and scheduled evaluation runs. ``start`` runs on application start-up, ``stop``
on shutdown."""

from __future__ import annotations

from rewards.db.database import Database
from rewards.runs import scheduler
from rewards.runtime import watcher
from rewards.runtime.context import Runtime


def start(runtime: Runtime, database: Database) -> None:
    watcher.start(runtime, database)
    scheduler.start(runtime, database)


def stop(runtime: Runtime, database: Database) -> None:
    scheduler.stop(runtime, database)
    watcher.stop(runtime, database)
