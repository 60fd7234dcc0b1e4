"""The alert engine behind `telecare alerts`: evaluates every stored reading and event once,
and runs the time-driven rules, escalation and the release of held alerts on a clock tick.

Exactly once: ingest queues each row it really stored (evaluation_queue) in the transaction
that stores it; the engine deletes a batch of queue rows in the transaction that records the
findings they raise. Whatever process dies when, a queued item is either still queued,
evaluated and recorded, or (a defect kept it from being evaluated) parked in
evaluation_failures with an alert that says so: exactly one of the three.

Items that may raise an alert at once (alerts/priority.py) are taken ahead of the rest by a
triage lane before every batch while the queue holds a backlog: behind a backlog of routine
readings, a low SpO2 or a button press waits for one batch, not for the backlog.

One engine leads: the session advisory lock core.locks.ALERTS_LEADER, held on the very
connection the engine works on, so a lost connection loses leadership and the open
transaction together. A standby retries the lock every second."""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any
from uuid import UUID

import psycopg

from alerts import context_repository as repo
from alerts import retraining, service
from alerts.baseline_cache import BaselineCache
from alerts.configuration_cache import ConfigurationCache
from alerts.context import group_queue_rows, load_contexts
from alerts.history_cache import HistoryCache
from alerts.models import CitizenContext, Finding
from alerts.priority import urgent_citizens
from alerts.rules import evaluate_new, evaluate_tick, guard
from anomaly.baseline import Baseline, BaselineConfig
from core import locks
from core.db import cancel_when_stop_overruns, describe_error, use_utc

log = logging.getLogger(__name__)

Conn = psycopg.Connection[Any]
Evaluate = Callable[[CitizenContext, datetime], list[Finding]]
# Longest wait for a notification before checking the stop event and the tick again.
WAKE_CHECK_S = 0.5
MAX_BACKOFF_S = 10.0
# Queue rows triage looks at per pass (a backlog after an outage is looked at in steps).
TRIAGE_SCAN_MAX = 5_000
# Longest a drain runs before the loop looks at the tick: under a load that never lets the
# queue empty, the time-driven rules and escalation must still run.
DRAIN_BUDGET_S = 1.0
# Citizens the tick's rules evaluate per transaction, and citizens retrained per transaction:
# the queue is drained between them, so a new reading (a button press) waits for one step of
# the tick, never for the whole of it. evaluate_tick costs about 0.7 ms a citizen and training
# her baselines about 16 ms (docs/alerts.md, README): some 20 and 80 ms a step.
TICK_STEP = 25
RETRAIN_STEP = 5
# Citizens the engine remembers as failing (forgotten all at once when full).
FAILING_MAX = 10_000


@dataclass
class EngineCounters:
    batches: int = 0  # committed queue batches
    items: int = 0  # queue rows evaluated and committed
    triaged: int = 0  # of those, taken ahead of the queue by the triage lane
    findings: int = 0
    ticks: int = 0
    escalations: int = 0
    released: int = 0
    retrained: int = 0  # citizens whose baselines were retrained
    parked: int = 0  # queue rows that could not be evaluated (a defect), in evaluation_failures
    skipped: int = 0  # citizens a tick or a retraining left out on a defect
    retries: int = 0  # sessions ended by an error, retried after a back-off
    leader_sessions: int = 0


def _chunks(items: Sequence[UUID], size: int) -> list[Sequence[UUID]]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def _is_defect(conn: Conn, exc: Exception) -> bool:
    """Whether `exc` is a defect that retrying the same work would meet again, as opposed to a
    lost connection, a cancelled statement, a deadlock or a serialization failure."""
    return not (conn.broken or conn.closed) and not isinstance(exc, psycopg.OperationalError)


def _attempt(conn: Conn, run: Callable[[], object]) -> Exception | None:
    """Run `run`: None when it worked, the defect when it raised one (anything else, a lost
    connection say, is raised: it ends the session)."""
    try:
        run()
    except Exception as exc:
        if not _is_defect(conn, exc):
            raise
        return exc
    return None


def _traceback(exc: BaseException) -> str:
    return "".join(traceback.format_tb(exc.__traceback__))


def _where(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    return f"{frames[-1].filename}:{frames[-1].lineno}" if frames else "?"


class AlertEngine:
    """Evaluate queued items and run the tick while leading; stand by while another leads."""

    def __init__(self, dsn: str, clock: Callable[[], datetime], tick_s: float = 10.0, *,
                 batch_max: int = 5_000, batch_citizens: int = 100, tick_chunk: int = TICK_STEP,
                 standby_retry_s: float = 1.0,
                 stop_timeout_s: float = 10.0, cache: bool = True,
                 baselines: BaselineConfig | None = None,
                 retrain_every: timedelta = retraining.DEFAULT_EVERY,
                 retrain_chunk: int = retraining.DEFAULT_CHUNK) -> None:
        """`cache`: keep histories, configurations and baselines between batches (off: every
        batch reads them, as the engine did before the caches; the engine benchmark's
        baseline). Each tick retrains `retrain_chunk` citizens whose personal baselines are
        older than `retrain_every`."""
        self._dsn = dsn
        self._clock = clock
        self._tick_s = tick_s
        self._batch_max = batch_max  # queue rows
        self._batch_citizens = batch_citizens
        self._tick_chunk = tick_chunk
        self._standby_retry_s = standby_retry_s
        self._stop_timeout_s = stop_timeout_s
        self._conn: Conn | None = None
        self._use_cache = cache
        self._baseline_config = baselines or BaselineConfig()
        self._retrain_every, self._retrain_chunk = retrain_every, retrain_chunk
        self._cache, self._configurations, self._baselines = self._new_caches()
        self._retrain_skip: set[UUID] = set()  # citizens whose training failed (a defect)
        self._tick_failures: set[tuple[UUID, str]] = set()  # logged already
        self._failing: set[UUID] = set()  # citizens whose items were parked (a defect)
        self._scanned = 0  # the triage lane has looked at every queue row up to this id
        # The last batch left items queued (or none was taken yet): a backlog, for triage.
        self._behind = True
        self._finished = threading.Event()
        self.leading = threading.Event()
        self.counters = EngineCounters()

    def _new_caches(self) -> tuple[HistoryCache | None, ConfigurationCache | None,
                                   BaselineCache | None]:
        if not self._use_cache:
            return None, None, None
        return HistoryCache(), ConfigurationCache(), BaselineCache()

    # --- the loop --------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Lead or stand by until `stop` is set. A database outage or a defect ends the
        session (rolling back what it had not committed: the queue keeps those rows) and
        starts another after a back-off."""
        self._finished.clear()
        threading.Thread(target=cancel_when_stop_overruns, name="alerts-stop-watch", daemon=True,
                         args=(stop, self._finished, self._stop_timeout_s, lambda: self._conn)).start()
        delay = 0.2
        try:
            while not stop.is_set():
                started = self.counters.batches + self.counters.ticks
                try:
                    self._session(stop)
                except psycopg.Error as exc:
                    log.warning("alert engine lost its database session (%s); retrying in "
                                "%.1f s", describe_error(exc), delay)
                except Exception as exc:  # noqa: BLE001 - a defect must not end the engine
                    # A defect (a rule raised): the batch rolled back and stays queued; the
                    # traceback without the message, which may quote a value.
                    log.error("alert evaluation failed (%s) at\n%s; retrying in %.1f s",
                              type(exc).__name__, _traceback(exc),
                              delay)
                else:
                    continue  # the session ended because of `stop`
                self.counters.retries += 1
                if self.counters.batches + self.counters.ticks > started:
                    delay = 0.2  # it worked for a while: this is a new disruption
                if stop.wait(delay):
                    break
                delay = min(delay * 2, MAX_BACKOFF_S)
        finally:
            self._finished.set()
            log.info("alert engine stopped: %s; process CPU %.1f s", self.counters,
                     time.process_time())

    def _session(self, stop: threading.Event) -> None:
        with psycopg.connect(self._dsn, autocommit=True, connect_timeout=5) as conn:
            use_utc(conn)
            self._conn = conn
            # What a former session (or leader) saw may be gone; what it triaged is evaluated.
            self._cache, self._configurations, self._baselines = self._new_caches()
            self._scanned = 0
            self._behind = True
            try:
                if not self._wait_for_leadership(conn, stop):
                    return
                self.counters.leader_sessions += 1
                self.leading.set()
                log.info("alert engine leading")
                repo.listen_evaluation(conn)
                self._lead(conn, stop)
            finally:
                self.leading.clear()
                self._conn = None

    def _wait_for_leadership(self, conn: Conn, stop: threading.Event) -> bool:
        """Take the leader lock, retrying every second (each try also proves the connection
        alive); False when stopped first."""
        announced = False
        while not stop.is_set():
            if repo.try_lead(conn, locks.ALERTS_LEADER):
                return True
            if not announced:
                log.info("another alert engine leads; standing by")
                announced = True
            stop.wait(self._standby_retry_s)
        return False

    def _lead(self, conn: Conn, stop: threading.Event) -> None:
        next_tick = time.monotonic()
        while not stop.is_set():
            emptied = self._drain(conn, stop)
            if time.monotonic() >= next_tick and not stop.is_set():
                self.tick_once(conn, stop)
                next_tick = time.monotonic() + self._tick_s
            if not emptied:
                continue  # more is queued: no waiting for a notification
            timeout = max(0.0, min(next_tick - time.monotonic(), WAKE_CHECK_S))
            # Notifications that came while we were busy are kept by psycopg and end this
            # wait at once; one per ingest commit, so a burst needs one drain.
            for _ in conn.notifies(timeout=timeout, stop_after=1):
                break

    def _drain(self, conn: Conn, stop: threading.Event) -> bool:
        """Triage and drain until the queue is empty (True) or DRAIN_BUDGET_S has passed.
        Triage only behind a backlog: after a batch that emptied the queue, the next batch
        takes all there is, urgent items included, and a triage pass before it would read
        every item twice."""
        until = time.monotonic() + DRAIN_BUDGET_S
        while not stop.is_set():
            if self._behind:
                self.triage_once(conn)
            if self.drain_once(conn) == 0:
                return True
            if not self._behind:
                return True
            if time.monotonic() >= until:
                return False
        return False

    # --- one step each (the loop's parts; tests drive them with a clock of their own) ------

    def drain_once(self, conn: Conn) -> int:
        """Evaluate one batch of queued items and commit it with its findings; returns how
        many items it took (0: the queue was empty)."""
        now = self._clock()
        rows = self._evaluate_or_isolate(
            conn, lambda: repo.take_queue_batch(conn, self._batch_max, self._batch_citizens), now)
        citizens = len({row["citizen_id"] for row in rows})
        full = len(rows) >= self._batch_max or citizens >= self._batch_citizens
        # A batch that was not full may still have left items queued: its citizens are chosen
        # among the oldest rows only, which a few citizens' bulk uploads can fill.
        self._behind = full or (bool(rows) and repo.anything_queued(conn))
        return len(rows)

    def triage_once(self, conn: Conn) -> int:
        """Evaluate, ahead of the queue, every queued item of the citizens that have an urgent
        one among the items queued since the last look; returns how many items it took."""
        now = self._clock()
        with conn.transaction():
            seen = repo.queued_after(conn, self._scanned, TRIAGE_SCAN_MAX)
            if not seen:
                return 0
            upto = seen[-1].id
            cache = self._configurations if self._configurations is not None else (
                ConfigurationCache())
            configurations = cache.configurations(conn, (item.citizen_id for item in seen))
            urgent = urgent_citizens(seen, configurations, now)
            if len(urgent) > self._batch_citizens:
                # As many citizens as a batch takes; look again from the next one's item.
                upto = urgent[self._batch_citizens][1] - 1
                urgent = urgent[:self._batch_citizens]
        rows = self._evaluate_or_isolate(conn, lambda: repo.take_citizens(
            conn, [c for c, _ in urgent], upto, self._batch_max), now) if urgent else []
        # Only once committed: a rolled-back look is looked at again.
        self._scanned = upto
        self.counters.triaged += len(rows)
        return len(rows)

    def _evaluate_or_isolate(self, conn: Conn, take: Callable[[], list[dict[str, Any]]],
                             now: datetime) -> list[dict[str, Any]]:
        """Take queue rows and evaluate them in one transaction. When that fails on a defect
        (not a lost connection, a cancellation or a deadlock: those end the session and the
        rows stay queued), each citizen of the batch is evaluated in a transaction of her own,
        so that only the one whose items cannot be evaluated is parked."""
        taken: list[dict[str, Any]] = []
        try:
            with conn.transaction():
                taken = take()
                self._evaluate_taken(conn, taken, now)
        except Exception as exc:
            if not taken or not _is_defect(conn, exc):
                raise
            self._isolate(conn, taken, now)
        return taken

    def _isolate(self, conn: Conn, taken: list[dict[str, Any]], now: datetime) -> None:
        upto = max(row["id"] for row in taken)
        citizens = list(dict.fromkeys(row["citizen_id"] for row in taken))
        # A citizen who failed before most likely failed this batch too: the others in one
        # transaction first, so that her defect costs a batch one retry, not one per citizen.
        known = [citizen for citizen in citizens if citizen in self._failing]
        others = [citizen for citizen in citizens if citizen not in self._failing]
        if known and others and _attempt(
                conn, lambda: self._evaluate_citizens(conn, others, upto, now)) is None:
            citizens = known
        unparked: Exception | None = None
        for citizen in citizens:
            defect = _attempt(conn, partial(self._evaluate_citizens, conn, [citizen], upto, now))
            if defect is None:
                self._failing.discard(citizen)
                continue
            unparked = unparked or _attempt(
                conn, partial(self._park, conn, citizen, upto, defect, now))
        if unparked is not None:
            # Her items stay queued: the session ends and retries after a back-off, loudly.
            raise unparked

    def _evaluate_citizens(self, conn: Conn, citizens: Sequence[UUID], upto: int,
                           now: datetime) -> None:
        with conn.transaction():
            self._evaluate_taken(conn, repo.take_citizens(conn, citizens, upto, self._batch_max),
                                 now)

    def _park(self, conn: Conn, citizen: UUID, upto: int, exc: Exception, now: datetime) -> None:
        """Move the citizen's items out of the queue and tell her care team, in one
        transaction. If even that alert cannot be stored, nothing is parked (raised): an item
        is never put aside without telling anyone; the other citizens of the batch are
        evaluated, then the session ends and retries with her items still queued."""
        error = f"{type(exc).__name__} at {_where(exc)}"
        if len(self._failing) >= FAILING_MAX:
            self._failing.clear()
        if citizen not in self._failing:  # her traceback once, not for every batch she is in
            log.error("alert engine could not evaluate citizen %s (%s) at\n%s; her items are "
                      "parked in evaluation_failures", citizen, type(exc).__name__,
                      _traceback(exc))
        self._failing.add(citizen)
        with conn.transaction():
            parked = repo.park(conn, citizen, upto, error, now)
            if not parked:
                return
            team = repo.care_teams(conn, [citizen]).get(citizen)
            service.record_findings(conn, citizen, team,
                                    [guard.evaluation_failed(parked, error, now)], now)
        self.counters.parked += len(parked)

    def _evaluate_taken(self, conn: Conn, rows: list[dict[str, Any]], now: datetime) -> None:
        """Evaluate queue rows taken in this transaction and record their findings."""
        if not rows:
            return
        grouped = group_queue_rows(rows)
        # The rules about new items look at no device state (the tick's rules do).
        contexts = load_contexts(conn, list(grouped), now, new=grouped, cache=self._cache,
                                 configurations=self._configurations, baselines=self._baselines,
                                 with_devices=False)
        findings = self._record(conn, contexts, evaluate_new, now)
        self.counters.batches += 1
        self.counters.items += len(rows)
        self.counters.findings += findings

    def tick_once(self, conn: Conn, stop: threading.Event | None = None) -> None:
        """The time-driven rules for every citizen with a plan, in chunks (draining the queue
        between chunks: a new reading waits for one chunk, not for the whole tick), then escalation
        and the release of alerts held by a pause that has ended. A defect in one step or for
        one citizen is logged and skipped; the other steps and citizens go on."""
        now = self._clock()
        citizens = repo.citizens_with_plans(conn, now)
        for chunk in _chunks(citizens, self._tick_chunk):
            self._tick_or_isolate(conn, chunk, now)
            if stop is not None:
                self._drain(conn, stop)
        self._step(conn, "escalation", lambda: self._escalate(conn, now))
        self._step(conn, "the release of held alerts", lambda: self._release(conn, now))
        self._step(conn, "retraining", lambda: self.retrain_once(conn, now, stop))
        self.counters.ticks += 1

    def _escalate(self, conn: Conn, now: datetime) -> None:
        with conn.transaction():
            self.counters.escalations += service.escalate_due(conn, now)

    def _release(self, conn: Conn, now: datetime) -> None:
        with conn.transaction():
            self.counters.released += service.release_held(conn, None, now)

    def _tick_citizens(self, conn: Conn, citizens: Sequence[UUID], now: datetime) -> None:
        with conn.transaction():
            contexts = load_contexts(conn, citizens, now, cache=self._cache,
                                     configurations=self._configurations)
            self.counters.findings += self._record(conn, contexts, evaluate_tick, now)

    def _tick_or_isolate(self, conn: Conn, chunk: Sequence[UUID], now: datetime) -> None:
        if _attempt(conn, lambda: self._tick_citizens(conn, chunk, now)) is None:
            return
        for citizen in chunk:
            defect = _attempt(conn, partial(self._tick_citizens, conn, [citizen], now))
            if defect is not None:
                self._tick_failed(conn, citizen, defect, now)

    def _tick_failed(self, conn: Conn, citizen: UUID, exc: Exception, now: datetime) -> None:
        """Tell the citizen's care team that her time-driven rules could not run."""
        self.counters.skipped += 1
        error = f"{type(exc).__name__} at {_where(exc)}"
        if (citizen, error) not in self._tick_failures:  # once per process, not every tick
            self._tick_failures.add((citizen, error))
            log.error("the tick could not evaluate citizen %s (%s) at\n%s", citizen, error,
                      _traceback(exc))

        def alert() -> None:
            with conn.transaction():
                team = repo.care_teams(conn, [citizen]).get(citizen)
                service.record_findings(conn, citizen, team, [guard.tick_failed(error, now)],
                                        now)
        self._step(conn, "the evaluation_failed alert", alert)

    def _step(self, conn: Conn, name: str, run: Callable[[], object]) -> None:
        """Run one step of the tick; a defect in it is logged, not fatal to the others."""
        defect = _attempt(conn, run)
        if defect is not None:
            log.error("alert engine: %s failed (%s) at\n%s", name, type(defect).__name__,
                      _traceback(defect))

    def retrain_once(self, conn: Conn, now: datetime, stop: threading.Event | None = None) -> int:
        """Retrain one chunk of the citizens whose baselines are due, RETRAIN_STEP citizens a
        transaction (draining the queue between steps when given `stop`); how many. A citizen
        whose training or saving fails (a defect) keeps what she had and is left out until the
        engine restarts, so that she is not first in every chunk."""
        with conn.transaction():
            due = retraining.due(conn, now, self._retrain_every, self._retrain_chunk,
                                 skip=self._retrain_skip)
        retrained = 0
        for step in _chunks(due, RETRAIN_STEP):
            retrained += self._retrain_step(conn, step, now)
            if stop is not None:
                if stop.is_set():
                    break
                self._drain(conn, stop)
        return retrained

    def _retrain_step(self, conn: Conn, due: Sequence[UUID], now: datetime) -> int:
        trained: dict[UUID, dict[str, Baseline]] = {}
        if _attempt(conn, partial(self._retrain_into, trained, conn, due, now)) is not None:
            for citizen in due:  # training or saving failed: one at a time
                defect = _attempt(conn, partial(self._retrain_into, trained, conn, [citizen], now))
                if defect is not None:  # logged once: she is not retried until a restart
                    log.error("retraining the baselines of citizen %s failed (%s) at\n%s; she "
                              "keeps those she had", citizen, type(defect).__name__,
                              _traceback(defect))
        failed = [citizen for citizen in due if citizen not in trained]
        self._retrain_skip.update(failed)
        self.counters.skipped += len(failed)
        if self._baselines is not None:
            self._baselines.put(trained)
        self.counters.retrained += len(trained)
        return len(trained)

    def _retrain_into(self, trained: dict[UUID, dict[str, Baseline]], conn: Conn,
                      citizens: Sequence[UUID], now: datetime) -> None:
        with conn.transaction():
            trained.update(self._retrain(conn, citizens, now))

    def _retrain(self, conn: Conn, citizens: Sequence[UUID], now: datetime
                 ) -> dict[UUID, dict[str, Baseline]]:
        return retraining.retrain(conn, citizens, now, self._baseline_config)

    @staticmethod
    def _record(conn: Conn, contexts: dict[UUID, CitizenContext], evaluate: Evaluate,
                now: datetime) -> int:
        found = {citizen: evaluate(context, now) for citizen, context in contexts.items()}
        found = {citizen: findings for citizen, findings in found.items() if findings}
        if not found:
            return 0
        # A tick clears every condition that does not hold, for every citizen: a clear matters
        # only where an alert of its rule is active, which one query for the batch tells.
        clearing = [citizen for citizen, findings in found.items()
                    if all(f.clears for f in findings)]
        active = repo.active_rules(conn, clearing) if clearing else {}
        teams = repo.care_teams(conn, list(found))
        recorded = 0
        for citizen, findings in found.items():
            if citizen in clearing and not any(f.rule in active.get(citizen, ())
                                               for f in findings):
                continue
            service.record_findings(conn, citizen, teams.get(citizen), findings, now)
            recorded += len(findings)
        return recorded
