"""Schemathesis over the whole OpenAPI document, in-process, every default check on.

Stateless: every operation with generated (valid and invalid) inputs. Stateful: chains
of calls following the links schemathesis infers (create a contact, then read it, use
its wallet code, ...). Both derandomized; examples per operation from
REWARDS_SCHEMATHESIS_EXAMPLES (CI: at least 50).
"""

from __future__ import annotations

import os
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from litestar import Litestar
from schemathesis.generation.stateful.state_machine import APIStateMachine

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


def test_stateful_call_chains_conform(api_schema: Any) -> None:
    machine: type[APIStateMachine] = api_schema.as_state_machine()

    class WithAuth(machine):  # type: ignore[valid-type,misc]
        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            return {"headers": AUTH}

    WithAuth.run(
        settings=settings(FUZZ_SETTINGS, max_examples=max(EXAMPLES // 2, 10), stateful_step_count=8)
    )
