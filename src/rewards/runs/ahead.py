"""The read-ahead process: a second process that reads and decides chunks while the
worker writes (``AheadProcess``), and the chunk queue both take work from
(``SharedChunks``)."""

from __future__ import annotations

import logging
import multiprocessing
import os
import queue
import threading
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec

from rewards.db.database import Database
from rewards.db.run_tables import EvaluationRun
from rewards.engine import AwardDecision, Evaluator
from rewards.engine.rulesets import Rulesets
from rewards.runs import aggregates
from rewards.runs.deciding import (
    Decided,
    Item,
    NewAward,
    Plan,
    Reader,
    Timer,
    fewer_collections,
)
from rewards.runs.records import EventRecord

log = logging.getLogger("rewards.runs")


AHEAD_MIN_EVENTS = 50_000  # a run this big reads and decides ahead in a second process


class AheadFailed(RuntimeError):
    """The read-ahead process stopped or failed: the worker reads by itself."""


class AheadProcess:
    """A second process reading and deciding chunks for the worker: the worker sends it
    chunks to do (``send``: events between two cursors, or a list of contacts) and gets
    them back in order (``receive``), decided (``Decided``) or planned (``Plan``), as
    msgpack (pickling them cost the worker more). A run is CPU-bound in Python and the
    rules engine, which hold the GIL: a thread does not run beside the worker's writes
    (measured: slower), a process does. Everything it decides is checked again when
    written, like any chunk."""

    def __init__(self, spec: dict[str, Any], timings: dict[str, float] | None) -> None:
        context = multiprocessing.get_context("spawn")  # never fork a threaded process
        self.connection, child = context.Pipe()
        self.timings = timings
        self.sent = 0  # requests not answered yet
        self.process = context.Process(
            target=_ahead_main, args=(child, spec), name="rewards-run-ahead"
        )
        self.process.start()
        child.close()
        # Answers are taken off the pipe as they come: the process never waits for this
        # one to be free (a full pipe would stop it while this one works on a chunk).
        self.answers: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        threading.Thread(target=self._pump, name="rewards-run-ahead-answers", daemon=True).start()

    def _pump(self) -> None:
        try:
            while True:
                self.answers.put(self.connection.recv_bytes())
        except (EOFError, OSError):
            self.answers.put(None)

    def send(self, kind: str, partition: int, after: Any, until: Any) -> None:
        if isinstance(until, aggregates.Slice):  # the slice itself is what is asked for
            after, until = None, (until.period, until.key, until.after, until.last)
        try:
            self.connection.send_bytes(_ENCODE((kind, partition, after, until)))
        except OSError as error:
            raise AheadFailed(f"the read-ahead process is gone ({error})") from None
        self.sent += 1

    def ready(self) -> bool:
        """Whether an answer is there (``receive`` would not wait)."""
        return not self.answers.empty()

    def receive(self) -> Decided | Plan | None:
        """The oldest request's answer (None: it had no events or contacts)."""
        data = self.answers.get()
        if data is None:
            self.answers.put(None)  # for any later call
            raise AheadFailed("the read-ahead process stopped")
        answer = _ANSWER.decode(data)
        self.sent -= 1
        if self.timings is not None:
            for name, seconds in answer.timings.items():
                self.timings[name] = self.timings.get(name, 0.0) + seconds
        if answer.error is not None:
            raise AheadFailed(f"the read-ahead process failed:\n{answer.error}")
        if answer.plan is not None:
            return _plan_from_wire(answer.plan)
        return None if answer.decided is None else _from_wire(answer.decided)

    def close(self) -> None:
        try:
            self.connection.send_bytes(b"")  # it stops after the chunks it was sent
        except OSError:  # already gone
            pass
        self.process.join(30)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join()
        self.connection.close()


def _ahead_main(connection: Any, spec: dict[str, Any]) -> None:
    """The read-ahead process (``AheadProcess``): its own database engines, the
    worker's rulesets rebuilt (same offers, same version) on its own rules engine."""
    # Its reads go through the periods and chunks in time order: SQLite's default page
    # cache does as well as the worker's 50 MB (measured on the 1M bench) in 45 MB less.
    database = Database(spec["url"])
    timings: dict[str, float] = {}
    reader = Reader(
        database,
        Evaluator(Rulesets(**spec["rulesets"])),
        EvaluationRun(**spec["run"]),
        spec["chunk_size"],
        spec["contacts_per_chunk"],
        timings,
    )
    idle = Timer(timings, "read-ahead idle")
    try:
        with fewer_collections():
            while True:
                with idle:
                    request = connection.recv_bytes()
                if not request:
                    return
                answer = _Answer()
                try:
                    kind, partition, after, until = _REQUEST.decode(request)
                    if kind == "events":
                        start = None if after is None else (after[0], after[1])
                        cursor = None if until is None else (until[0], until[1])
                        decided = reader.read_events(partition, start, cursor)
                        answer.decided = None if decided is None else _to_wire(decided)
                    else:
                        plan = reader.read_plan(partition, aggregates.Slice(*until))
                        answer.plan = _plan_to_wire(plan)
                except Exception:
                    answer.error = traceback.format_exc()
                answer.timings = dict(timings)
                timings.clear()
                connection.send_bytes(_ENCODE(answer))
    except (EOFError, OSError):  # the worker is gone
        pass
    finally:
        database.dispose()


# Between the worker and the read-ahead process: msgpack (msgspec).
_ENCODE = msgspec.msgpack.Encoder().encode
# (kind: "events" | "aggregates", partition, after, until): events after the cursor
# ``after`` up to the cursor ``until``; or the slice ``until`` (period, key, after, last).
_REQUEST = msgspec.msgpack.Decoder(tuple[str, int, Any, Any])


class _WireAward(msgspec.Struct, array_like=True):
    number: int
    id: str
    contact_id: str
    performed_on: datetime
    raw: str  # the details, for a referral's beneficiaries only
    decision: AwardDecision


class _WireDecided(msgspec.Struct, array_like=True):
    after: tuple[datetime, int] | None
    cursor: tuple[datetime, int]
    marks: list[tuple[int, str, str, int, int, int, int]]
    windowed: list[tuple[int, str, str, datetime, dict[str, int]]]
    awards: list[_WireAward]


class _WireGroup(msgspec.Struct, array_like=True):
    contact_id: str
    key: int
    total_cents: int
    count: int
    quantity_milli: int
    latest: int
    members: list[int]


class _WireAggregateAward(msgspec.Struct, array_like=True):
    number: int  # the carrier purchase
    id: str
    contact_id: str
    performed_on: datetime
    period: str
    group: _WireGroup
    decision: AwardDecision


class _WirePlan(msgspec.Struct, array_like=True):
    piece: tuple[str, int, str, str]  # period, key, after, last
    pending: dict[str, int]
    awards: list[_WireAggregateAward]
    groups: int
    windowed: list[tuple[int, str, str, datetime, dict[str, int]]]


class _Answer(msgspec.Struct):
    decided: _WireDecided | None = None
    plan: _WirePlan | None = None
    error: str | None = None
    timings: dict[str, float] = {}


_ANSWER = msgspec.msgpack.Decoder(_Answer)


def _to_wire(decided: Decided) -> _WireDecided:
    return _WireDecided(
        after=decided.after,
        cursor=decided.cursor,
        marks=decided.marks,
        windowed=_windowed_to_wire(decided.windowed),
        awards=[
            _WireAward(
                number=a.event.number,
                id=a.event.id,
                contact_id=a.event.contact_id,
                performed_on=a.event.performed_on,
                raw=a.event.raw if a.decision.beneficiary != "contact" else "",
                decision=a.decision,
            )
            for a in decided.awards
        ],
    )


_WireWindowed = list[tuple[int, str, str, datetime, dict[str, int]]]


def _windowed_to_wire(items: list[Item]) -> _WireWindowed:
    """What re-checking an item's max_awards counts needs of it."""
    return [
        (i.event.number, i.event.contact_id, i.event.type, i.event.performed_on, i.db_counts)
        for i in items
    ]


def _windowed_from_wire(wire: _WireWindowed) -> list[Item]:
    return [
        Item(
            event=EventRecord(n, "", kind, contact, None, on, None, True, ""),
            mode="",
            db_counts=counts,
        )
        for n, contact, kind, on, counts in wire
    ]


def _from_wire(wire: _WireDecided) -> Decided:
    windowed = _windowed_from_wire(wire.windowed)
    awards = [
        NewAward(
            EventRecord(a.number, a.id, "", a.contact_id, None, a.performed_on, None, True, a.raw),
            a.decision,
        )
        for a in wire.awards
    ]
    return Decided(wire.after, wire.cursor, wire.marks, windowed, awards)


def _plan_to_wire(plan: Plan) -> _WirePlan:
    awards = []
    for award in plan.awards:
        group, event = award.group, award.event
        assert group is not None and award.period is not None
        awards.append(
            _WireAggregateAward(
                number=event.number,
                id=event.id,
                contact_id=event.contact_id,
                performed_on=event.performed_on,
                period=award.period,
                group=_WireGroup(
                    group.contact_id,
                    group.key,
                    group.total_cents,
                    group.count,
                    group.quantity_milli,
                    group.latest,
                    list(group.members),
                ),
                decision=award.decision,
            )
        )
    piece = plan.piece
    return _WirePlan(
        (piece.period, piece.key, piece.after, piece.last),
        plan.pending,
        awards,
        plan.groups,
        _windowed_to_wire(plan.windowed),
    )


def _plan_from_wire(wire: _WirePlan) -> Plan:
    awards = [
        NewAward(
            EventRecord(
                a.number, a.id, "purchase", a.contact_id, None, a.performed_on, None, True, ""
            ),
            a.decision,
            aggregates.Group(
                contact_id=a.group.contact_id,
                key=a.group.key,
                total_cents=a.group.total_cents,
                count=a.group.count,
                quantity_milli=a.group.quantity_milli,
                latest=a.group.latest,
                members=tuple(a.group.members),
            ),
            a.period,
        )
        for a in wire.awards
    ]
    return Plan(
        aggregates.Slice(*wire.piece),
        wire.pending,
        awards,
        wire.groups,
        _windowed_from_wire(wire.windowed),
    )


IN_FLIGHT = 6  # chunks out at the read-ahead process at a time


@dataclass
class Job:
    """A chunk to decide: the events after the cursor ``after`` up to the cursor
    ``until`` (None: at most a chunk, the partition's last), or the aggregate slice
    ``until`` (``after``: the frontier before it, ``frontier``: after it)."""

    after: Any
    until: Any
    result: Any = None
    done: bool = False
    remote: bool = False  # out at the read-ahead process
    dropped: bool = False  # its answer is not wanted any more
    frontier: Any = None


class SharedChunks:
    """A phase's chunks in order, decided by the read-ahead process and, whenever the
    next one to write is not back yet, by the worker itself: the two processes share the
    work whatever its balance (alone, the read-ahead process was the slower one by a
    third, measured on the 1M bench).

    ``bound(frontier)``: events: the next job's ``until`` (the chunk's last event, None
    for the last chunk); aggregates: the next slice and the frontier after it (None at
    the end).
    ``local(job)``: its result, here. The next job starts where the previous one ends;
    after an open-ended last chunk of events, where its result ends."""

    def __init__(
        self,
        ahead: AheadProcess,
        kind: str,
        partition: int,
        after: Any,
        bound: Callable[[Any], Any],
        local: Callable[[Job], Any],
    ) -> None:
        self.ahead = ahead
        self.kind = kind
        self.partition = partition
        self.bound = bound
        self.local = local
        self.jobs: deque[Job] = deque()  # not written yet, in order
        self.sent: deque[Job] = deque()  # out, in the order the answers come
        self.restart(after)

    def restart(self, after: Any) -> None:
        """Forget the jobs not written (they start at the wrong place)."""
        for job in self.jobs:
            job.dropped = True
        self.jobs.clear()
        self.frontier: Any = after  # where the next job starts
        self.known = True  # False: after an open-ended job, until its result is in
        self.ended = False

    def pop(self) -> None:
        """The first job is written."""
        self.jobs.popleft()

    def decided_next(self) -> list[Job]:
        """The next jobs in line that are decided already, in order (after ``pop``: the
        worker may write them with the one it popped); answers already back are taken in
        first."""
        while self.sent and self.ahead.ready():
            self._receive()
        found = []
        for job in self.jobs:
            if not job.done:
                break
            found.append(job)
        return found

    def next(self) -> Job | None:
        """The first job, with its result (None: no job is left)."""
        while True:
            self._send()
            if not self.jobs:
                if self.sent:  # answers of dropped jobs: read them off
                    self._receive()
                    continue
                return None
            head = self.jobs[0]
            if head.done:
                return head
            if not head.remote:
                self._run_here(head)
            elif self.ahead.ready():
                self._receive()
            else:  # it would wait: work on a later chunk meanwhile, if there is one
                job = next((j for j in self.jobs if not j.remote and not j.done), None)
                if job is None:
                    job = self._make()
                if job is not None:
                    self._run_here(job)
                else:
                    self._receive()

    def _make(self) -> Job | None:
        if self.ended or not self.known:
            return None
        if self.kind == "aggregates":
            found = self.bound(self.frontier)
            if found is None:
                self.ended = True
                return None
            piece, frontier = found
            job = Job(self.frontier, piece, frontier=frontier)
            self.frontier = frontier
        else:
            until = self.bound(self.frontier)
            job = Job(self.frontier, until)
            if until is None:  # open-ended: the next start is known from its result
                self.known = False
            else:
                self.frontier = until
        self.jobs.append(job)
        return job

    def _send(self) -> None:
        while len(self.sent) < IN_FLIGHT:
            job = next((j for j in self.jobs if not j.remote and not j.done), None)
            if job is None:
                job = self._make()
            if job is None:
                return
            self.ahead.send(self.kind, self.partition, job.after, job.until)
            job.remote = True
            self.sent.append(job)

    def _receive(self) -> None:
        result = self.ahead.receive()
        job = self.sent.popleft()
        if not job.dropped:
            self._done(job, result)

    def _run_here(self, job: Job) -> None:
        self._done(job, self.local(job))

    def _done(self, job: Job, result: Any) -> None:
        job.result, job.done, job.remote = result, True, False
        if job.until is None and self.kind == "events":  # the open-ended last chunk
            if result is None:
                self.ended = True
            else:
                self.frontier, self.known = result.cursor, True


def ahead_spec(
    database: Database,
    rulesets: Rulesets,
    run: EvaluationRun,
    chunk_size: int,
    contacts_per_chunk: int,
) -> dict[str, Any]:
    """What the read-ahead process needs (picklable): ``Rulesets(**spec["rulesets"])``
    rebuilds the worker's rulesets."""
    return {
        "url": database.url,
        "rulesets": {
            "path": rulesets.path,
            "version": rulesets.version,
            "loaded_at": rulesets.loaded_at,
            "files": rulesets.files,
            "definition": rulesets.definition,
            "offers": rulesets.offers,
        },
        "run": {
            "id": run.id,
            "as_of": run.as_of,
            "partitions": run.partitions,
            "ruleset_version": run.ruleset_version,
        },
        "chunk_size": chunk_size,
        "contacts_per_chunk": contacts_per_chunk,
    }


def reads_ahead(database: Database, run: EvaluationRun) -> bool:
    """A big run of one partition (a run of several has several workers, processes of
    their own already: measured, a read-ahead process each made two workers slower on
    two CPUs), a second CPU, a database another process can open, and a process allowed
    to have children."""
    url = database.url
    in_memory = url.startswith("sqlite") and (":memory:" in url or url.rstrip("/") == "sqlite:")
    return (
        run.events_total >= AHEAD_MIN_EVENTS
        and run.partitions == 1
        and (os.cpu_count() or 1) > 1
        and not in_memory
        and not multiprocessing.current_process().daemon
    )
