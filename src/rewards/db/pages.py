"""Opaque cursors for keyset pagination (newest first, by a monotonically growing key)."""

from __future__ import annotations

import base64

from rewards.errors import refusal

InvalidCursor = refusal("invalid_cursor", "Cursor is not one this service issued", 400)


def encode_cursor(key: int) -> str:
    return base64.urlsafe_b64encode(f"k{key}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> int | None:
    if not cursor:  # absent or empty: the first page
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        if not raw.startswith("k"):
            raise ValueError(raw)
        return int(raw[1:])
    except (ValueError, UnicodeDecodeError):
        raise InvalidCursor("The cursor is malformed.") from None
