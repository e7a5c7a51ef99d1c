"""The ruleset history: the versions every process loaded, and one version with its diff."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import get
from litestar.params import PathParameter, QueryParameter

from rewards.analyst import history
from rewards.api.deps import CursorParameter, RuntimeDep, SessionDep
from rewards.api.docs import problems


@get(
    "/rulesets/history",
    operation_id="list_ruleset_history",
    summary="Every ruleset version loaded, newest first",
    description=(
        "Each version any process loaded (at start-up, by `POST /v1/rulesets/reload`, by the "
        "folder watcher or by `rewards evaluate`), stored once: when it was first loaded, how "
        "(`source`) and by whom (`loaded_by`: the API key's role and short hash, never the "
        "key), how many loads, its files, and the awards recorded with it."
    ),
    responses=problems(400),
    tags=["offers"],
    sync_to_thread=True,
)
def list_ruleset_history(
    session: SessionDep,
    runtime: RuntimeDep,
    limit: Annotated[int, QueryParameter(ge=1, le=500)] = 50,
    cursor: CursorParameter = None,
) -> history.RulesetHistoryPage:
    return history.list_history(session, runtime, limit, cursor)


@get(
    "/rulesets/history/{version:str}",
    operation_id="get_ruleset_version",
    summary="One stored ruleset version: its files and their diff from the version before",
    description=(
        "The files as loaded and, per file, a unified diff against the version stored before "
        "it (`change`: added, removed, changed or unchanged; a removed file has no "
        "`content`). 404 `ruleset_version_not_found` for a version never loaded."
    ),
    responses=problems(404),
    tags=["offers"],
    sync_to_thread=True,
)
def get_ruleset_version(
    session: SessionDep,
    runtime: RuntimeDep,
    version: Annotated[str, PathParameter(description="The version (content hash).")],
) -> history.RulesetVersionDetail:
    return history.version_detail(session, runtime, version)


def ruleset_history_handlers() -> list[Any]:
    """Route handlers mounted under /v1."""
    return [list_ruleset_history, get_ruleset_version]
