"""Liveness and readiness (no auth), and the Prometheus metrics."""

from __future__ import annotations

from collections.abc import Mapping

from litestar import Controller, MediaType, Response, get
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import SkipValidation
from litestar.plugins.prometheus import PrometheusController
from sqlalchemy import text
from sqlmodel import Session

from rewards.api.auth import SECURITY_SCHEME, metrics_guard
from rewards.api.docs import problems
from rewards.runtime.context import Runtime
from rewards.wire import Health


@get(
    "/health",
    summary="Service, database and rulesets status",
    description=(
        "200 while the service serves. `status` is `degraded` (still 200: the previous "
        "rulesets keep serving, and a restart would not load the refused folder either) "
        "when the last reload of the rulesets folder was refused; `reload_errors` then lists "
        "its problems as `file:line:column: message`, until a valid folder is loaded."
    ),
    security=[],
    sync_to_thread=True,
    tags=["health"],
)
def health(
    session: NamedDependency[SkipValidation[Session]],
    runtime: NamedDependency[SkipValidation[Runtime]],
) -> Health:
    session.execute(text("SELECT 1"))
    errors = list(runtime.reload_errors)
    return Health(
        status="degraded" if errors else "ok",
        database="ok",
        rulesets_version=runtime.rulesets.version,
        reload_errors=errors,
    )


def metrics_controller(metrics_key: str | None, api_keys: Mapping[str, str]) -> type[Controller]:
    """``GET /metrics``: open without ``metrics_key`` (REWARDS_METRICS_KEY), else for that
    key or an admin key."""
    guarded = metrics_key is not None
    access = (
        "Needs `Authorization: Bearer <key>` with the metrics key (REWARDS_METRICS_KEY) or "
        "an admin key."
        if guarded
        else "Open, like /health (counts only, no personal data); setting REWARDS_METRICS_KEY "
        "requires a key."
    )

    class MetricsController(PrometheusController):
        path = "/metrics"
        tags = ["health"]
        guards = [metrics_guard(metrics_key, api_keys)] if metrics_key is not None else []
        security = [{SECURITY_SCHEME: []}] if guarded else []

        @get(
            operation_id="get_metrics",
            summary="Prometheus metrics of this worker process",
            description="Request, event, award, spend and engine metrics in the Prometheus "
            f"text format. {access}",
            media_type=MediaType.TEXT,
            responses={
                200: ResponseSpec(
                    data_container=str,
                    media_type=MediaType.TEXT,
                    description="Prometheus text exposition format",
                    generate_examples=False,
                ),
                **(problems(403) if guarded else {}),
            },
        )
        async def get(self) -> Response[bytes]:
            # Litestar's handler: the default registry, or the multiprocess collector
            # when PROMETHEUS_MULTIPROC_DIR is set.
            answer: Response[bytes] = await PrometheusController.get.fn(self)
            return answer

    return MetricsController
