"""``rewards dispatch``: the notification dispatcher on its own (for a deployment that
runs it apart from ``rewards serve``, which then sets ``REWARDS_DISPATCH=0``). Several may
run: one holds the lease and dispatches, the others wait to take over. Stops on SIGTERM
or Ctrl-C."""

from __future__ import annotations

import argparse
import asyncio
import signal
import threading
from typing import Any

from rewards.settings import Settings


def register(commands: Any) -> None:
    dispatch = commands.add_parser(
        "dispatch",
        help="deliver the outbox's notifications to webhooks and the broker",
        description=__doc__.split("\n\n", 1)[0] if __doc__ else None,
    )
    dispatch.set_defaults(run=_dispatch)


def _dispatch(_: argparse.Namespace) -> int:
    from rewards.db.database import Database
    from rewards.db.migrate import upgrade
    from rewards.notify.dispatcher import Dispatcher

    settings = Settings.from_env()
    database = Database(settings.database_url)
    if settings.auto_migrate:
        upgrade(database.write_engine)
    stop = threading.Event()
    for caught in (signal.SIGTERM, signal.SIGINT):
        signal.signal(caught, lambda *_: stop.set())
    print("rewards dispatching notifications (waits for the lease if another holds it)", flush=True)
    asyncio.run(Dispatcher(database, settings).run(stop))
    database.dispose()
    return 0
