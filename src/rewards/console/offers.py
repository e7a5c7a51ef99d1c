"""``/console/offers``: every loaded offer with its classification, evaluation, validity,
file, and its awards and cost in the chosen period (the dashboard's period form)."""

from __future__ import annotations

from typing import Any

from litestar import get
from litestar.response import Template

from rewards.analyst import trends
from rewards.console.pages import ConsoleRequest, RuntimeDep, SessionDep, page
from rewards.console.period import FromParam, ToParam, read_period


def handlers() -> list[Any]:
    @get("/offers", name="console_offers", sync_to_thread=True)
    def offers(
        request: ConsoleRequest,
        session: SessionDep,
        runtime: RuntimeDep,
        start: FromParam = None,
        end: ToParam = None,
    ) -> Template:
        form = read_period(start, end, runtime.now().date())
        activity = trends.offer_activity(session, runtime, form.period)
        return page(
            request,
            "offers.html",
            title="Offers",
            form=form,
            activity=activity,
            version=runtime.rulesets.version,
        )

    return [offers]
