"""Analyst endpoints: simulations and ruleset reload (issue 6). Wired by create_app."""

from __future__ import annotations

from typing import Any

from litestar import Request, post
from litestar.di import NamedDependency, Provide
from litestar.params import SkipValidation

from rewards.analyst import simulation
from rewards.analyst.simulation import SimulationIn, SimulationOut
from rewards.api.auth import admin_only
from rewards.api.bodies import body_provider
from rewards.api.deps import RuntimeDep, SessionDep
from rewards.api.docs import BODY, problems, request_schema
from rewards.db.database import Database
from rewards.engine import Rulesets
from rewards.errors import DomainError
from rewards.runtime import history, reload
from rewards.runtime.ratelimit import caller_id


@post(
    "/simulations",
    operation_id="create_simulation",
    summary="Evaluate an event against the loaded offers, with no writes, and explain",
    description=(
        "Body: `schemas/simulation.json`: `type`, `event` (the body of `POST /v1/events/<type>`, "
        "contact optional and never looked up), and the contact context (`segments`, "
        "`prior_awards`, `period_totals`). 200 with the awards and, for every offer of the "
        "event's type, `applied` or the conditions that failed with the actual values, and "
        "`warnings`: what the server would accept but looks like a mistake (a "
        "`performed_by_unit` that is not a unit of the definition, a segment the definition "
        "does not declare, an unknown offer id in `prior_awards`); the awards are what the "
        "server would give all the same. Nothing is written."
    ),
    dependencies={"payload": Provide(body_provider(simulation.SCHEMA, SimulationIn))},
    opt={**request_schema(simulation.SCHEMA), "analysts": True},
    responses=BODY,
    status_code=200,
    sync_to_thread=True,
    tags=["analysts"],
)
def create_simulation(
    payload: NamedDependency[SkipValidation[SimulationIn]], runtime: RuntimeDep, session: SessionDep
) -> SimulationOut:
    return simulation.simulate_request(runtime, payload, session)


@post(
    "/rulesets/reload",
    operation_id="reload_rulesets",
    summary="Reload the rulesets folder now (admin)",
    description=(
        "Loads and checks the folder (embedded examples included) and swaps it in atomically. "
        "200 with the version now serving (`changed: false` when the folder already holds it); "
        "422 with every problem as `errors[].path` = `file:line:column` and `errors[].message`, "
        "and the previous rulesets keep serving. A new version is stored in the ruleset "
        "history (`GET /v1/rulesets/history`) with the role and short hash of the key that "
        "loaded it."
    ),
    guards=[admin_only],
    responses=problems(400, 422),
    status_code=200,
    sync_to_thread=True,
    tags=["offers"],
)
def reload_rulesets(runtime: RuntimeDep, request: Request[str, str, Any]) -> reload.ReloadOut:
    database: Database = request.app.state.database
    loaded_by = f"{request.user} key {caller_id(request.auth)}"  # never the key itself

    def record(rulesets: Rulesets) -> None:
        history.record_load(database, runtime, rulesets, source="reload", loaded_by=loaded_by)

    def refused(error: DomainError) -> None:
        history.record_refusal(database, runtime, error, trigger="api")

    return reload.reload_rulesets(runtime, trigger="api", record=record, refused=refused)


def analyst_handlers() -> list[Any]:
    """Route handlers mounted under /v1."""
    return [create_simulation, reload_rulesets]
