"""Telecare's own maintenance of the readings store, run from Telecare rather than trusted to
TimescaleDB's background scheduler (which fails every job on some PostgreSQL minors, so a
compression policy can silently never run).

Each run, under a transaction-level advisory lock so that concurrent workers do not repeat
the work: on TimescaleDB, compress readings chunks older than `COMPRESS_AFTER`; on plain
PostgreSQL, create the monthly partitions ahead; on both, purge expired dead letters (see
`standard_jobs`). Every job's outcome is recorded in `maintenance_jobs` for readiness
and metrics. Functions take a connection inside the caller's transaction and never commit;
the time is passed in."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import psycopg
from psycopg.pq import TransactionStatus
from psycopg.rows import class_row

from core import locks
from devices.dead_letters import purge_dead_letters
from devices.repository import Conn, ensure_partitions, storage_backend

log = logging.getLogger(__name__)

# The age at which a readings chunk is compressed: late readings older than this are rare,
# and a chunk is queried per citizen and metric from then on.
COMPRESS_AFTER = timedelta(days=30)
# Partitions from a month back (a device's backlog) to three months ahead.
PARTITIONS_BEHIND = timedelta(days=31)
PARTITIONS_AHEAD = timedelta(days=92)
BACKENDS = frozenset({"postgres", "timescaledb"})

TRY_LOCK = "SELECT pg_try_advisory_xact_lock(%s)"

# Chunks whose whole time range is older than the bound, and whether each is compressed
# already (a partly compressed chunk, with late rows added since, counts as compressed).
OLD_CHUNKS = """
SELECT c::text, ch.is_compressed
  FROM show_chunks('readings', older_than => %s::timestamptz) AS c
  JOIN timescaledb_information.chunks AS ch
    ON format('%%I.%%I', ch.chunk_schema, ch.chunk_name)::regclass = c
 ORDER BY c::text"""
# Compresses an uncompressed chunk and recompresses a partly compressed one; a chunk that is
# compressed already is left as it is (with a notice).
COMPRESS_CHUNK = "SELECT compress_chunk(%s::regclass, if_not_compressed => true)"

RECORD_SUCCESS = """
INSERT INTO maintenance_jobs AS m (job, last_run_at, last_success_at, last_done, unit, failures)
VALUES (%(job)s, %(now)s, %(now)s, %(done)s, %(unit)s, 0)
ON CONFLICT (job) DO UPDATE
   SET last_run_at = excluded.last_run_at, last_success_at = excluded.last_success_at,
       last_done = excluded.last_done, unit = excluded.unit, failures = 0"""
RECORD_FAILURE = """
INSERT INTO maintenance_jobs AS m (job, last_run_at, unit, last_error_at, last_error_class,
                                   last_error_sqlstate, failures)
VALUES (%(job)s, %(now)s, %(unit)s, %(now)s, %(error_class)s, %(sqlstate)s, 1)
ON CONFLICT (job) DO UPDATE
   SET last_run_at = excluded.last_run_at, unit = excluded.unit,
       last_error_at = excluded.last_error_at, last_error_class = excluded.last_error_class,
       last_error_sqlstate = excluded.last_error_sqlstate, failures = m.failures + 1"""
STATUS = """
SELECT job, unit, last_run_at, last_success_at, last_done, last_error_at, last_error_class,
       last_error_sqlstate, failures
  FROM maintenance_jobs
 ORDER BY job"""


@dataclass(frozen=True, slots=True)
class Job:
    """A maintenance step: `run(conn, now)` does its work and returns how much, in `unit`."""

    name: str
    unit: str
    run: Callable[[Conn, datetime], int]
    backends: frozenset[str] = BACKENDS


@dataclass(frozen=True, slots=True)
class Outcome:
    job: str
    done: int
    error_class: str | None = None
    sqlstate: str | None = None

    @property
    def ok(self) -> bool:
        return self.error_class is None


@dataclass(frozen=True, slots=True)
class JobStatus:
    """A job's last recorded outcome, as `maintenance_status` reports it."""

    job: str
    unit: str
    last_run_at: datetime
    last_success_at: datetime | None
    last_done: int
    last_error_at: datetime | None
    last_error_class: str | None
    last_error_sqlstate: str | None
    failures: int  # failed runs since the last success

    @property
    def failing(self) -> bool:
        return self.failures > 0

    def overdue(self, now: datetime, within: timedelta) -> bool:
        """True when the job has not succeeded within `within` before `now` (or ever)."""
        return self.last_success_at is None or now - self.last_success_at > within


def compress_old_readings(conn: Conn, now: datetime) -> int:
    """Compress every readings chunk older than COMPRESS_AFTER; returns the chunks newly compressed."""
    chunks = conn.execute(OLD_CHUNKS, (now - COMPRESS_AFTER,)).fetchall()
    for chunk, _compressed in chunks:
        conn.execute(COMPRESS_CHUNK, (chunk,))
    return sum(1 for _chunk, compressed in chunks if not compressed)


def create_reading_partitions(conn: Conn, now: datetime) -> int:
    """Create the monthly readings partitions around `now`; returns how many were created."""
    return ensure_partitions(conn, now - PARTITIONS_BEHIND, now + PARTITIONS_AHEAD)


JOBS: tuple[Job, ...] = (
    Job("compress_readings", "chunks", compress_old_readings, frozenset({"timescaledb"})),
    Job("reading_partitions", "partitions", create_reading_partitions, frozenset({"postgres"})),
)


def dead_letter_retention(retention: timedelta) -> Job:
    """The job that purges dead letters last delivered more than `retention` ago."""

    def purge(conn: Conn, now: datetime) -> int:
        return purge_dead_letters(conn, now - retention)

    return Job("dead_letter_retention", "dead letters", purge)


def standard_jobs(dead_letters_kept: timedelta) -> tuple[Job, ...]:
    """Every job Telecare runs (the caller knows the retention from its settings)."""
    return (*JOBS, dead_letter_retention(dead_letters_kept))


def run_maintenance(conn: Conn, now: datetime,
                    jobs: Sequence[Job] = JOBS) -> list[Outcome] | None:
    """Run the jobs for this database's backend and record each outcome; None when another
    session holds the maintenance lock (it is doing the same work)."""
    _require_transaction(conn)
    if not _scalar_bool(conn, TRY_LOCK, locks.MAINTENANCE):
        return None
    backend = storage_backend(conn)
    return [_run_one(conn, job, now) for job in jobs if backend in job.backends]


def maintenance_status(conn: Conn) -> list[JobStatus]:
    """Every job's last outcome, by job name (for readiness and metrics)."""
    with conn.cursor(row_factory=class_row(JobStatus)) as cur:
        return cur.execute(STATUS).fetchall()


def _run_one(conn: Conn, job: Job, now: datetime) -> Outcome:
    # A savepoint per job: a failing job's half-done work is undone, its failure is recorded
    # in the caller's transaction, and the jobs after it still run.
    try:
        with conn.transaction():
            done = job.run(conn, now)
    except Exception as exc:  # any failure is recorded; it must not stop the other jobs
        if conn.broken or conn.closed:
            raise  # nothing can be recorded on a lost connection; the caller retries
        outcome = Outcome(job.name, 0, type(exc).__name__, _sqlstate(exc))
        conn.execute(RECORD_FAILURE, {"job": job.name, "now": now, "unit": job.unit,
                                      "error_class": outcome.error_class,
                                      "sqlstate": outcome.sqlstate})
        log.warning("maintenance job %s failed: %s (SQLSTATE %s)", job.name,
                    outcome.error_class, outcome.sqlstate)
        return outcome
    conn.execute(RECORD_SUCCESS, {"job": job.name, "now": now, "done": done, "unit": job.unit})
    if done:
        log.info("maintenance job %s: %d %s", job.name, done, job.unit)
    return Outcome(job.name, done)


def _require_transaction(conn: Conn) -> None:
    # The advisory lock is transaction-level: in autocommit outside a transaction block it
    # would be released at once and two workers could run the same jobs together.
    if conn.autocommit and conn.info.transaction_status == TransactionStatus.IDLE:
        raise ValueError("run_maintenance needs a transaction: call it inside conn.transaction()")


def _scalar_bool(conn: Conn, query: str, *params: object) -> bool:
    row = conn.execute(query, params).fetchone()
    return bool(row and row[0])


def _sqlstate(exc: BaseException) -> str | None:
    return exc.sqlstate if isinstance(exc, psycopg.Error) else None
