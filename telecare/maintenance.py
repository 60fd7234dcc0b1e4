"""Runs Telecare's maintenance jobs (devices/maintenance.py) on a schedule, on a connection
of their own: compressing a chunk holds locks until its commit, which must not stall ingest.
Every process that runs the loop may do so; the jobs' advisory lock lets one run at a time."""

from __future__ import annotations

import logging
import threading
from datetime import timedelta

import psycopg

from api.auth import service as auth_service
from core.clock import Clock, system_clock
from core.settings import Settings
from devices.maintenance import Job, Outcome, run_maintenance, standard_jobs

log = logging.getLogger(__name__)
EVERY = timedelta(hours=1)


def maintain_once(settings: Settings, clock: Clock = system_clock) -> list[Outcome] | None:
    """One run of every job; None when another process is running them."""
    jobs = (*standard_jobs(timedelta(days=settings.dead_letter_retention_days)),
            Job("sign_in_retention", "rows", auth_service.purge_old_sign_ins))
    with psycopg.connect(settings.database_dsn(), autocommit=True, connect_timeout=5) as conn:
        with conn.transaction():
            return run_maintenance(conn, clock(), jobs)


def maintain_forever(settings: Settings, stop: threading.Event, clock: Clock = system_clock,
                     every: timedelta = EVERY) -> None:
    """Run the jobs every `every` until `stop` is set; a database outage waits for the next."""
    while not stop.is_set():
        try:
            outcomes = maintain_once(settings, clock)
            log.info("maintenance: %s", "another process runs it" if outcomes is None else
                     ", ".join(f"{o.job} {'ok' if o.ok else 'FAILED'}" for o in outcomes))
        except psycopg.Error as exc:
            log.warning("maintenance could not run (%s %s); next try in %s",
                        type(exc).__name__, exc.sqlstate, every)
        stop.wait(every.total_seconds())


def start_maintenance(settings: Settings, stop: threading.Event) -> threading.Thread:
    """The loop in a daemon thread (beside ingest, or in the demo)."""
    thread = threading.Thread(target=maintain_forever, args=(settings, stop),
                              name="maintenance", daemon=True)
    thread.start()
    return thread
