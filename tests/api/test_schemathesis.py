"""Schemathesis over the whole OpenAPI document, in-process, every check on.

Stateless: every operation with generated (valid and invalid) inputs. Stateful: chains
of calls following the links schemathesis infers (create a contact, then read it, use
its wallet code, ...), on SQLite and PostgreSQL. Both derandomized; examples per
operation from REWARDS_SCHEMATHESIS_EXAMPLES (default and CI: 50).

A schema-valid request must be accepted: schemathesis' own ``positive_data_acceptance``
is replaced (schemathesis.toml) by ``schema_valid_requests_are_accepted`` below, which
allows the same statuses and, beyond them, a 400 or 422 only when its problem ``code``
is a documented business refusal: a fact no schema can know (an unknown contact, an
empty wallet, a cursor this service did not issue), never ``validation_failed``.
"""

from __future__ import annotations

import os
import time
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from litestar import Litestar
from schemathesis.generation.stateful.state_machine import APIStateMachine
from sqlalchemy import delete, select

from rewards.db.database import Database
from rewards.db.run_tables import EvaluationRun
from rewards.db.tables import metadata
from tests.conftest import ADMIN_KEY, BOTH

EXAMPLES = int(os.environ.get("REWARDS_SCHEMATHESIS_EXAMPLES", "50"))
AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}
FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)


# API.md: refusals that depend on the data, not on the request's shape.
BUSINESS_REFUSALS = frozenset(
    {
        "contact_not_found",
        "classification_not_allowed",
        "totals_mismatch",
        "referral_limit_exceeded",
        "self_referral",
        "spend_blocked",
        "insufficient_funds",
        "spend_window_expired",
        "spend_amount_out_of_range",
        "spend_exceeds_purchase",
        "otp_invalid",
        "otp_spend_mismatch",
        "duplicate_statement",
        "duplicate_kpi",
        "kpi_not_found",
        "not_a_purchase",
        "purchase_not_found",
        "purchase_not_posted",
        "return_exceeds_purchase",
        "unknown_currency",
        "credits_invoice_required",  # which invoice types are credit notes: the definition's
        "credited_invoice_not_found",
        "performed_on_in_future",  # "now" is not something a schema can state
        "invalid_cursor",  # cursors are opaque tokens this service issued
        "unknown_terminal",  # the definition's merchants list the terminals
        "ambiguous_terminal",
        "unknown_merchant",
        "no_matching_transaction",  # a claim names a transaction that may not exist
    }
)
ACCEPTED_STATUSES = {401, 403, 404, 409, 429}


@schemathesis.check
def schema_valid_requests_are_accepted(ctx: Any, response: Any, case: Any) -> bool | None:
    """Positive data: 2xx, 3xx, 401, 403, 404, 409, 429 as schemathesis' own check, or a
    400/422 whose code is a documented business refusal."""
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive:
        return None
    status = response.status_code
    if status < 400 or status in ACCEPTED_STATUSES or status >= 500:  # 5xx: its own check
        return None
    code = (
        response.json().get("code")
        if "json" in response.headers.get("content-type", [""])[0]
        else None
    )
    if status in (400, 422) and code in BUSINESS_REFUSALS:
        return None
    raise AssertionError(
        f"Schema-valid request refused with {status} {code}: {response.text[:500]}"
    )


def filter_query(ctx: Any, query: dict[str, Any] | None) -> bool:
    """Leave out queries a URL cannot carry: a parameter whose value is an empty list is
    sent as nothing at all, so the server never sees the (negative) parameter it would
    refuse, and schemathesis reports an accepted schema-violating request."""
    return not query or not any(value == [] for value in query.values())


@pytest.fixture
def api_schema(app: Litestar) -> Any:
    loaded = schemathesis.openapi.from_asgi("/schema/openapi.json", app)
    loaded.hook(filter_query)
    return loaded


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@FUZZ_SETTINGS
def test_every_operation_conforms(case: Any) -> None:
    case.call_and_validate(headers=AUTH)


@pytest.mark.parametrize("database_url", BOTH, indirect=True)
def test_stateful_call_chains_conform(api_schema: Any, app: Litestar) -> None:
    machine: type[APIStateMachine] = api_schema.as_state_machine()
    database: Database = app.state.database

    class WithAuth(machine):  # type: ignore[valid-type,misc]
        def setup(self) -> None:
            # Every scenario starts from the empty database: Hypothesis replays a scenario's
            # choices and needs the same responses (a contact created twice is a 409 the
            # second time, its link's bundle stays empty: FlakyStrategyDefinition).
            with database.write_engine.begin() as connection:
                for table in reversed(metadata.sorted_tables):
                    connection.execute(delete(table))

        def after_call(self, response: Any, case: Any) -> None:
            super().after_call(response, case)
            # A run works on a background thread: wait for it, or whether the next
            # POST /v1/evaluation-runs is a 202 or a 409 depends on timing.
            if case.operation.label == "POST /v1/evaluation-runs" and response.status_code == 202:
                running = select(EvaluationRun.id).where(EvaluationRun.running_lock == 1)
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:
                    with database.write_engine.connect() as connection:
                        if connection.execute(running).first() is None:
                            break
                    time.sleep(0.01)

        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            return {"headers": AUTH}

    WithAuth.run(
        settings=settings(FUZZ_SETTINGS, max_examples=max(EXAMPLES // 2, 10), stateful_step_count=8)
    )
