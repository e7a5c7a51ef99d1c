"""Schemathesis over the whole OpenAPI document, in-process, every default check on.

Stateless: every operation with generated (valid and invalid) inputs. Stateful: chains
of calls following the links schemathesis infers (create a contact, then read it, use
its wallet code, ...). Both derandomized; examples per operation from
REWARDS_SCHEMATHESIS_EXAMPLES (CI: at least 50).
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
from tests.conftest import ADMIN_KEY

EXAMPLES = int(os.environ.get("REWARDS_SCHEMATHESIS_EXAMPLES", "50"))
AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}
FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)


@pytest.fixture
def api_schema(app: Litestar) -> Any:
    return schemathesis.openapi.from_asgi("/schema/openapi.json", app)


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@FUZZ_SETTINGS
def test_every_operation_conforms(case: Any) -> None:
    case.call_and_validate(headers=AUTH)


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
