"""One dispatcher at a time, across the workers of ``rewards serve``, ``rewards dispatch``
processes and machines: a lease row in the database (the same SQL on SQLite and
PostgreSQL). Whoever holds an unexpired lease dispatches and renews it well before it
expires; a holder that stops renewing (killed, partitioned) loses it after ``ttl``."""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Callable
from typing import Any, cast

from sqlalchemy import CursorResult, case, insert, update
from sqlalchemy.exc import IntegrityError

from rewards.db.database import Database
from rewards.db.notify_tables import DispatchLease
from rewards.db.types import table_of


class Lease:
    def __init__(
        self,
        database: Database,
        name: str = "outbox",
        ttl: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.database = database
        self.name = name
        self.ttl = ttl
        self.clock = clock
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.expires_at = 0.0

    def held(self) -> bool:
        """Still ours for at least a third of the term (stop before it could lapse)."""
        return self.clock() < self.expires_at - self.ttl / 3

    def acquire(self) -> bool:
        """Take or renew the lease; True when this process holds it now."""
        now = self.clock()
        lease = table_of(DispatchLease).c
        take = (
            update(table_of(DispatchLease))
            .where(lease.name == self.name)
            .where((lease.holder == self.holder) | (lease.expires_at < now))
            .values(
                holder=self.holder,
                expires_at=now + self.ttl,
                fencing=case((lease.holder == self.holder, lease.fencing), else_=lease.fencing + 1),
            )
        )
        for _ in range(2):
            with self.database.transaction() as session:
                if cast("CursorResult[Any]", session.execute(take)).rowcount == 1:
                    self.expires_at = now + self.ttl
                    return True
                try:
                    with session.begin_nested():
                        session.execute(
                            insert(table_of(DispatchLease)).values(
                                name=self.name, holder=None, expires_at=0.0, fencing=0
                            )
                        )
                except IntegrityError:
                    return False  # the row exists: someone else holds it
        return False

    def release(self) -> None:
        lease = table_of(DispatchLease).c
        with self.database.transaction() as session:
            session.execute(
                update(table_of(DispatchLease))
                .where(lease.name == self.name, lease.holder == self.holder)
                .values(expires_at=0.0)
            )
        self.expires_at = 0.0
