"""Hot reload of the rulesets folder: a daemon thread per process polls its content hash.

Every ``POLL_SECONDS`` the thread hashes the folder's ``*.yaml`` files
(``engine.loader.folder_version``: the version the folder would load as, a few small
file reads). When the hash differs from the last one seen and stays the same for
``SETTLE_SECONDS`` (an editor that writes a file in several steps, or an analyst copying
several files, is not caught half-way), it calls ``reload.reload_rulesets``: a valid
folder is compiled on this thread, beside the serving set, and swapped in atomically;
a refused one is logged and shown by ``GET /v1/rulesets`` while the previous set keeps
serving. A refused version is not retried until the content changes again.

Several workers (``rewards serve --workers N``): each process runs its own watcher on the
shared folder, so each picks up a change within about ``POLL_SECONDS + SETTLE_SECONDS``.
Polling a local folder is cheap and needs no coordination (a ``POST /v1/rulesets/reload``
reaches one worker; the others follow through their watchers). Each load is stored in
the ruleset history (:mod:`rewards.runtime.history`, source ``watcher``); awards record
the version that produced them.
No dependency beyond the standard library (no inotify): the folder may be a mounted
volume where change notifications do not arrive.
"""

from __future__ import annotations

import logging
import threading

from rewards.db.database import Database
from rewards.engine import Rulesets
from rewards.engine.loader import folder_version
from rewards.errors import DomainError
from rewards.runtime import history
from rewards.runtime.context import Runtime
from rewards.runtime.reload import reload_rulesets

log = logging.getLogger("rewards.rulesets")

POLL_SECONDS = 1.0
SETTLE_SECONDS = 0.25


class FolderWatcher:
    """Polls one runtime's rulesets folder on a daemon thread until ``stop``."""

    def __init__(
        self,
        runtime: Runtime,
        *,
        poll_seconds: float | None = None,
        settle_seconds: float | None = None,
        database: Database | None = None,
    ) -> None:
        self.runtime = runtime
        self.database = database  # where loads are stored (the ruleset history)
        self.poll_seconds = POLL_SECONDS if poll_seconds is None else poll_seconds
        self.settle_seconds = SETTLE_SECONDS if settle_seconds is None else settle_seconds
        self.last_seen = runtime.rulesets.version
        self._stopping = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name="rewards-rulesets-watcher", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _hash(self) -> str | None:
        try:
            return folder_version(self.runtime.settings.rulesets_dir)
        except OSError:
            return None  # missing or unreadable for now: try again next time

    def check(self) -> bool:
        """One poll: reload when the content changed and settled. True when it reloaded."""
        version = self._hash()
        if version is None or version == self.last_seen:
            return False
        if self._stopping.wait(self.settle_seconds) or self._hash() != version:
            return False  # still changing (or stopping): look again at the next poll
        self.last_seen = version
        try:  # the serving version again (reloaded through the API, or an edit undone):
            # a no-op that clears the errors of a refused version
            return reload_rulesets(
                self.runtime, trigger="watcher", record=self._record, refused=self._refused
            ).changed
        except DomainError:
            return False  # refused: logged and kept in runtime.reload_errors

    def _refused(self, error: DomainError) -> None:
        if self.database is not None:
            history.record_refusal(self.database, self.runtime, error, trigger="watcher")

    def _record(self, rulesets: Rulesets) -> None:
        if self.database is not None:
            history.record_load(
                self.database, self.runtime, rulesets, source="watcher", loaded_by="watcher"
            )

    def _run(self) -> None:
        while not self._stopping.wait(self.poll_seconds):
            try:
                self.check()
            except Exception:  # never let the thread die: log and keep watching
                log.exception("rulesets watcher: unexpected error")


_WATCHERS: dict[int, FolderWatcher] = {}


def start(runtime: Runtime, database: Database) -> None:
    """Start watching the rulesets folder (application start-up)."""
    watcher = FolderWatcher(runtime, database=database)
    _WATCHERS[id(runtime)] = watcher
    watcher.start()
    log.info(
        "watching %s for ruleset changes every %.1f s",
        runtime.settings.rulesets_dir,
        watcher.poll_seconds,
    )


def stop(runtime: Runtime, database: Database) -> None:
    """Stop watching (application shutdown)."""
    del database
    watcher = _WATCHERS.pop(id(runtime), None)
    if watcher is not None:
        watcher.stop()
