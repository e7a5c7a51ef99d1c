"""``create_app(settings)``: the only wiring point. Nothing happens at import time."""

from __future__ import annotations

import logging

from litestar import Litestar, Router
from litestar.datastructures import State
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme

from rewards.api.analyst import analyst_handlers
from rewards.api.analytics import analytics_summary
from rewards.api.auth import SECURITY_SCHEME, api_key_middleware
from rewards.api.contacts import ContactsController, WalletsController
from rewards.api.deps import DEPENDENCIES
from rewards.api.docs import DecimalAsNumber, OfflineSwaggerPlugin, SchemaCarryingJsonPlugin
from rewards.api.estimates import EstimatesController
from rewards.api.events import events_router
from rewards.api.health import health, metrics_controller
from rewards.api.http_metrics import http_metrics
from rewards.api.invoices import InvoicesController
from rewards.api.offers import get_rulesets, list_offers
from rewards.api.processor import processor_handlers
from rewards.api.responses import (
    EXCEPTION_HANDLERS,
    JSONResponse,
    allow_header_for_every_method,
    refuse_unknown_query_parameters,
)
from rewards.api.rulesets import ruleset_history_handlers
from rewards.api.runs import run_handlers
from rewards.api.webhooks import WebhooksController
from rewards.console.router import (
    console_router,
    console_static,
    root_redirect,
    template_config,
)
from rewards.db.database import Database
from rewards.db.migrate import upgrade
from rewards.intake.group_commit import GroupCommit
from rewards.intake.process import build_runtime
from rewards.notify import subscriptions
from rewards.notify.messages import openapi_webhooks
from rewards.runs import scheduler
from rewards.runtime import history, private_logs, watcher
from rewards.runtime.rate_counters import RateCounters, RedisCounters, SqlCounters
from rewards.runtime.ratelimit import OtpLimits
from rewards.settings import Settings

log = logging.getLogger("rewards")


def create_app(settings: Settings | None = None) -> Litestar:
    """Build the ASGI app. ``settings`` default to the environment (``REWARDS_*``)."""
    settings = settings or Settings.from_env()
    private_logs.install()
    database = Database(settings.database_url, echo=settings.sql_echo)
    runtime = build_runtime(settings)
    intake = GroupCommit(database, runtime)
    # Counters every worker process shares: Redis when configured, else the database.
    counters: RateCounters = (
        RedisCounters(settings.redis_url)
        if settings.redis_url
        else SqlCounters(database.write_engine)
    )
    otp_limits = OtpLimits(counters, settings, runtime.now)

    def on_startup() -> None:
        if settings.auto_migrate:
            upgrade(database.write_engine)
        history.record_load(
            database, runtime, runtime.rulesets, source="start", loaded_by="start-up"
        )
        subscriptions.sync_webhooks_file(database, runtime.schemas, settings.webhooks_file)
        # Work beside requests: hot reload of the rulesets folder, scheduled runs.
        watcher.start(runtime, database)
        scheduler.start(runtime, database)
        intake.start()
        log.info("rewards ready: rulesets %s", runtime.rulesets.version)

    def on_shutdown() -> None:
        intake.stop()
        scheduler.stop(runtime, database)
        watcher.stop(runtime, database)
        counters.close()
        database.dispose()

    v1 = Router(
        path="/v1",
        route_handlers=[
            ContactsController,
            WalletsController,
            events_router(settings.bulk_max_body_bytes),
            EstimatesController,
            InvoicesController,
            list_offers,
            get_rulesets,
            analytics_summary,
            *analyst_handlers(),
            *ruleset_history_handlers(),
            *run_handlers(),
            *processor_handlers(),
            WebhooksController,
        ],
        security=[{SECURITY_SCHEME: []}],
    )
    return Litestar(
        route_handlers=[
            health,
            v1,
            console_router(settings),
            console_static(),
            root_redirect,
            metrics_controller(settings.metrics_key, settings.api_keys),
        ],
        dependencies=DEPENDENCIES,
        middleware=[http_metrics, api_key_middleware(settings.api_keys)],
        exception_handlers=EXCEPTION_HANDLERS,
        response_class=JSONResponse,
        request_max_body_size=settings.max_body_bytes,
        before_request=refuse_unknown_query_parameters,
        before_send=[allow_header_for_every_method],
        on_startup=[on_startup],
        on_shutdown=[on_shutdown],
        state=State(
            {
                "runtime": runtime,
                "database": database,
                "intake": intake,
                "otp_limits": otp_limits,
                "counters": counters,
            }
        ),
        openapi_config=OpenAPIConfig(
            title="rewards",
            version="1",
            description="Loyalty rules engine: customer events in, declarative reward offers, "
            "append-only wallet ledger. Errors are RFC 9457 problem details.",
            components=Components(
                security_schemes={
                    SECURITY_SCHEME: SecurityScheme(
                        type="http",
                        scheme="bearer",
                        description="API key of a role (REWARDS_API_KEYS): `integrator` (POS, "
                        "apps, billing: events, contacts, invoices, claims, ...), `processor` "
                        "(card transaction processors: /v1/processor-transactions only), "
                        "`analyst` (reads every resource and runs simulations; no other "
                        "write) or `admin` (everything, and runs and reloads). Another "
                        "role's operation answers 403.",
                    )
                }
            ),
            # /schema and /schema/openapi.json: the document; /schema/swagger: Swagger UI.
            # What subscribers receive (OpenAPI 3.1 webhooks); bodies from schemas/.
            webhooks=dict(openapi_webhooks()),
            render_plugins=[SchemaCarryingJsonPlugin(), OfflineSwaggerPlugin("/schema")],
            path="/schema",
        ),
        plugins=[DecimalAsNumber()],
        template_config=template_config(),
        debug=False,
    )
