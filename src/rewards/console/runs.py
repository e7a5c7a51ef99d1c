"""``/console/runs``: recent evaluation runs and, for admins, starting one (the service
of ``POST /v1/evaluation-runs``); ``/console/runs/{id}``: a run's progress, refreshed
through a fragment while it runs (``data-poll-url``; without JavaScript a reload shows
it), and its per-offer totals once finished."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import get, post
from litestar.params import PathParameter
from litestar.response import Redirect, Template

from rewards import runs
from rewards.console.pages import ConsoleRequest, RuntimeDep, SessionDep, flash, page
from rewards.db.database import Database
from rewards.errors import DomainError

RunId = Annotated[str, PathParameter(description="The run's id (UUID).")]


def handlers() -> list[Any]:
    @get("/runs", name="console_runs", sync_to_thread=True)
    def run_list(request: ConsoleRequest, session: SessionDep) -> Template:
        return page(request, "runs.html", title="Evaluation runs", runs=runs.recent_runs(session))

    @post(
        "/runs",
        name="console_start_run",
        opt={"admin_only": True},
        status_code=303,
        sync_to_thread=True,
    )
    def start(request: ConsoleRequest, runtime: RuntimeDep) -> Redirect:
        database: Database = request.app.state.database
        try:
            run = runs.start_background_run(database, runtime, source="console")
        except DomainError as error:
            flash(request, f"{error.title}: {error.detail}", "bad")
            return Redirect("/console/runs", status_code=303)
        flash(request, "Evaluation run started.")
        return Redirect(f"/console/runs/{run.id}", status_code=303)

    @get("/runs/{run_id:str}", name="console_run", sync_to_thread=True)
    def run_page(request: ConsoleRequest, session: SessionDep, run_id: RunId) -> Template:
        run = runs.get_run(session, run_id)
        return page(request, "run.html", title=f"Run {run.id[:8]}", run=run)

    @get("/runs/{run_id:str}/progress", name="console_run_progress", sync_to_thread=True)
    def run_progress(request: ConsoleRequest, session: SessionDep, run_id: RunId) -> Template:
        return Template(
            template_name="_run_progress.html", context={"run": runs.get_run(session, run_id)}
        )

    return [run_list, start, run_page, run_progress]
