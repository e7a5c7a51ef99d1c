"""What every console page shares: the logged-in user, the page's template context,
form reading, flash messages and where a form may send people back to."""

from __future__ import annotations

from typing import Any

from litestar import Request
from litestar.di import NamedDependency
from litestar.params import SkipValidation
from litestar.response import Template
from sqlmodel import Session

from rewards.console.session import ConsoleUser, csrf_token
from rewards.runtime.context import Runtime

# Injected by name (the app's dependencies and the console router's): ours, not user input.
SessionDep = NamedDependency[SkipValidation[Session]]
RuntimeDep = NamedDependency[SkipValidation[Runtime]]
UserDep = NamedDependency[SkipValidation[ConsoleUser]]
ConsoleRequest = Request[Any, Any, Any]


def page(
    request: ConsoleRequest, template: str, *, status_code: int = 200, **context: Any
) -> Template:
    """Render ``template`` with what the layout needs: the user, the form token, the
    flash messages of the last redirect, the current path (for the navigation)."""
    user = request.scope.get("state", {}).get("console_user")
    return Template(
        template_name=template,
        context={
            "user": user,
            "csrf": csrf_token(request.session),
            "flashes": request.session.pop("flash", []),
            "path": request.url.path,
            **context,
        },
        status_code=status_code,
    )


def flash(request: ConsoleRequest, message: str, kind: str = "ok") -> None:
    """A message shown once, on the next page rendered (after a redirect)."""
    request.session.setdefault("flash", []).append({"kind": kind, "message": message})


async def read_form(request: ConsoleRequest) -> dict[str, str]:
    """The posted form as a plain dict (the last value of a repeated name; multi-valued
    fields use ``read_form_lists``)."""
    form = await request.form()
    return {key: value for key, value in form.items() if isinstance(value, str)}


async def read_form_lists(request: ConsoleRequest) -> dict[str, list[str]]:
    form = await request.form()
    return {key: [v for v in form.getall(key) if isinstance(v, str)] for key in form}


def safe_next(target: str | None, default: str = "/console/") -> str:
    """Where to go after login: a console path of this site, never another site."""
    if target and target.startswith("/console/") and not target.startswith("//"):
        return target
    return default
