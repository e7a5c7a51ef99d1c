"""Liveness and readiness: no auth."""

from __future__ import annotations

from litestar import get
from litestar.di import NamedDependency
from litestar.params import SkipValidation
from sqlalchemy import text
from sqlmodel import Session

from rewards.runtime.context import Runtime
from rewards.wire import Health


@get(
    "/health",
    summary="Service, database and rulesets status",
    security=[],
    sync_to_thread=True,
    tags=["health"],
)
def health(
    session: NamedDependency[SkipValidation[Session]],
    runtime: NamedDependency[SkipValidation[Runtime]],
) -> Health:
    session.execute(text("SELECT 1"))
    return Health(status="ok", database="ok", rulesets_version=runtime.rulesets.version)
