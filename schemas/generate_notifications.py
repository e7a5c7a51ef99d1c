"""Writes schemas/notifications/<type>.json, the message body of each notification type
(the envelope and that type's ``data``), from the structs of ``rewards.wire``
(``rewards.notify.messages.notification_schema``). Run after changing a message struct:

    .venv/bin/python schemas/generate_notifications.py

tests/unit/test_notification_schemas.py fails while a file is out of date.
"""

from __future__ import annotations

import json
from pathlib import Path

from rewards.notify.messages import notification_schema
from rewards.wire import NOTIFICATION_TYPES

FOLDER = Path(__file__).resolve().parent / "notifications"


def render(notification_type: str) -> str:
    return json.dumps(notification_schema(notification_type), indent=2) + "\n"


def main() -> None:
    FOLDER.mkdir(exist_ok=True)
    for notification_type in NOTIFICATION_TYPES:
        (FOLDER / f"{notification_type}.json").write_text(render(notification_type))


if __name__ == "__main__":
    main()
