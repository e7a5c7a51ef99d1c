"""The only module that talks to durable-rules (ENGINE-NOTES.md, followed to the letter).

- Our own ``Host`` subclass: ``_run`` is a no-op, so no timer threads dispatch behind our
  back; ``get_action`` resolves each rule name to a plain one-argument function that
  only records which rule fired on which fact; definitions are deep-copied before
  ``set_rulesets`` (it mutates them).
- Stateless evaluation on one session (``"0"``) with fixed fact ids: assert the event
  fact, collect what fired, retract it. "Not handled" means no offer applies (an empty
  result). ``delete_state`` is never called, no other session is ever created.
- Every engine call runs on ONE dedicated thread per process (a single-worker
  ``ThreadPoolExecutor`` created lazily, re-created in a forked child); ``call`` submits
  to it and waits, so any number of request threads may evaluate at once.
- One ``EngineHost`` per loaded ``Rulesets``. A ruleset name cannot be registered twice
  and durable-rules has no supported unregister, so a reload builds a new host and the
  caller swaps its reference; the old host's C rulesets stay allocated (about
  0.35-0.9 MB per reload, measured): keep reloads rare.

Fast path. ``durable.engine.Host.assert_fact`` serialises the fact with ``json`` on every
call (and again to build ``MessageNotHandledException``), and runs each fired action
through ``Closure``/``Promise`` plus a state write-back: about 50 us per fired rule.
``EngineHost.fire`` makes the same C calls the stock ``Ruleset`` makes, in the same order
(``assert_fact``, ``start_action_for_state``, ``complete_and_start_action`` until none
is left, ``retract_fact``) on a fact encoded once, and records the fired rule and fact id
from each action message instead of building a ``Closure``; nothing writes the session
state, which our actions never change. ``fire(..., stock=True)`` goes through the stock
``Host.assert_fact``/``retract_fact`` and the recording actions instead; the tests check
that both agree and ``bench/engine.py`` compares their speed.

Measured pitfalls: a rule fires once per ``$or`` alternative that matches (callers
de-duplicate); more than 64 rule paths matching one fact in one ruleset fail with error
303 (the compiler splits big classifications); ``assert_facts`` (several facts in one call) returns the outcome of
the LAST fact only. When that one matches nothing the result is "not handled" although
earlier facts fired rules, and the stock ``Host.assert_facts`` raises
``MessageNotHandledException`` without running their actions (retracting then drops
them). ``fire(many=True)`` therefore always collects pending actions.
"""

from __future__ import annotations

import copy
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import durable_rules_engine as _c
import msgspec
from durable import engine as _durable

from rewards.engine.compiler import SESSION

T = TypeVar("T")

# Result codes of the C entry points (durable.engine.Ruleset._handle_result).
_HANDLED = 0
_NOT_HANDLED = 1
_OBSERVED = 2


class EngineError(RuntimeError):
    """durable-rules refused a call; the message says which ruleset and why."""


# --- the engine thread -------------------------------------------------------------

_executor: ThreadPoolExecutor | None = None
_engine_thread: threading.Thread | None = None
_executor_lock = threading.Lock()
_fork_hook = False


def _reset_after_fork() -> None:
    global _executor, _engine_thread, _executor_lock
    _executor = None
    _engine_thread = None
    _executor_lock = threading.Lock()


def _mark_engine_thread() -> None:
    global _engine_thread
    _engine_thread = threading.current_thread()


def _get_executor() -> ThreadPoolExecutor:
    global _executor
    executor = _executor
    if executor is not None:
        return executor
    with _executor_lock:
        if _executor is None:
            global _fork_hook
            if not _fork_hook:  # a forked worker starts its own engine thread
                os.register_at_fork(after_in_child=_reset_after_fork)
                _fork_hook = True
            _executor = ThreadPoolExecutor(
                max_workers=1, thread_name_prefix="rewards-engine", initializer=_mark_engine_thread
            )
        return _executor


def call(function: Callable[..., T], *args: Any) -> T:
    """Run ``function(*args)`` on the engine thread and return its result (or raise)."""
    if threading.current_thread() is _engine_thread:
        return function(*args)
    return _get_executor().submit(function, *args).result()


# --- the host ------------------------------------------------------------------------


class _FactRef(msgspec.Struct):
    id: str


class _Fired(msgspec.Struct):
    m: _FactRef


_decode_action = msgspec.json.Decoder(dict[str, _Fired]).decode


class _Host(_durable.Host):
    """durable-rules host without timer threads whose actions only record hits."""

    def __init__(self) -> None:
        self.hits: list[tuple[str, str]] = []
        super().__init__()

    def _run(self) -> None:  # no dispatch/timer threads
        return None

    def get_action(self, action_name: str) -> Callable[[Any], None]:
        hits = self.hits

        def fired(c: Any) -> None:
            hits.append((action_name, c.m["id"]))

        return fired


Hit = tuple[str, str]  # (rule name, fact id)


class EngineHost:
    """One durable-rules host holding the compiled rulesets of one ``Rulesets``.

    All methods except ``__init__`` and ``call`` must run on the engine thread; use
    ``EngineHost.call(fn, ...)`` (or the module-level ``call``) to get there.
    """

    def __init__(self, definitions: dict[str, dict[str, Any]]) -> None:
        self.names = list(definitions)
        self._host: _Host = call(self._create, copy.deepcopy(definitions))
        self._handles: dict[str, int] = call(self._resolve)

    @staticmethod
    def _create(definitions: dict[str, dict[str, Any]]) -> _Host:
        host = _Host()
        if definitions:
            try:
                host.set_rulesets(definitions)
            except Exception as error:  # durable raises bare Exception / its own error type
                raise EngineError(f"durable-rules refused the rulesets: {error}") from error
        return host

    def _resolve(self) -> dict[str, int]:
        return {name: self._host.get_ruleset(name)._handle for name in self.names}

    call = staticmethod(call)

    def fire(
        self, ruleset: str, payload: str, retract: str, *, many: bool = False, stock: bool = False
    ) -> list[Hit]:
        """Assert the fact (or JSON array of facts), collect (rule, fact id) hits, retract.

        ``retract`` names the same facts by ``sid`` and ``id`` only: durable-rules looks a
        retracted fact up by id and unlinks the stored copy (cheaper than re-sending it).
        Runs on the engine thread. ``stock=True`` uses durable's own ``Host`` methods.
        """
        if stock:
            return self._fire_stock(ruleset, payload, many)
        handle = self._handles[ruleset]
        code, state = (_c.assert_facts if many else _c.assert_fact)(handle, payload)
        hits: list[Hit] = []
        try:
            if code == _OBSERVED:
                raise EngineError(f"{ruleset}: a fact with this id is already asserted")
            if code == _HANDLED or (many and code == _NOT_HANDLED):
                # assert_facts reports only the LAST fact's outcome: "not handled" there
                # can still leave actions of earlier facts pending (measured), so look.
                self._collect(handle, state, hits)
        finally:
            # Retracting cannot fire our rules (single-fact, positive conditions) and
            # leaves no action pending (tests check that the next evaluation sees none).
            (_c.retract_facts if many else _c.retract_fact)(handle, retract)
        return hits

    @staticmethod
    def _collect(handle: int, state: int, hits: list[Hit]) -> None:
        result = _c.start_action_for_state(handle, state)
        if not result:
            return
        message: str | None = result[1]
        try:
            while message:
                for rule, fired in _decode_action(message).items():
                    hits.append((rule, fired.m.id))
                message = _c.complete_and_start_action(handle, state)
        except BaseException:
            _c.abandon_action(handle, state)
            raise

    def _fire_stock(self, ruleset: str, payload: str, many: bool) -> list[Hit]:
        # One fact at a time: the stock Host.assert_facts raises MessageNotHandledException
        # when the last fact matches nothing and never runs the other facts' actions.
        facts = msgspec.json.decode(payload) if many else [msgspec.json.decode(payload)]
        host = self._host
        host.hits.clear()
        try:
            for fact in facts:
                try:
                    host.assert_fact(ruleset, fact)
                except _durable.MessageNotHandledException:
                    pass  # no offer applies
        finally:
            for fact in facts:
                host.retract_fact(ruleset, fact)
        hits = list(host.hits)
        host.hits.clear()
        return hits

    def close(self) -> None:
        """Free this host's C rulesets (about half of its memory).

        Only for hosts nothing can reach any more (tests building many small sets):
        the service's reloads do not call it, since a request may still hold the old
        ``Evaluator`` and a freed ruleset handle would crash the process.
        """
        call(self._close)

    def _close(self) -> None:
        handles, self._handles = self._handles, {}
        for handle in handles.values():
            _c.delete_ruleset(handle)

    def facts_left(self, ruleset: str) -> list[Any]:
        """Facts still asserted in our session (always empty between evaluations)."""
        return self._host.get_facts(ruleset, SESSION)
