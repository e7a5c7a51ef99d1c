"""Webhook signatures as Standard Webhooks define them (and Svix, and Stripe in spirit):
``webhook-id``, ``webhook-timestamp`` (Unix seconds) and ``webhook-signature``:
``v1,<base64 HMAC-SHA256 of "<id>.<timestamp>.<body>">``, the key being the base64 part
of the subscription's ``whsec_...`` secret. The timestamp is the attempt's, so a
receiver can refuse old replays; the id stays the same on every attempt."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Mapping

PREFIX = "whsec_"
TOLERANCE_SECONDS = 300


def new_secret() -> str:
    """A fresh secret: ``whsec_`` and 32 random bytes, base64."""
    return PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def _key(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix(PREFIX))


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(_key(secret), f"{message_id}.{timestamp}.".encode() + body, hashlib.sha256)
    return "v1," + base64.b64encode(mac.digest()).decode()


def headers(secret: str, message_id: str, body: bytes, now: float | None = None) -> dict[str, str]:
    """The three headers of one attempt."""
    timestamp = int(time.time() if now is None else now)
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, message_id, timestamp, body),
    }


def verify(secret: str, received: Mapping[str, str], body: bytes, now: float | None = None) -> bool:
    """What a receiver does: the signature matches one of the header's (space-separated)
    ``v1,`` signatures, and the timestamp is within five minutes of now."""
    found = {name.lower(): value for name, value in received.items()}
    message_id = found.get("webhook-id")
    stamp = found.get("webhook-timestamp", "")
    if not message_id or not stamp.isdigit():
        return False
    if abs((time.time() if now is None else now) - int(stamp)) > TOLERANCE_SECONDS:
        return False
    expected = sign(secret, message_id, int(stamp), body)
    return any(
        hmac.compare_digest(candidate, expected)
        for candidate in found.get("webhook-signature", "").split(" ")
    )
