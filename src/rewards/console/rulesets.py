"""``/console/rulesets``: the loaded version and its files, the problems of the last
refused reload (``file:line:column``, as ``/health`` reports them when degraded), the
recent loads of the ruleset history, and "Reload now" for admins: the service
``POST /v1/rulesets/reload`` calls, recorded in the history the same way."""

from __future__ import annotations

from typing import Any

from litestar import get, post
from litestar.response import Redirect, Template

from rewards.analyst import history as ruleset_history
from rewards.console.pages import (
    ConsoleRequest,
    RuntimeDep,
    SessionDep,
    UserDep,
    flash,
    page,
)
from rewards.db.database import Database
from rewards.engine import Rulesets
from rewards.errors import DomainError
from rewards.offers.catalog import describe_rulesets
from rewards.runtime import history, reload


def handlers() -> list[Any]:
    @get("/rulesets", name="console_rulesets", sync_to_thread=True)
    def rulesets(request: ConsoleRequest, session: SessionDep, runtime: RuntimeDep) -> Template:
        return page(
            request,
            "rulesets.html",
            title="Rulesets",
            rulesets=describe_rulesets(session, runtime),
            loads=ruleset_history.list_history(session, runtime, 10, None).items,
        )

    @post(
        "/rulesets/reload",
        name="console_reload",
        opt={"admin_only": True},
        status_code=303,
        sync_to_thread=True,
    )
    def reload_now(request: ConsoleRequest, runtime: RuntimeDep, user: UserDep) -> Redirect:
        database: Database = request.app.state.database
        loaded_by = f"{user.role} key {user.key_id} (console)"

        def record(rulesets: Rulesets) -> None:
            history.record_load(database, runtime, rulesets, source="reload", loaded_by=loaded_by)

        def refused(error: DomainError) -> None:
            history.record_refusal(database, runtime, error, trigger="console")

        try:
            done = reload.reload_rulesets(
                runtime, trigger="console", record=record, refused=refused
            )
        except DomainError as error:
            flash(request, f"{error.title}. The problems are listed below.", "bad")
        else:
            if done.changed:
                flash(request, f"Loaded version {done.version} ({done.offers} offers).")
            else:
                flash(request, f"The folder holds the serving version {done.version}: unchanged.")
        return Redirect("/console/rulesets", status_code=303)

    return [rulesets, reload_now]
