"""``/console/``: the scheme at a glance for a chosen period (default: the last 30 days):
events by type, awards and spends, the outstanding liability per day, the top offers by
cost and the recent evaluation runs; each chart with its numbers in a table."""

from __future__ import annotations

from typing import Any

from litestar import get
from litestar.response import Template
from markupsafe import Markup

from rewards import runs
from rewards.analyst import trends
from rewards.console import charts
from rewards.console.pages import ConsoleRequest, RuntimeDep, SessionDep, page
from rewards.console.period import FromParam, ToParam, read_period


def _charts(data: trends.Trends) -> dict[str, Markup]:
    days = data.days
    return {
        "events": charts.stacked_days(
            "Events by type per day", days, [(s.type, s.counts) for s in data.events]
        ),
        "money": charts.bars_days(
            "Awarded and spent per day",
            days,
            [
                ("Awarded", [d.amount for d in data.awards]),
                ("Spent", [d.amount for d in data.spends]),
            ],
        ),
        "liability": charts.line_days(
            "Outstanding liability", days, "Liability", [d.balance for d in data.liability]
        ),
        "offers": charts.horizontal_bars(
            "Top offers by cost", [(o.offer_id, o.amount) for o in data.top_offers]
        ),
    }


def handlers() -> list[Any]:
    @get("/", name="console_dashboard", sync_to_thread=True)
    def dashboard(
        request: ConsoleRequest,
        session: SessionDep,
        runtime: RuntimeDep,
        start: FromParam = None,
        end: ToParam = None,
    ) -> Template:
        form = read_period(start, end, runtime.now().date())
        data = trends.trends(session, runtime, form.period)
        return page(
            request,
            "dashboard.html",
            title="Dashboard",
            form=form,
            data=data,
            charts=_charts(data),
            runs=runs.recent_runs(session, 5),
        )

    return [dashboard]
