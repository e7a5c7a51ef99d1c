"""OpenAPI helpers: documented problem responses, and the request bodies from ``schemas/``."""

from __future__ import annotations

import importlib.util
import re
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any

import msgspec
from litestar import Litestar, Request, Router, get
from litestar._openapi.schema_generation import SchemaCreator
from litestar.datastructures import CacheControlHeader
from litestar.exceptions import NotFoundException
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.plugins import JsonRenderPlugin, SwaggerRenderPlugin
from litestar.openapi.spec import OpenAPIType, Schema
from litestar.params import PathParameter
from litestar.plugins import OpenAPISchemaPlugin
from litestar.response import File
from litestar.routes import HTTPRoute
from litestar.typing import FieldDefinition

from rewards.errors import PROBLEM_MEDIA_TYPE, Problem

_DESCRIPTIONS = {
    400: "Malformed JSON, parameters or cursor",
    401: "Missing or unknown API key",
    403: "The key's role may not use this endpoint",
    404: "Not found",
    409: "Conflict with the current state",
    413: "Request body larger than 64 KB",
    415: "Body not sent as `application/json` (or a `+json` type) in UTF-8",
    422: "Invalid body (with `errors[].path`) or a business refusal (with its `code`)",
    429: "Rate limit reached (OTP issue and use); see the RateLimit-* and Retry-After headers",
    503: "The shared rate counters (Redis) cannot be reached: requests using OTPs are refused",
}


def problems(*statuses: int, auth: bool = True) -> dict[int, ResponseSpec]:
    """Problem-details responses for a handler: under /v1 (``auth``) always 401 and 403
    (every handler serves some roles only: the API-key middleware, api.auth)."""
    wanted = set(statuses) | ({401, 403} if auth else set())
    return {
        status: ResponseSpec(
            data_container=Problem, media_type=PROBLEM_MEDIA_TYPE, description=_DESCRIPTIONS[status]
        )
        for status in sorted(wanted)
    }


BODY = problems(400, 413, 415, 422)  # every handler that reads a body


def request_schema(name: str) -> dict[str, Any]:
    """Handler ``opt`` naming the ``schemas/`` file that is its request body."""
    return {"request_schema": name}


class DecimalAsNumber(OpenAPISchemaPlugin):
    """Money is answered as an exact JSON number (see responses.JSONResponse); document
    it as ``number``, not Litestar's default ``string`` for Decimal."""

    @staticmethod
    def is_plugin_supported_type(value: Any) -> bool:
        return value is Decimal

    def to_openapi_schema(
        self, field_definition: FieldDefinition, schema_creator: SchemaCreator
    ) -> Schema:
        return Schema(type=OpenAPIType.NUMBER)


_PATH_PARAM = re.compile(r"\{(\w+):[^}]+\}")


def published_document(request: Request[Any, Any, Any], openapi_schema: dict[str, Any]) -> bytes:
    """The OpenAPI document as JSON, every request body replaced by its file from
    ``schemas/`` (built once per app)."""
    state = request.app.state
    if "openapi_json" not in state:
        state["openapi_json"] = msgspec.json.encode(
            with_request_bodies(request.app, openapi_schema)
        )
    rendered: bytes = state["openapi_json"]
    return rendered


class SchemaCarryingJsonPlugin(JsonRenderPlugin):
    """Serves /schema/openapi.json with every request body replaced by its file from
    ``schemas/``, so the published document is exactly what the service validates."""

    def render(self, request: Request[Any, Any, Any], openapi_schema: dict[str, Any]) -> bytes:
        return published_document(request, openapi_schema)


# The files of Swagger UI the page loads, from the swagger-ui-py package (Swagger UI 5:
# it reads OpenAPI 3.1, which Litestar writes).
SWAGGER_UI_FILES = frozenset(
    {
        "swagger-ui-bundle.js",
        "swagger-ui-standalone-preset.js",
        "swagger-ui.css",
        "favicon-32x32.png",
    }
)


def swagger_ui_folder() -> Path:
    """The installed package's static folder, found without importing the package (its
    ``__init__`` loads its web framework adapters)."""
    spec = importlib.util.find_spec("swagger_ui")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the swagger-ui-py package is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "static"


class OfflineSwaggerPlugin(SwaggerRenderPlugin):
    """/schema/swagger: Swagger UI showing the published document, its scripts and styles
    served by the app itself under /schema/swagger-ui/ (Litestar's default loads them
    from a CDN, which a closed network or a strict CSP cannot reach)."""

    def __init__(self, schema_path: str = "/schema") -> None:
        assets = f"{schema_path}/swagger-ui"
        super().__init__(
            js_url=f"{assets}/swagger-ui-bundle.js",
            css_url=f"{assets}/swagger-ui.css",
            standalone_preset_js_url=f"{assets}/swagger-ui-standalone-preset.js",
            favicon=f"<link rel='icon' type='image/png' href='{assets}/favicon-32x32.png'>",
            path="/swagger",
        )
        self.folder = swagger_ui_folder()

    def render_json(  # type: ignore[override]
        self, request: Request[Any, Any, Any], openapi_schema: dict[str, Any]
    ) -> bytes:
        return published_document(request, openapi_schema)

    def receive_router(self, router: Router) -> None:
        super().receive_router(router)
        folder = self.folder

        @get(
            "/swagger-ui/{name:str}",
            include_in_schema=False,
            sync_to_thread=False,
            cache_control=CacheControlHeader(max_age=86400),
        )
        def swagger_ui_file(name: Annotated[str, PathParameter()]) -> File:
            if name not in SWAGGER_UI_FILES:
                raise NotFoundException(f"No Swagger UI file {name!r}.")
            return File(folder / name, filename=name, content_disposition_type="inline")

        router.register(swagger_ui_file)


def _hoisted(schema: dict[str, Any], name: str, document: dict[str, Any]) -> dict[str, Any]:
    """``schema`` for the OpenAPI document: its ``$defs`` become components (named after
    the file) and its ``#/$defs/`` references point there."""
    prefix = name.replace("/", "_")
    components = document.setdefault("components", {}).setdefault("schemas", {})

    def rewrite(node: Any) -> Any:
        if isinstance(node, dict):
            return {
                key: (
                    f"#/components/schemas/{prefix}_{value.removeprefix('#/$defs/')}"
                    if key == "$ref" and isinstance(value, str) and value.startswith("#/$defs/")
                    else rewrite(value)
                )
                for key, value in node.items()
            }
        if isinstance(node, list):
            return [rewrite(item) for item in node]
        return node

    for def_name, definition in schema.get("$defs", {}).items():
        components[f"{prefix}_{def_name}"] = rewrite(definition)
    kept = {k: v for k, v in schema.items() if k not in ("$schema", "$id", "$defs")}
    return dict(rewrite(kept))


def with_request_bodies(app: Litestar, document: dict[str, Any]) -> dict[str, Any]:
    """Insert each handler's request body schema (named by its ``opt``), the OpenAPI
    links of its responses (``opt["links"]``: status -> link name -> link object), and
    the body of each notification of ``webhooks`` (``schemas/notifications/<type>.json``)."""
    registry = app.state.runtime.schemas
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        path = _PATH_PARAM.sub(r"{\1}", route.path)
        for handler in route.route_handlers:
            for status, links in handler.opt.get("links", {}).items():
                for method in handler.http_methods:
                    responses = document["paths"][path][method.lower()]["responses"]
                    responses[str(status)]["links"] = links
            name = handler.opt.get("request_schema")
            if not name:
                continue
            body = _hoisted(registry.documents[name], name, document)
            for method in handler.http_methods:
                operation = document["paths"][path][method.lower()]
                operation["requestBody"] = {
                    "required": True,
                    "content": {"application/json": {"schema": body}},
                }
    for notification_type, item in document.get("webhooks", {}).items():
        name = f"notifications/{notification_type}"
        body = _hoisted(registry.documents[name], name, document)
        item["post"]["requestBody"]["content"]["application/json"]["schema"] = body
    return document
