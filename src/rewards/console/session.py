"""Console sessions: who is logged in, until when, and the form token of the session.

The session lives in a cookie Litestar's session middleware encrypts and authenticates
(AES-GCM) with a secret every worker shares; it holds the role, a short hash of the API
key (never the key), the expiry and the CSRF token. A session whose key is no longer
configured, or whose expiry has passed, is no session.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Mapping
from typing import Any

import msgspec

from rewards.runtime.ratelimit import caller_id
from rewards.settings import Settings

CONSOLE_ROLES = ("admin", "analyst")  # integrator and processor keys cannot log in
COOKIE = "rewards_console"


class ConsoleUser(msgspec.Struct, frozen=True, kw_only=True):
    role: str
    key_id: str  # caller_id of the key: shown as "admin key 3f9a..." and checked per request
    expires_at: int  # epoch seconds

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


def session_secret(settings: Settings) -> bytes:
    """32 bytes for AES-GCM: ``REWARDS_CONSOLE_SECRET`` when set, else derived from the
    configured API keys, which every worker of a deployment shares (changing the keys
    logs everyone out, as it should)."""
    if settings.console_secret:
        material = settings.console_secret.encode()
    else:
        material = "\0".join(
            sorted(f"{role}:{key}" for key, role in settings.api_keys.items())
        ).encode()
    return hashlib.sha256(b"rewards console session\0" + material).digest()


def role_of_key(keys: Mapping[str, str], key: str) -> str | None:
    """The role of ``key`` (constant-time compare against every configured key)."""
    found = None
    for known, role in keys.items():
        if hmac.compare_digest(known.encode(), key.strip().encode()):
            found = role
    return found


def start(session: dict[str, Any], role: str, key: str, lifetime_seconds: int) -> None:
    """Log in: a fresh session (a new CSRF token too, so a token seen before login is
    worth nothing after it)."""
    session.clear()
    session.update(
        role=role,
        key_id=caller_id(key),
        expires_at=int(time.time()) + lifetime_seconds,
        csrf=secrets.token_urlsafe(32),
    )


def current_user(session: Mapping[str, Any], keys: Mapping[str, str]) -> ConsoleUser | None:
    """The logged-in user of ``session``, if its expiry has not passed and its key is
    still configured with the same role."""
    try:
        user = msgspec.convert(
            {k: session.get(k) for k in ("role", "key_id", "expires_at")}, ConsoleUser
        )
    except msgspec.ValidationError:
        return None
    if user.expires_at <= time.time() or user.role not in CONSOLE_ROLES:
        return None
    if not any(caller_id(key) == user.key_id and role == user.role for key, role in keys.items()):
        return None
    return user


def csrf_token(session: dict[str, Any]) -> str:
    """The session's form token, made on first use (the login form has one too)."""
    token = session.get("csrf")
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        session["csrf"] = token
    return token


def csrf_ok(session: Mapping[str, Any], sent: str | None) -> bool:
    token = session.get("csrf")
    return isinstance(token, str) and sent is not None and hmac.compare_digest(token, sent)
