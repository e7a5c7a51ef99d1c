"""Operator views: the analytics summary."""

from __future__ import annotations

from typing import Annotated

from litestar import get
from litestar.params import QueryParameter

from rewards.analyst import analytics
from rewards.api.deps import RuntimeDep, SessionDep
from rewards.api.docs import problems
from rewards.api.events import RFC3339
from rewards.wire import AnalyticsSummary


@get(
    "/analytics/summary",
    operation_id="analytics_summary",
    summary="Events by type, awards (total and per offer), spends, outstanding liability",
    responses=problems(400),
    sync_to_thread=True,
    tags=["analytics"],
)
def analytics_summary(
    session: SessionDep,
    runtime: RuntimeDep,
    start: Annotated[
        str | None,
        QueryParameter(name="from", description="Inclusive, RFC 3339 with zone.", pattern=RFC3339),
    ] = None,
    end: Annotated[
        str | None,
        QueryParameter(name="to", description="Exclusive, RFC 3339 with zone.", pattern=RFC3339),
    ] = None,
    merchant_id: Annotated[
        str | None,
        QueryParameter(
            description="Only events at this merchant's units (and what they caused); the "
            "outstanding liability stays the whole scheme's.",
            pattern="^[a-z0-9-]+$",
        ),
    ] = None,
) -> AnalyticsSummary:
    return analytics.summary(session, runtime, start, end, merchant_id)
