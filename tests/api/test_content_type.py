"""A JSON body sent under another media type is a 415 problem pointing at Content-Type,
on every operation that reads a body, and the OpenAPI document says so; JSON types
with a UTF-8 charset, ``+json`` types and a missing Content-Type are read as JSON."""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import TestClient

Client = TestClient[Litestar]


def body_operations(client: Client) -> list[tuple[str, str]]:
    """(method, path) of every operation the OpenAPI document gives a request body, with
    a made-up id in each path parameter."""
    document = client.get("/schema/openapi.json").json()
    found = []
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if isinstance(operation, dict) and "requestBody" in operation:
                found.append((method.upper(), re.sub(r"\{\w+\}", str(uuid.uuid4()), path)))
    return sorted(found)


def test_every_body_operation_documents_415(client: Client) -> None:
    document = client.get("/schema/openapi.json").json()
    documented = {
        (method, path): operation["responses"].get("415")
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if isinstance(operation, dict) and "requestBody" in operation
    }
    assert len(documented) >= 15  # contacts, OTP, 8 event types, bulk, returns, estimates...
    for where, response in documented.items():
        assert response is not None, where
        assert "application/problem+json" in response["content"], where


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/xml",
        "application/json; charset=latin-1",
        "",
    ],
)
def test_a_body_of_another_media_type_is_a_415(client: Client, content_type: str) -> None:
    operations = body_operations(client)
    for method, path in operations:
        response = client.request(
            method, path, content=b'{"name": "Ann"}', headers={"Content-Type": content_type}
        )
        assert response.status_code == 415, (method, path, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        problem = response.json()
        assert problem["status"] == 415 and problem["code"] == "unsupported_media_type"
        assert problem["errors"] == [{"path": "Content-Type", "message": "not application/json"}]
        assert "application/json" in problem["detail"]


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json",
        "Application/JSON; charset=UTF-8",
        'application/json;charset="utf-8"',
        "application/vnd.rewards.contact+json",
        None,  # no Content-Type at all: read as JSON
    ],
)
def test_json_media_types_are_read(client: Client, content_type: str | None) -> None:
    headers = {} if content_type is None else {"Content-Type": content_type}
    body: dict[str, Any] = {"code": f"c-{uuid.uuid4().hex[:8]}", "name": "Ann"}
    created = client.post("/v1/contacts", content=json.dumps(body).encode(), headers=headers)
    assert created.status_code == 201, created.text
    assert created.json()["code"] == body["code"]


def test_a_form_is_not_parsed_as_json(client: Client) -> None:
    """What ``curl -d`` sends without ``-H 'Content-Type: application/json'``."""
    response = client.post("/v1/contacts", data={"name": "Ann"})
    assert response.status_code == 415
    assert "application/x-www-form-urlencoded" in response.json()["detail"]
