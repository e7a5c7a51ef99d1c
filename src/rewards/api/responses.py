"""JSON encoding and the one mapping from exceptions to RFC 9457 problem details."""

from __future__ import annotations

import logging
import re
from typing import Any

import msgspec
from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.serialization import default_serializer

from rewards.errors import (
    PROBLEM_MEDIA_TYPE,
    DomainError,
    FieldError,
    Problem,
    http_problem,
    refusal,
)
from rewards.schemas import CONTROL_CHARACTERS

log = logging.getLogger("rewards.api")

# Money leaves as JSON numbers (12.5 -> 12.50), never through binary floats.
_encoder = msgspec.json.Encoder(enc_hook=default_serializer, decimal_format="number")


class JSONResponse(Response[Any]):
    """Litestar's response with our encoder: Decimal as an exact JSON number."""

    def render(self, content: Any, media_type: str, enc_hook: Any = default_serializer) -> bytes:
        if isinstance(content, bytes):
            return content
        if media_type in (MediaType.JSON, PROBLEM_MEDIA_TYPE):
            return _encoder.encode(content)
        return super().render(content, media_type, enc_hook)


def problem_response(problem: Problem, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(
        content=problem, status_code=problem.status, media_type=PROBLEM_MEDIA_TYPE, headers=headers
    )


def _validation_errors(exc: ValidationException) -> list[FieldError]:
    errors = []
    for item in exc.extra if isinstance(exc.extra, list) else []:
        if isinstance(item, dict):
            key = str(item.get("key") or item.get("source") or "")
            errors.append(FieldError(path=key, message=str(item.get("message", "invalid"))))
    return errors


def handle_domain_error(_: Request[Any, Any, Any], exc: DomainError) -> JSONResponse:
    return problem_response(exc.to_problem(), headers=exc.headers or None)


def handle_http_exception(_: Request[Any, Any, Any], exc: HTTPException) -> JSONResponse:
    problem = http_problem(exc.status_code, exc.detail)
    if isinstance(exc, ValidationException):
        problem = Problem(
            title="Invalid request parameters",
            status=400,
            detail=exc.detail,
            code="invalid_parameters",
            errors=_validation_errors(exc) or None,
        )
    return problem_response(problem, headers=exc.headers)


def handle_unexpected(request: Request[Any, Any, Any], exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return problem_response(
        http_problem(500, "Internal error; nothing was written.", "internal_error")
    )


EXCEPTION_HANDLERS: dict[Any, Any] = {
    DomainError: handle_domain_error,
    HTTPException: handle_http_exception,
    Exception: handle_unexpected,
}


_PARAM_TYPE = re.compile(r":[^}]+\}")


async def allow_header_for_every_method(message: Any, scope: Any) -> None:
    """``before_send`` hook: answer OPTIONS with every method of the matched route.

    Litestar's generated OPTIONS handler can list only the methods of the first handler
    registered on a path (GET but not PATCH on /v1/contacts/{id}); clients and
    schemathesis read ``Allow``, so it is rebuilt from the app's route map here.
    """
    if message["type"] != "http.response.start" or scope.get("method") != "OPTIONS":
        return
    app = scope["app"]
    if "allowed_methods" not in app.state:  # path template without ":type" -> methods
        app.state["allowed_methods"] = {
            _PARAM_TYPE.sub("}", path): sorted(methods)
            for path, methods in app.route_handler_method_map.items()
        }
    methods = app.state["allowed_methods"].get(scope.get("path_template", ""))
    if methods:
        headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"allow"]
        headers.append((b"allow", ", ".join(methods).encode()))
        message["headers"] = headers


InvalidParameter = refusal("invalid_parameters", "Invalid request parameters", 400)
NoSuchPath = refusal("not_found", "Not Found", 404)


def _declared_query_parameters(app: Any) -> dict[tuple[str, str], frozenset[str]]:
    """(path template, method) -> the query parameter names the OpenAPI document declares."""
    if "query_parameters" not in app.state:
        declared = {}
        for path, item in (app.openapi_schema.to_schema().get("paths") or {}).items():
            for method, operation in item.items():
                if isinstance(operation, dict):
                    names = {
                        p["name"] for p in operation.get("parameters", []) if p.get("in") == "query"
                    }
                    declared[(path, method.upper())] = frozenset(names)
        app.state["query_parameters"] = declared
    result: dict[tuple[str, str], frozenset[str]] = app.state["query_parameters"]
    return result


async def refuse_unknown_query_parameters(request: Request[Any, Any, Any]) -> None:
    """``before_request`` hook: a query parameter the operation does not declare, or one
    given twice (no parameter of this API is a list), is a 400 instead of being ignored.
    Async: Litestar runs a sync hook on a worker thread, a thread hop per request.
    A control character in a query value is a 400 as well, in the path a 404 (no id of
    this API holds one, so there is no such resource; PostgreSQL cannot even compare NUL
    in text)."""
    if CONTROL_CHARACTERS.search(request.scope["path"]):
        raise NoSuchPath(
            "No resource has control characters in its path.",
            errors=[FieldError(path="path", message="control characters are not allowed")],
        )
    if not request.query_params:
        return
    known = _declared_query_parameters(request.app).get(
        (request.scope.get("path_template", ""), request.method)
    )
    for name, values in request.query_params.dict().items():
        if known is not None and name not in known:
            raise InvalidParameter(
                f"Unknown query parameter {name!r}.",
                errors=[FieldError(path=name, message="not a parameter of this operation")],
            )
        if len(values) > 1:
            raise InvalidParameter(
                f"Query parameter {name!r} given {len(values)} times.",
                errors=[FieldError(path=name, message="given more than once")],
            )
        if any(CONTROL_CHARACTERS.search(value) for value in values):
            raise InvalidParameter(
                f"Control characters in query parameter {name!r}.",
                errors=[FieldError(path=name, message="control characters are not allowed")],
            )
