"""Evaluation runs (issue 5): batch offers and period aggregates over the whole history.

A run evaluates every posted event with ``performed_on <= as_of`` (default and at most:
now) that no run evaluated yet, in ``performed_on`` order, in chunks:

- the per-event offers: ``evaluation: batch`` offers for every event, and every offer
  (mode ``all``) for an event that was not evaluated on intake (``evaluated`` false), with
  the same facts as immediate evaluation (``offers.facts.build_facts``; a purchase's are
  built straight from its stored details by ``offers.facts.purchase_fact``, the same fact; contact
  segments as they are now; ``max_awards`` windows counted like
  ``evaluation.awards_in_window``, including the awards made earlier in the same chunk).
  A batch offer never awards an event that an offer of its ``exclusive_group`` already
  awarded;
- then, closed period after closed period (in the order they start), the period
  aggregates of the contacts that have it pending (:mod:`rewards.runs.aggregates`),
  planned in slices of contacts from one read of the period's purchases and written in
  chunks of contacts: each group in range is decided by the engine on the aggregate fact
  of its latest purchase (segments, max_awards, the range) and awarded once; every
  contributing purchase gets a link.

Idempotence and crashes. Each chunk is one transaction: its ``evaluated_events`` marks,
its awards (with their ledger credits) and its progress counters commit together, so a
crash loses at most the chunk in flight, and the next run skips every marked event. The
unique (offer, event, beneficiary) of awards and the primary keys of the marks and links
turn any double evaluation into an error (the chunk rolls back), never a double award.

One run at a time. ``evaluation_runs.running_lock`` is unique and 1 while a run is
running: a second start is refused (409 ``run_in_progress``). A run whose heartbeat is
older than ``STALE_AFTER`` (its process died) is marked failed by the next start.

Scale-out. A run is split into ``partitions`` by the last hex digit of the contact id;
workers (``execute_run`` in other processes or threads) claim partitions one at a time
(``FOR UPDATE SKIP LOCKED`` on PostgreSQL; SQLite serialises writers anyway). Everything
a contact's awards depend on (windows, aggregates) stays within its partition. See
docs/scale-out.md.

Concurrency with requests. Chunks are read and decided outside the write transaction;
then one write transaction locks the contacts (PostgreSQL), re-checks what the decisions
depend on and writes. Per-event chunks: the awarded events are still posted and the
``max_awards`` counts did not move (else the chunk is read again). Aggregate chunks: the
contacts' pending rows of the period (how many, and their counts of changes) and the
``max_awards`` counts are what the plan was made on (else it is planned again, in the
transaction). Cancellation calls
``on_event_cancelled`` first, which takes the same contact lock and counts a change of
the purchase's pending periods, so a cancel and a run never miss each other's writes.

Speed (bench/evaluation_run.py; docs/scale-out.md has the figures). A run is CPU-bound:
the rules engine and Python hold the GIL. A worker of a big run (``AHEAD_MIN_EVENTS``)
therefore starts a second process (``ahead.AheadProcess``) that reads and decides chunks
while the worker writes; whenever the next chunk to write is not back from it, the
worker decides a later one itself (``ahead.SharedChunks``), so both CPUs stay busy whatever the
balance. Writing is bulk statements built once per worker, on the worker's own
connection (SQLite: a large page cache and rare WAL checkpoints), with time-ordered
award ids; the cyclic garbage collector runs less often during a run.

Modules: ``common`` (the run's answer, hooks, errors, chunk sizes), ``control``
(start, claim, execute, background runs), ``records`` (events as read),
``deciding`` (reading and deciding chunks), ``ahead`` (the read-ahead process),
``writing`` (the worker's write transactions), ``aggregates`` (the period
contributions), ``cancellation``, ``scheduler`` (runs inside ``rewards serve``).
"""

from rewards.runs.cancellation import evaluated_by_run, on_event_cancelled
from rewards.runs.common import (
    CHUNK_SIZE,
    CONTACTS_PER_CHUNK,
    STALE_AFTER,
    ChunkDone,
    EvaluationRunIn,
    EvaluationRunOut,
    RunAborted,
    RunHooks,
    RunInProgress,
    RunInterrupted,
    RunNotFound,
    RunOfferOut,
    get_run,
    recent_runs,
    run_out,
)
from rewards.runs.control import (
    execute_run,
    partitions_for,
    run_evaluation,
    start_background_run,
    start_run,
    stop_background_runs,
)
from rewards.runs.records import EventRecord, partition_filter

__all__ = [
    "CHUNK_SIZE",
    "CONTACTS_PER_CHUNK",
    "STALE_AFTER",
    "ChunkDone",
    "EvaluationRunIn",
    "EvaluationRunOut",
    "EventRecord",
    "RunAborted",
    "RunHooks",
    "RunInProgress",
    "RunInterrupted",
    "RunNotFound",
    "RunOfferOut",
    "evaluated_by_run",
    "execute_run",
    "get_run",
    "on_event_cancelled",
    "partition_filter",
    "partitions_for",
    "recent_runs",
    "run_evaluation",
    "run_out",
    "start_background_run",
    "start_run",
    "stop_background_runs",
]
