"""Evaluation runs (issue 5): start one (admin, 202, runs on a thread of this process),
and read its progress. Wired by create_app."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Request, get, post
from litestar.di import NamedDependency, Provide
from litestar.params import PathParameter, SkipValidation

from rewards import runs
from rewards.api.auth import admin_only
from rewards.api.bodies import body_provider
from rewards.api.deps import RuntimeDep, SessionDep
from rewards.api.docs import BODY, problems, request_schema
from rewards.db.database import Database
from rewards.runs import EvaluationRunIn, EvaluationRunOut

RunId = Annotated[str, PathParameter(description="The run's id (UUID).")]


def provide_database(request: Request[Any, Any, Any]) -> Database:
    database: Database = request.app.state.database
    return database


@post(
    "/evaluation-runs",
    operation_id="start_evaluation_run",
    summary="Start an evaluation run (batch offers and period aggregates); 409 while one runs",
    description="Evaluates, in the background, every posted event performed at or before "
    "`as_of` that no run evaluated yet, and the period aggregates of closed periods. "
    "Poll `GET /v1/evaluation-runs/{id}` for its progress.",
    status_code=202,
    guards=[admin_only],
    dependencies={
        "payload": Provide(body_provider("evaluation_run", EvaluationRunIn)),
        "database": Provide(provide_database, sync_to_thread=False),
    },
    opt=request_schema("evaluation_run"),
    responses={**BODY, **problems(409)},
    tags=["evaluation runs"],
    sync_to_thread=True,
)
def start_evaluation_run(
    payload: NamedDependency[SkipValidation[EvaluationRunIn]],
    database: NamedDependency[SkipValidation[Database]],
    runtime: RuntimeDep,
) -> EvaluationRunOut:
    return runs.start_background_run(database, runtime, as_of=payload.as_of)


@get(
    "/evaluation-runs/{run_id:str}",
    operation_id="get_evaluation_run",
    summary="An evaluation run: status (running, finished, failed) and progress counters",
    responses=problems(404),
    tags=["evaluation runs"],
    sync_to_thread=True,
)
def get_evaluation_run(run_id: RunId, session: SessionDep) -> EvaluationRunOut:
    return runs.get_run(session, run_id)


def run_handlers() -> list[Any]:
    """Route handlers mounted under /v1."""
    return [start_evaluation_run, get_evaluation_run]
