"""``/console/``: the scheme at a glance for a chosen period (default: the last 30 days)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from litestar import get
from litestar.response import Template

from rewards.analyst import analytics
from rewards.console.pages import ConsoleRequest, RuntimeDep, SessionDep, page


def handlers() -> list[Any]:
    @get("/", name="console_dashboard", sync_to_thread=True)
    def dashboard(request: ConsoleRequest, session: SessionDep, runtime: RuntimeDep) -> Template:
        end = datetime.now(UTC)
        start = end - timedelta(days=30)
        summary = analytics.summary(session, runtime, start.isoformat(), end.isoformat())
        return page(request, "dashboard.html", title="Dashboard", summary=summary)

    return [dashboard]
