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
- One ``EngineHost`` per loaded ``Rulesets``; a reload builds a new one and the caller
  swaps its reference. Engine rulesets are shared between hosts whose compiled
  definitions are equal, so a reload only creates the rulesets of the classifications
  whose conditions changed shape (values travel in the facts: ``compiler.Params``); durable-rules never frees part of a discarded ruleset (its
  session state and ``$mt`` patterns: about 80 KB + 60-100 KB per glob, measured by
  ``bench/reload_memory.py``), so each changed classification costs that once.

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
them). ``fire(many=True)`` therefore always collects pending actions. ``fire_event`` is ``fire``
of one fact for the hot path: when nothing fired (most rulesets, most events) it is the
two C calls and nothing else.
"""

from __future__ import annotations

import copy
import json
import os
import threading
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import msgspec
from durable import engine as _durable

from rewards.engine.compiler import SESSION

if TYPE_CHECKING:

    class _Engine(Protocol):
        """The calls this module makes into durable-rules' C extension (which ships no
        type information): handles and states are ints, facts and messages JSON text."""

        def assert_fact(self, handle: int, fact: str, /) -> tuple[int, int]: ...
        def assert_facts(self, handle: int, facts: str, /) -> tuple[int, int]: ...
        def retract_fact(self, handle: int, fact: str, /) -> tuple[int, int]: ...
        def retract_facts(self, handle: int, facts: str, /) -> tuple[int, int]: ...
        def start_action_for_state(self, handle: int, state: int, /) -> tuple[str, str] | None: ...
        def complete_and_start_action(self, handle: int, state: int, /) -> str | None: ...
        def abandon_action(self, handle: int, state: int, /) -> None: ...
        def delete_ruleset(self, handle: int, /) -> None: ...

    _c: _Engine
else:
    import durable_rules_engine as _c

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

Hit = tuple[str, str]  # (rule name, fact id)
_NO_HITS: list[Hit] = []  # returned, never changed

#: Hits recorded by the stock path's actions, shared by every ``_Host``: the stock path
#: runs on the engine thread only, one call at a time, and clears it before each use.
_STOCK_HITS: list[Hit] = []


class _Host(_durable.Host):  # type: ignore[misc]  # durable-rules has no stubs: Host is Any
    """durable-rules host without timer threads whose actions only record hits."""

    def __init__(self) -> None:
        self.hits = _STOCK_HITS
        super().__init__()

    def _run(self) -> None:  # no dispatch/timer threads
        return None

    def get_action(self, action_name: str) -> Callable[[Any], None]:
        hits = self.hits

        def fired(c: Any) -> None:
            hits.append((action_name, c.m["id"]))

        return fired


# --- engine rulesets shared by definition --------------------------------------------
#
# Every durable-rules ruleset lives in its own ``_Host`` and is shared by all the
# ``EngineHost``s whose compiled definition of that name is the same JSON (a reload that
# leaves a classification file alone re-uses its engine rulesets; a set loaded twice
# re-uses all of them). Sharing is safe: every engine call runs on the engine thread and
# leaves nothing asserted. ``_Shared.users`` counts the live EngineHosts using a ruleset;
# when an EngineHost is garbage collected its finalizer only queues its keys
# (``_RELEASED``, appended from any thread); the engine thread applies the queue on its
# next acquire/release. Unused rulesets wait in ``_IDLE`` (most recent last) for a set
# that wants them again (an edit undone); past ``IDLE_LIMIT`` the oldest is deleted.
# ``delete_ruleset`` frees its node pools; its session state and compiled ``$mt``
# patterns are never freed by durable-rules (measured, bench/reload_memory.py), and
# ``delete_state`` corrupts the heap in some sequences (measured: "free(): invalid
# pointer"), so it is never called.

Key = tuple[str, str]  # (ruleset name, definition JSON)
IDLE_LIMIT = 64


class _Shared:
    __slots__ = ("handle", "host", "key", "users")

    def __init__(self, key: Key, host: _Host, handle: int) -> None:
        self.key = key
        self.host = host
        self.handle = handle
        self.users = 0


_LIVE: dict[Key, _Shared] = {}
_IDLE: dict[Key, _Shared] = {}
_RELEASED: list[list[Key]] = []
_COUNTS = {"created": 0, "reused": 0, "deleted": 0}


def _key(name: str, definition: dict[str, Any]) -> Key:
    return name, json.dumps(definition, sort_keys=True, separators=(",", ":"))


def _apply_released() -> None:
    while _RELEASED:
        _release(_RELEASED.pop(), free=False)


def _ends_in_or(test: Any) -> bool:
    """Whether the node an item test ends in is an ``$or`` node (see ``_unsafe_item_test``)."""
    if not isinstance(test, dict):
        return False
    if "$or" in test:
        return True
    conditions = test.get("$and")
    if not conditions:
        return False
    return _ends_in_or(conditions[-1])


def _unsafe_item_test(condition: Any) -> bool:
    """Whether an ``$iany``/``$iall`` item test ends in an ``$or`` anywhere in ``condition``.

    durable-rules then reads the never-set operand type of that ``$or`` node, and
    ``create_ruleset`` fails with error 102 or not depending on leftover heap bytes
    (rete.c ``createAlpha``): such a ruleset works in one process and not in the next.
    The compiler never emits one (``compiler._item_test``); this refuses it for certain.
    """
    if isinstance(condition, list):
        return any(_unsafe_item_test(item) for item in condition)
    if not isinstance(condition, dict):
        return False
    for key, value in condition.items():
        if key in ("$iany", "$iall") and isinstance(value, dict):
            if any(_ends_in_or(test) for test in value.values()):
                return True
        if _unsafe_item_test(value):
            return True
    return False


def _acquire(name: str, definition: dict[str, Any]) -> _Shared:
    key = _key(name, definition)
    shared = _LIVE.get(key)
    if shared is None:
        shared = _IDLE.pop(key, None)
        if shared is None:
            if _unsafe_item_test(definition):
                raise EngineError(f"{name}: an $iany/$iall item test ends in an $or")
            host = _Host()
            try:
                host.set_rulesets({name: copy.deepcopy(definition)})  # it mutates its argument
            except Exception as error:  # durable raises bare Exception / its own error type
                raise EngineError(f"durable-rules refused the rulesets: {error}") from error
            shared = _Shared(key, host, host.get_ruleset(name)._handle)
            _COUNTS["created"] += 1
        else:
            _COUNTS["reused"] += 1
        _LIVE[key] = shared
    else:
        _COUNTS["reused"] += 1
    shared.users += 1
    return shared


def _delete(shared: _Shared) -> None:
    _c.delete_ruleset(shared.handle)
    _COUNTS["deleted"] += 1


def _release(keys: list[Key], *, free: bool) -> None:
    for key in keys:
        shared = _LIVE.get(key)
        if shared is None:  # pragma: no cover - released twice
            continue
        shared.users -= 1
        if shared.users > 0:
            continue
        del _LIVE[key]
        if free:
            _delete(shared)
            continue
        _IDLE[key] = shared
        while len(_IDLE) > IDLE_LIMIT:
            _delete(_IDLE.pop(next(iter(_IDLE))))


def collect() -> dict[str, int]:
    """Apply pending releases (engine thread) and return counters: live and idle engine
    rulesets, and how many were created, re-used and deleted since the process started."""

    def run() -> dict[str, int]:
        _apply_released()
        return {"live": len(_LIVE), "idle": len(_IDLE), **_COUNTS}

    return call(run)


class _Hosts:
    """The stock durable-rules API over the per-ruleset hosts of one EngineHost (tests and
    bench/engine.py use it for the stock path)."""

    def __init__(self, entries: dict[str, _Shared]) -> None:
        self._entries = entries
        self.hits = _STOCK_HITS

    def assert_fact(self, ruleset: str, fact: Any) -> Any:
        return self._entries[ruleset].host.assert_fact(ruleset, fact)

    def retract_fact(self, ruleset: str, fact: Any) -> Any:
        return self._entries[ruleset].host.retract_fact(ruleset, fact)

    def get_state(self, ruleset: str, sid: str) -> Any:
        return self._entries[ruleset].host.get_state(ruleset, sid)

    def get_facts(self, ruleset: str, sid: str) -> Any:
        return self._entries[ruleset].host.get_facts(ruleset, sid)


class EngineHost:
    """The durable-rules rulesets of one ``Rulesets`` (shared with other sets where the
    definitions are equal, see above).

    All methods except ``__init__``, ``close`` and ``call`` must run on the engine thread;
    use ``EngineHost.call(fn, ...)`` (or the module-level ``call``) to get there.
    """

    def __init__(self, definitions: dict[str, dict[str, Any]]) -> None:
        self.names = list(definitions)
        self._entries: dict[str, _Shared] = call(self._create, definitions)
        self._handles: dict[str, int] = {n: e.handle for n, e in self._entries.items()}
        self._finalizer = weakref.finalize(
            self, _RELEASED.append, [e.key for e in self._entries.values()]
        )

    @staticmethod
    def _create(definitions: dict[str, dict[str, Any]]) -> dict[str, _Shared]:
        _apply_released()
        entries: dict[str, _Shared] = {}
        try:
            for name, definition in definitions.items():
                entries[name] = _acquire(name, definition)
        except BaseException:
            _release([e.key for e in entries.values()], free=False)
            raise
        return entries

    @property
    def _host(self) -> _Hosts:
        return _Hosts(self._entries)

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

    def fire_event(self, ruleset: str, payload: str, retract: str) -> list[Hit]:
        """``fire`` of one fact, for the hot path (``Evaluator``): most events match
        nothing in most rulesets, and then this is the two C calls and no more."""
        handle = self._handles[ruleset]
        code, state = _c.assert_fact(handle, payload)
        if code == _NOT_HANDLED:
            _c.retract_fact(handle, retract)
            return _NO_HITS
        hits: list[Hit] = []
        try:
            if code == _OBSERVED:
                raise EngineError(f"{ruleset}: a fact with this id is already asserted")
            if code == _HANDLED:
                self._collect(handle, state, hits)
        finally:
            _c.retract_fact(handle, retract)
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
        host = self._entries[ruleset].host
        _STOCK_HITS.clear()
        try:
            for fact in facts:
                try:
                    host.assert_fact(ruleset, fact)
                except _durable.MessageNotHandledException:
                    pass  # no offer applies
        finally:
            for fact in facts:
                host.retract_fact(ruleset, fact)
        hits = list(_STOCK_HITS)
        _STOCK_HITS.clear()
        return hits

    def close(self) -> None:
        """Release this host's engine rulesets now, deleting those no other host uses.

        Only for hosts nothing can reach any more (tests building many small sets): a
        freed ruleset handle used again would crash the process. The service never calls
        it; a discarded host is released when it is garbage collected (see above).
        """
        call(self._close)

    def _close(self) -> None:
        if not self._finalizer.detach():
            return  # already closed
        entries, self._entries, self._handles = self._entries, {}, {}
        _apply_released()
        _release([e.key for e in entries.values()], free=True)

    def facts_left(self, ruleset: str) -> list[Any]:
        """Facts still asserted in our session (always empty between evaluations)."""
        facts: list[Any] = self._entries[ruleset].host.get_facts(ruleset, SESSION)
        return facts
