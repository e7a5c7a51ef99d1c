"""Hot reload of the rulesets folder: all or nothing, swapped in one assignment.

``reload_rulesets(runtime)`` loads the folder the way the server loads it at start-up
(schema, cross-checks, compilation, every embedded example through the engine) beside
the serving set, then replaces ``runtime.evaluator`` by one reference assignment: a
request that took the evaluator before the swap finishes on the old version, every
later one sees the new version, no request ever sees a mix. A refused folder changes
nothing: the previous set keeps serving, its problems go to ``runtime.reload_errors``
(shown by ``GET /v1/rulesets``) and the log. Unchanged content (same version) is a
no-op. Reloads of one process are serialised. Both the folder watcher
(:mod:`rewards.runtime.watcher`) and ``POST /v1/rulesets/reload`` come here.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

import msgspec
from sqlalchemy import func, select
from sqlmodel import Session, col

from rewards.db.tables import Award
from rewards.engine import Evaluator, RulesetLoadError, Rulesets, load_rulesets
from rewards.engine.adapter import collect
from rewards.engine.loader import folder_version
from rewards.errors import DomainError, FieldError, refusal
from rewards.runtime.context import Runtime
from rewards.wire import RulesetVersionOut

log = logging.getLogger("rewards.rulesets")

RulesetsRefused = refusal(
    "rulesets_invalid", "The rulesets folder was refused; the previous rulesets keep serving"
)


class ReloadOut(msgspec.Struct, kw_only=True):
    """Answer of ``POST /v1/rulesets/reload``."""

    version: str  # serving now
    previous_version: str
    changed: bool  # False: the folder already holds the serving version
    loaded_at: datetime
    files: list[str]
    offers: int


@dataclass
class _State:
    lock: threading.Lock = field(default_factory=threading.Lock)
    loaded: dict[str, datetime] = field(default_factory=dict)  # version -> last loaded_at
    created_before: int = 0  # engine rulesets this process had built before its reloads
    recycling: bool = False  # the restart was asked for (or, unsupervised, advised)


_STATES: dict[int, _State] = {}
_STATES_LOCK = threading.Lock()


def _state(runtime: Runtime) -> _State:
    key = id(runtime)
    with _STATES_LOCK:
        state = _STATES.get(key)
        if state is None:
            state = _STATES[key] = _State(created_before=collect()["created"])
            rulesets = runtime.rulesets
            state.loaded[rulesets.version] = rulesets.loaded_at
            weakref.finalize(runtime, _STATES.pop, key, None)
        return state


def _refused(runtime: Runtime, trigger: str, errors: list[tuple[str, str]]) -> DomainError:
    """Record and log a refused folder; the error to raise (422 with every problem)."""
    lines = tuple(f"{where}: {message}" for where, message in errors)
    runtime.reload_errors = lines
    serving = runtime.rulesets.version
    log.error(
        "rulesets reload (%s) refused, version %s keeps serving; %d problem(s):\n  %s",
        trigger,
        serving,
        len(lines),
        "\n  ".join(lines),
    )
    return RulesetsRefused(
        f"{len(lines)} problem(s) in {runtime.settings.rulesets_dir}; version {serving} keeps "
        "serving:\n" + "\n".join(lines),
        errors=[FieldError(path=where, message=message) for where, message in errors],
    )


def reload_rulesets(
    runtime: Runtime,
    *,
    trigger: str = "api",
    record: Callable[[Rulesets], object] | None = None,
    refused: Callable[[DomainError], object] | None = None,
) -> ReloadOut:
    """Load the rulesets folder and swap it in, or raise ``RulesetsRefused`` (422).
    ``record`` is called with a newly swapped-in set (the ruleset history), ``refused``
    with the refusal (the outbox)."""
    try:
        return _reload(runtime, trigger, record)
    except RulesetsRefused as error:
        if refused is not None:
            refused(error)
        raise


def _reload(
    runtime: Runtime, trigger: str, record: Callable[[Rulesets], object] | None
) -> ReloadOut:
    state = _state(runtime)
    folder = runtime.settings.rulesets_dir
    with state.lock:
        previous = runtime.evaluator
        try:
            version = folder_version(folder)
        except OSError as error:
            raise _refused(
                runtime, trigger, [(str(folder), f"cannot read the folder: {error}")]
            ) from None
        if version == previous.rulesets.version:
            runtime.reload_errors = ()
            return _answer(previous, version, changed=False)
        try:
            loaded = load_rulesets(folder)
        except RulesetLoadError as error:
            problems = [(f"{p.file}:{p.line}:{p.column}", p.message) for p in error.errors]
            raise _refused(runtime, trigger, problems) from None
        except OSError as error:  # a file removed or unreadable while loading
            raise _refused(
                runtime, trigger, [(str(folder), f"cannot read the folder: {error}")]
            ) from None
        except Exception as error:  # a bug, not the analyst's: keep serving, say what happened
            log.exception("rulesets reload (%s): unexpected error", trigger)
            raise _refused(
                runtime, trigger, [(str(folder), f"unexpected error: {error!r}")]
            ) from None
        evaluator = Evaluator(loaded)
        previous_version = previous.rulesets.version
        runtime.evaluator = evaluator  # the swap: one reference assignment
        runtime.reload_errors = ()
        state.loaded.pop(loaded.version, None)  # most recent load last
        state.loaded[loaded.version] = loaded.loaded_at
        log.info(
            "rulesets reloaded (%s): version %s -> %s, %d files, %d offers",
            trigger,
            previous_version,
            loaded.version,
            len(loaded.files),
            len(loaded.offers),
        )
        if record is not None:
            record(loaded)
        del previous  # let the old set go before collecting
        # engine rulesets that no loaded set uses any more go idle (adapter)
        built = collect()["created"] - state.created_before
        _recycle_if_spent(runtime, state, built)
        return _answer(evaluator, previous_version, changed=True)


def _recycle_if_spent(runtime: Runtime, state: _State, built: int) -> None:
    """Past ``recycle_after_rulesets`` engine rulesets built by reloads, a worker of
    ``rewards serve`` stops gracefully (SIGTERM to itself: requests in flight finish,
    this one included) and uvicorn's supervisor starts a fresh one, which loads the
    folder as it is: durable-rules never gives back the memory of discarded rules, a new
    process is the only way to bound it. An app served otherwise (``uvicorn --factory
    rewards.app:create_app``, tests) may have nobody to restart it: it says so in the
    log, once."""
    budget = runtime.settings.recycle_after_rulesets
    if budget <= 0 or built < budget or state.recycling:
        return
    state.recycling = True
    if runtime.settings.supervised:
        log.warning(
            "this worker built %d engine rulesets by reloads (REWARDS_RECYCLE_AFTER_RULESETS=%d):"
            " it stops now and a fresh worker takes its place, to give their memory back",
            built,
            budget,
        )
        os.kill(os.getpid(), signal.SIGTERM)
    else:
        log.warning(
            "this server built %d engine rulesets by reloads (REWARDS_RECYCLE_AFTER_RULESETS=%d)"
            " whose memory the rules engine never gives back: restart it at a quiet moment "
            "(under `rewards serve`, workers restart by themselves)",
            built,
            budget,
        )


def _answer(evaluator: Evaluator, previous_version: str, *, changed: bool) -> ReloadOut:
    rulesets = evaluator.rulesets
    return ReloadOut(
        version=rulesets.version,
        previous_version=previous_version,
        changed=changed,
        loaded_at=rulesets.loaded_at,
        files=list(rulesets.files),
        offers=len(rulesets.offers),
    )


def versions_seen(session: Session, runtime: Runtime) -> list[RulesetVersionOut]:
    """Every version this process loaded and every version recorded on awards (for
    ``GET /v1/rulesets``): the one serving, the others this process loaded (latest first),
    then those only awards know (latest award first)."""
    state = _state(runtime)
    serving = runtime.rulesets.version
    rows = session.execute(
        select(
            col(Award.ruleset_version),
            func.count(),
            func.min(Award.created_at),
            func.max(Award.created_at),
        ).group_by(col(Award.ruleset_version))
    ).all()
    recorded = {row[0]: row for row in rows}
    unloaded = sorted(
        (v for v in recorded if v not in state.loaded), key=lambda v: recorded[v][3], reverse=True
    )
    versions = list(dict.fromkeys([serving, *reversed(state.loaded), *unloaded]))
    result = []
    for version in versions:
        row = recorded.get(version)
        result.append(
            RulesetVersionOut(
                version=version,
                serving=version == serving,
                loaded_at=state.loaded.get(version),
                awards=row[1] if row else 0,
                first_award_at=row[2] if row else None,
                last_award_at=row[3] if row else None,
            )
        )
    return result


__all__ = ["ReloadOut", "RulesetVersionOut", "RulesetsRefused", "reload_rulesets", "versions_seen"]
