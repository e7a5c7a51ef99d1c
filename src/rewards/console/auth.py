"""Login (an API key of role admin or analyst) and logout."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import get, post
from litestar.params import QueryParameter
from litestar.response import Redirect, Template

from rewards.console.pages import ConsoleRequest, page, read_form, safe_next
from rewards.console.session import CONSOLE_ROLES, current_user, role_of_key, start
from rewards.settings import Settings


def handlers(settings: Settings) -> list[Any]:
    keys = dict(settings.api_keys)
    lifetime = settings.console_session_seconds

    @get("/login", opt={"public": True}, name="console_login")
    async def login_form(
        request: ConsoleRequest,
        next_path: Annotated[str | None, QueryParameter(name="next")] = None,
    ) -> Template | Redirect:
        if current_user(request.session, keys) is not None:
            return Redirect(safe_next(next_path), status_code=303)
        return page(request, "login.html", next_path=safe_next(next_path), error=None)

    @post("/login", opt={"public": True}, status_code=303)
    async def login(request: ConsoleRequest) -> Template | Redirect:
        form = await read_form(request)
        key = form.get("api_key", "").strip()
        next_path = safe_next(form.get("next"))
        role = role_of_key(keys, key) if key else None
        if role is None:
            error = "Enter an API key." if not key else "Unknown API key."
        elif role not in CONSOLE_ROLES:
            error = (
                f"A key of role {role} cannot use the console; log in with an admin or analyst key."
            )
        else:
            start(request.session, role, key, lifetime)
            return Redirect(next_path, status_code=303)
        # The key is never rendered back, not even into the field it was typed in.
        return page(request, "login.html", status_code=401, next_path=next_path, error=error)

    @post("/logout", status_code=303)
    async def logout(request: ConsoleRequest) -> Redirect:
        request.clear_session()
        return Redirect("/console/login", status_code=303)

    return [login_form, login, logout]
