"""Roles through HTTP, every /v1 operation of the OpenAPI document: an analyst key reads
every resource and runs simulations, and every other write answers it 403; a processor
key reaches only the processor-transaction operations."""

from __future__ import annotations

import re
from typing import Any

from litestar import Litestar
from litestar.testing import TestClient

from tests.conftest import ANALYST_KEY, PROCESSOR_KEY

Client = TestClient[Litestar]
ANALYST_WRITES = {("post", "/v1/simulations")}


def operations(client: Client) -> list[tuple[str, str]]:
    document = client.get("/schema/openapi.json").json()
    found = [
        (method, path)
        for path, item in document["paths"].items()
        if path.startswith("/v1/")
        for method in item
        if method in ("get", "post", "patch", "put", "delete")
    ]
    assert len(found) >= 30, found  # the whole API, not a stray subset
    return found


def call(client: Client, method: str, path: str, key: str) -> Any:
    concrete = re.sub(r"\{[^}]+\}", "x", path)
    body = {} if method != "get" else None
    return client.request(
        method.upper(), concrete, json=body, headers={"Authorization": f"Bearer {key}"}
    )


def test_an_analyst_reads_everything_and_writes_only_simulations(client: Client) -> None:
    reads = writes = 0
    for method, path in operations(client):
        answer = call(client, method, path, ANALYST_KEY)
        if method == "get" or (method, path) in ANALYST_WRITES:
            assert answer.status_code not in (401, 403), (method, path, answer.text)
            reads += 1
        else:
            assert answer.status_code == 403, (method, path, answer.status_code)
            assert answer.json()["code"] == "forbidden"
            writes += 1
    assert reads >= 15 and writes >= 15


def test_a_processor_reaches_only_processor_transactions(client: Client) -> None:
    for method, path in operations(client):
        answer = call(client, method, path, PROCESSOR_KEY)
        if path.startswith("/v1/processor-transactions"):
            assert answer.status_code not in (401, 403), (method, path, answer.text)
        else:
            assert answer.status_code == 403, (method, path, answer.status_code)
