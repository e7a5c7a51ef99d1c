"""Group commit: the events a process receives at the same time, written together.

Per process, a planner thread takes every event request queued at that moment (up to
``MAX_BATCH``; while it plans a batch, the next one gathers) and a writer thread writes
what the planner decided, so one batch is planned while the one before it is written
(SQLite's statements and the writer lock wait release the GIL):

1. the planner plans the batch's purchases outside any lock
   (``purchase_plans.plan_purchases``: reads only) and has the engine decide them in one
   trip to its thread (``evaluate_many``);
2. the writer writes the batches planned so far in one short write transaction (on SQLite behind the writer gate,
   so the processes sharing the file take the lock in turn; on PostgreSQL the batches of
   different processes proceed in parallel), each request inside a savepoint of its
   own: a request that fails (a refused spend, a conflict) is rolled back alone and
   answered with its error; its batch-mates are recorded. A request that meets a
   database error (a PostgreSQL deadlock between two processes' batches) is run again
   alone, in a transaction of its own, after its batch;
3. answers each request once the batch is committed.

Events of other types, and purchases the fast path does not take, are recorded by
``events.record_event`` inside the same batch transaction (a session on its savepoint).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import queue
import threading
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, cast

from sqlalchemy import Connection
from sqlmodel import Session

from rewards.db.database import Database, deadlocked
from rewards.db.driver import driver_cursor, pipelined
from rewards.engine import Evaluator
from rewards.errors import DomainError
from rewards.intake.answers import render_event
from rewards.intake.events import Recorded, record_event
from rewards.intake.purchase_plans import (
    PurchaseBatchWriter,
    PurchasePlan,
    WrittenPurchase,
    add_fact,
    plan_purchases,
    write_purchase,
)
from rewards.money import budgets
from rewards.offers.evaluation import decide_facts
from rewards.runtime.context import Runtime
from rewards.runtime.metrics import metrics
from rewards.wire import EventIn, PurchaseIn

log = logging.getLogger("rewards.intake")

MAX_BATCH = 64
_STOP = object()


@dataclass(eq=False)
class _Request:
    event_type: str
    body: EventIn
    context: contextvars.Context  # the caller's: its API key and OTP reservation (ratelimit)
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Recorded | WrittenPurchase]
    plan: PurchasePlan | None = None
    evaluator: Evaluator | None = None  # the ruleset version it was planned (decided) with
    outcome: Recorded | WrittenPurchase | BaseException | None = field(default=None)
    refused_in_transaction: bool = False  # refused by a write that may not commit


def _settle_all(answers: list[tuple[asyncio.Future[Any], Any]]) -> None:
    for future, outcome in answers:
        if future.done():  # the caller went away (cancelled): what was written stays
            continue
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)


RETRIES_ALONE = 3  # a request written alone that a deadlock aborted is tried again


class GroupCommit:
    """The intake writer of one process. ``record`` is awaited by the event handlers."""

    def __init__(self, database: Database, runtime: Runtime, max_batch: int = MAX_BATCH) -> None:
        self.database = database
        self.runtime = runtime
        self.max_batch = max_batch
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()  # requests
        self._planned: queue.SimpleQueue[Any] = queue.SimpleQueue()  # lists of requests
        self._threads: list[threading.Thread] = []
        self._starting = threading.Lock()
        # What the threads did, for tests that need proof of overlap: requests planned,
        # transactions written and the most requests one of them held.
        self.planned_count = 0
        self.batches = 0
        self.largest_batch = 0
        # SKUs this process saw committed to the catalogue: never deleted, so the fast
        # path inserts only the others (the table is the catalogue, read by nobody here).
        self._catalogue: set[str] = set()
        self._together: tuple[Any, PurchaseBatchWriter] | None = None  # (dialect, writer)
        self._read_connection: Connection | None = None  # the planner's
        self._write_connection: Connection | None = None  # the writer's
        self._stopped = False

    # ---- lifecycle --------------------------------------------------------------------

    def start(self) -> None:
        with self._starting:
            if not self._threads or not all(t.is_alive() for t in self._threads):
                self._threads = [
                    threading.Thread(
                        target=self._plan_loop, name="rewards-intake-plan", daemon=True
                    ),
                    threading.Thread(
                        target=self._write_loop, name="rewards-intake-write", daemon=True
                    ),
                ]
                for thread in self._threads:
                    thread.start()

    def stop(self) -> None:
        """Write what is queued, then stop the planner and writer threads."""
        with self._starting:
            threads, self._threads = self._threads, []
        self._stopped = True
        if threads:
            self._queue.put(_STOP)  # each thread closes its connection when it sees it
            for thread in threads:
                thread.join(timeout=60)

    # ---- the request side -------------------------------------------------------------

    async def record(self, event_type: str, body: EventIn) -> Recorded:
        """Record one event (201) or replay its original (200), as ``record_event`` does."""
        if self._stopped:  # the app is shutting down: nothing is written (a 500)
            raise RuntimeError("the intake writer has stopped")
        if not self._threads:
            self.start()
        loop = asyncio.get_running_loop()
        request = _Request(event_type, body, contextvars.copy_context(), loop, loop.create_future())
        self._queue.put(request)
        outcome = await request.future
        if isinstance(outcome, WrittenPurchase):
            rendered = render_event(
                None,
                outcome.event,
                outcome.now,
                made=(outcome.awards, outcome.spends),
                wallet=outcome.wallet,
            )
            return Recorded(event=rendered, created=True)
        return outcome

    # ---- the planner thread: requests in, decided batches out ------------------------

    @staticmethod
    def _take(
        source: queue.SimpleQueue[Any], limit: int, size: Callable[[Any], int]
    ) -> tuple[list[Any], bool]:
        """What ``source`` holds now (waiting for the first), items of ``size`` up to
        ``limit`` in all; and whether STOP came."""
        first = source.get()
        if first is _STOP:
            return [], True
        items, total = [first], size(first)
        while total < limit:
            try:
                item = source.get_nowait()
            except queue.Empty:
                break
            if item is _STOP:
                return items, True
            items.append(item)
            total += size(item)
        return items, False

    def _plan_loop(self) -> None:
        while True:
            requests, stop = self._take(self._queue, self.max_batch, lambda _: 1)
            if requests:
                evaluator = self.runtime.evaluator  # one ruleset version for the batch
                for request in requests:
                    request.evaluator = evaluator
                try:
                    self._plan(requests, evaluator)
                except Exception:  # e.g. a dropped connection: the full path, one by one
                    log.exception("planning an intake batch failed; recording it in full")
                    self._drop_reader()
                    for request in requests:
                        if not isinstance(request.outcome, DomainError):
                            request.plan, request.outcome = None, None
                self._planned.put(requests)
                self.planned_count += len(requests)
            if stop:
                self._drop_reader()
                self._planned.put(_STOP)
                return

    def _plan(self, requests: list[_Request], evaluator: Evaluator) -> None:
        runtime = self.runtime
        purchases = [r for r in requests if r.event_type == "purchase"]
        if purchases:
            reader = self._reader()
            try:
                bodies = [cast("PurchaseIn", r.body) for r in purchases]
                found = plan_purchases(reader, runtime, bodies, self._catalogue)
                for request, plan in zip(purchases, found, strict=True):
                    if isinstance(plan, DomainError):
                        request.outcome = plan
                    elif plan is not None:
                        add_fact(reader, runtime, evaluator, plan)
                        request.plan = plan
            finally:
                self._end_reads(reader)
        planned = [r.plan for r in requests if r.plan is not None and r.plan.fact is not None]
        if planned:
            started = time.perf_counter()
            decisions = decide_facts(evaluator, [plan.fact for plan in planned if plan.fact])
            each = (time.perf_counter() - started) / len(planned)
            for plan, decided in zip(planned, decisions, strict=True):
                plan.decisions = decided
                metrics().engine_seconds.observe(each)

    # ---- the writer thread: decided batches in, one transaction, answers out ---------

    def _write_loop(self) -> None:
        while True:
            # The batches planned meanwhile, up to max_batch requests: one transaction.
            batches, stop = self._take(self._planned, self.max_batch, len)
            requests = [request for batch in batches for request in batch]
            if requests:
                try:
                    self._write_batch(requests)
                except BaseException as error:  # never leave a caller waiting
                    log.exception("writing an intake batch failed")
                    for request in requests:
                        request.outcome = request.outcome or error
                self._answer(requests)
            if stop:
                self._drop_writer()
                return

    def _write_batch(self, requests: list[_Request]) -> None:
        todo = [r for r in requests if r.outcome is None]
        if self.database.is_sqlite:
            order = todo
        else:  # one lock order for every batch: two processes' batches do not deadlock
            order = sorted(todo, key=lambda r: r.plan.contact.id if r.plan else "")
        for request in self._write(order, alone=False):
            for _ in range(RETRIES_ALONE):
                self._write([request], alone=True)
                if not deadlocked(request.outcome):
                    break
                request.outcome = None  # PostgreSQL chose it as a deadlock's victim: again
        self.batches += 1
        self.largest_batch = max(self.largest_batch, len(requests))

    @staticmethod
    def _answer(requests: list[_Request]) -> None:
        """Each request's outcome to its event loop: one wake-up per loop, not per request."""
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], Any]]] = {}
        for request in requests:
            outcome = request.outcome or RuntimeError("the intake writer gave no answer")
            by_loop.setdefault(request.loop, []).append((request.future, outcome))
        for loop, answers in by_loop.items():
            try:
                loop.call_soon_threadsafe(_settle_all, answers)
            except RuntimeError:  # its event loop is closed: nobody waits any more
                pass

    def _write(self, requests: list[_Request], *, alone: bool) -> list[_Request]:
        """Write ``requests`` in one transaction, a savepoint each; the requests to run
        again alone (a database error; empty when ``alone``)."""
        if not requests:
            return []
        again: list[_Request] = []
        written: list[_Request] = []
        try:
            connection = self._writer()
            transaction = connection.begin()
            try:
                # Budgets before contacts, in one order (money.budgets.lock).
                budgets.lock(connection, [d for r in requests if r.plan for d in r.plan.decisions])
                cursor = driver_cursor(connection)
                single = requests
                if not alone:
                    done = self._write_together(connection, cursor, requests)
                    written += done
                    single = [r for r in requests if r not in done]
                for request in single:
                    try:
                        request.outcome = self._write_alone(connection, cursor, request)
                        written.append(request)
                    except DomainError as error:
                        self._undo(cursor)
                        request.outcome, request.refused_in_transaction = error, True
                    except Exception as error:
                        self._undo(cursor)
                        if alone:
                            request.outcome = error
                        else:
                            again.append(request)
            except BaseException:
                transaction.rollback()
                raise
        except Exception as error:  # the transaction failed before its commit: nothing kept
            self._drop_writer()
            # Every request but those the planner refused: a refusal made inside the
            # transaction may rest on writes that were rolled back.
            redo = [
                r
                for r in requests
                if not isinstance(r.outcome, DomainError) or r.refused_in_transaction
            ]
            if alone:
                for request in redo:
                    request.outcome = error
                return []
            log.warning("intake batch of %d rolled back (%s); writing alone", len(requests), error)
            for request in redo:
                request.outcome, request.refused_in_transaction = None, False
            return redo
        try:
            transaction.commit()
        except Exception as error:
            # Never retried: a commit that failed on the way back may have been applied
            # (a request without an external reference would then be recorded twice).
            self._drop_writer()
            log.exception("intake commit failed")
            for request in written:
                request.outcome = error
            return []
        if len(self._catalogue) > 100_000:
            self._catalogue.clear()
        for request in written:
            if request.plan is not None:
                self._catalogue.update(request.plan.new_skus)
        return again

    def _write_alone(
        self, connection: Connection, cursor: Any, request: _Request
    ) -> Recorded | WrittenPurchase:
        """One request in a savepoint of its own (released on success)."""
        assert request.evaluator is not None  # set by the planner
        windows = request.evaluator.rulesets.award_windows("purchase")
        outcome: Recorded | WrittenPurchase | None = None
        # A purchase of the fast path in one pipeline on PostgreSQL (its end waits for
        # every statement, so an error is its own), unless max_awards windows are
        # counted again or a budget is charged (SQLAlchemy statements that read).
        quick = request.plan is not None and not windows and not request.plan.charges_budget
        with pipelined(connection) if quick else nullcontext():
            cursor.execute("SAVEPOINT intake")
            if request.plan is not None:
                outcome = request.context.run(
                    write_purchase, connection, self.runtime, request.evaluator, request.plan
                )
        if outcome is None:  # the full path, or the answer to a replay
            outcome = request.context.run(self._record, connection, request)
        cursor.execute("RELEASE SAVEPOINT intake")
        return outcome

    def _write_together(
        self, connection: Connection, cursor: Any, requests: list[_Request]
    ) -> list[_Request]:
        """The batch's fast-path purchases in bulk (``PurchaseBatchWriter``), in one
        savepoint; those written. When anything fails, none is: each is written alone."""
        # An award charged to an offer's budget is written alone (money.budgets).
        together = [r for r in requests if r.plan is not None and not r.plan.charges_budget]
        if len(together) < 2 or any(
            r.evaluator is None or r.evaluator.rulesets.award_windows("purchase") for r in together
        ):
            return []  # one purchase, or max_awards windows to count again: one by one
        if self._together is None or self._together[0] is not connection.dialect:
            self._together = (connection.dialect, PurchaseBatchWriter(connection.dialect))
        cursor.execute("SAVEPOINT together")
        try:
            plans = [r.plan for r in together if r.plan is not None]
            answers = self._together[1].write(connection, self.runtime, plans)
        except Exception:
            log.warning("intake batch written one by one", exc_info=True)
            cursor.execute("ROLLBACK TO SAVEPOINT together")
            cursor.execute("RELEASE SAVEPOINT together")
            return []
        cursor.execute("RELEASE SAVEPOINT together")
        done = []
        for request, answer in zip(together, answers, strict=True):
            if answer is not None:  # else taken meanwhile: the full path answers the replay
                request.outcome = answer
                done.append(request)
        return done

    # ---- the threads' connections: kept open (a pool checkout, PostgreSQL's pre-ping and
    # the reset on return cost three round trips per batch) -------------------------

    def _reader(self) -> Connection:
        if (
            self._read_connection is None
            or self._read_connection.closed
            or self._read_connection.invalidated
        ):
            self._read_connection = self.database.read_engine.connect()
        return self._read_connection

    def _end_reads(self, reader: Connection) -> None:
        """End what the reads began: SQLAlchemy's transaction, and the one the driver
        opened for statements run on it directly (PostgreSQL), so no snapshot is held."""
        try:
            reader.rollback()
            driver = reader.connection.dbapi_connection
            if self.database.is_sqlite is False and driver is not None:
                driver.rollback()
        except Exception:  # a broken connection: the next batch opens another
            log.warning("intake reader connection dropped", exc_info=True)
            reader.invalidate()
            self._read_connection = None

    def _drop_reader(self) -> None:
        if self._read_connection is not None:
            try:
                self._read_connection.close()
            except Exception:
                log.warning("intake reader connection dropped", exc_info=True)
            self._read_connection = None

    def _writer(self) -> Connection:
        if (
            self._write_connection is None
            or self._write_connection.closed
            or self._write_connection.invalidated
        ):
            self._write_connection = self.database.write_engine.connect()
        return self._write_connection

    def _drop_writer(self) -> None:
        if self._write_connection is not None:
            try:
                self._write_connection.close()
            except Exception:
                log.warning("intake writer connection dropped", exc_info=True)
            self._write_connection = None

    @staticmethod
    def _undo(cursor: Any) -> None:
        """Back to before the request (its savepoint, then gone)."""
        cursor.execute("ROLLBACK TO SAVEPOINT intake")
        cursor.execute("RELEASE SAVEPOINT intake")

    def _record(self, connection: Connection, request: _Request) -> Recorded:
        """``events.record_event`` in a session on the batch's connection (and savepoint)."""
        session = Session(
            bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False
        )
        try:
            recorded = record_event(session, self.runtime, request.event_type, request.body)
            session.commit()  # releases the session's savepoint
            return recorded
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()
