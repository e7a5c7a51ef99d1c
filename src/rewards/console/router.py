"""The console's router: sessions, login, the role and form-token checks, HTML error
pages and the static files. Every route is left out of the OpenAPI document."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from litestar import Response, Router, get
from litestar.di import Provide
from litestar.exceptions import HTTPException
from litestar.middleware.base import DefineMiddleware
from litestar.middleware.session import SessionMiddleware
from litestar.middleware.session.client_side import ClientSideSessionBackend, CookieBackendConfig
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.response import Redirect, Template
from litestar.static_files import create_static_files_router
from litestar.template.config import TemplateConfig
from litestar.types import ASGIApp

from rewards.console import auth, contacts, dashboard, events, offers, rulesets, runs, simulate
from rewards.console.pages import ConsoleRequest, page
from rewards.console.session import COOKIE, ConsoleUser, csrf_ok, current_user, session_secret
from rewards.errors import DomainError
from rewards.runtime.context import Runtime
from rewards.settings import Settings

STATIC = Path(__file__).parent / "static"
log = logging.getLogger("rewards.console")


def template_config() -> TemplateConfig[JinjaTemplateEngine]:
    """Jinja2 templates of this package; autoescaped, and a missing variable is an error
    rather than an empty string."""
    environment = Environment(
        loader=PackageLoader("rewards.console", "templates"),
        autoescape=select_autoescape(default=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return TemplateConfig(engine=JinjaTemplateEngine.from_environment(environment))


def _error_page(request: ConsoleRequest, status: int, title: str, detail: str) -> Response[Any]:
    template: Template = page(request, "error.html", status_code=status, title=title, detail=detail)
    return template


def _on_domain_error(request: ConsoleRequest, error: DomainError) -> Response[Any]:
    return _error_page(request, error.status, error.title, error.detail)


def _on_http_error(request: ConsoleRequest, error: HTTPException) -> Response[Any]:
    titles = {403: "Not allowed", 404: "Not found", 405: "Not allowed"}
    return _error_page(
        request, error.status_code, titles.get(error.status_code, "Error"), error.detail
    )


def _on_unexpected(request: ConsoleRequest, error: Exception) -> Response[Any]:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return _error_page(
        request,
        500,
        "Something went wrong",
        "An internal error; nothing was written. It is logged.",
    )


def _keys(request: ConsoleRequest) -> Mapping[str, str]:
    runtime: Runtime = request.app.state.runtime
    return runtime.settings.api_keys


async def _check_access(request: ConsoleRequest) -> Response[Any] | None:
    """Before every console handler: a page needs a live session (else to login), an
    admin page an admin (else a 403 page), a form its session's token (else a 403)."""
    opt = request.route_handler.opt
    user = current_user(request.session, _keys(request))
    request.scope.setdefault("state", {})["console_user"] = user
    if request.method == "POST":
        form = await request.form()
        sent = form.get("csrf_token")
        if not csrf_ok(request.session, sent if isinstance(sent, str) else None):
            return _error_page(
                request,
                403,
                "Form expired",
                "This form's security token is missing or out of date (the session may "
                "have ended). Go back, reload the page and send it again.",
            )
    if opt.get("public"):
        return None
    if user is None:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return Redirect(f"/console/login?next={quote(target)}", status_code=303)
    if opt.get("admin_only") and not user.is_admin:
        return _error_page(
            request, 403, "Not allowed", "This needs an admin key; you are logged in as an analyst."
        )
    return None


def provide_user(request: ConsoleRequest) -> ConsoleUser:
    user: ConsoleUser = request.scope["state"]["console_user"]
    return user


def _session_middleware(config: CookieBackendConfig) -> DefineMiddleware:
    """Litestar's session middleware with the encrypted-cookie backend, built when the
    app's middleware stack is (the router is deep-copied when registered, and the
    backend's cipher cannot be)."""

    def build(app: ASGIApp) -> SessionMiddleware[ClientSideSessionBackend]:
        return SessionMiddleware(app, backend=ClientSideSessionBackend(config))

    return DefineMiddleware(build)


def console_router(settings: Settings) -> Router:
    session = CookieBackendConfig(
        secret=session_secret(settings),
        key=COOKIE,
        path="/console",
        httponly=True,
        samesite="strict",
        secure=settings.console_secure_cookie,
        max_age=settings.console_session_seconds,
    )
    return Router(
        path="/console",
        route_handlers=[
            *auth.handlers(settings),
            *dashboard.handlers(),
            *offers.handlers(),
            *rulesets.handlers(),
            *runs.handlers(),
            *events.handlers(),
            *simulate.handlers(),
            *contacts.handlers(),
        ],
        middleware=[_session_middleware(session)],
        before_request=_check_access,
        dependencies={"user": Provide(provide_user, sync_to_thread=False)},
        exception_handlers={
            DomainError: _on_domain_error,
            HTTPException: _on_http_error,
            Exception: _on_unexpected,
        },
        include_in_schema=False,
    )


def console_static() -> Router:
    """The console's stylesheet and script, served by the app (no CDN; works offline)."""
    return create_static_files_router(
        path="/console/static", directories=[STATIC], include_in_schema=False, name="console_static"
    )


@get("/", include_in_schema=False)
async def root_redirect() -> Redirect:
    """``GET /``: people who open the server's address land on the console."""
    return Redirect("/console/", status_code=302)
