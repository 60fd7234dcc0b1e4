"""Replay and what-if: the production rules and the pure lifecycle over a stored period, as if
it were live. The clock steps through the measured times (and ticks every `tick_s` of measured
time for the time-driven rules, escalation and releases); each step sees what was measured up
to it, with the plans and thresholds in force then, or with proposed bands. Findings and
alerts go to the run's own result set (replay_findings, replay_alerts): no alert history, no
outbox, no NOTIFY, so a replay reaches nobody.

What is not replayed: device status is kept only as it is now, not as it was. A replay knows
the devices each citizen had, with no status: readings and events still count as contact
(so "not measuring" is replayed), but the rules that rest on status messages and dead letters
(device offline, battery low, invalid payloads) are left out of a replay.

Personal baselines are retrained every `retrain_every` of measured time from what was measured
before, leaving out pauses and the replay's own alerts (alerts/baselines.py), as `telecare alerts`
retrains them live; the history is loaded from one training window before the period. Nobody
resolves a replay's alerts unless `resolve_after` is given: then a simulated nurse resolves each
alert that long after it opened (outcome "other"), so that a later episode can raise a new one.

Each citizen's data is loaded once per chunk of citizens and every step's context is cut from
it in memory (the same build_context the live engine uses)."""

from __future__ import annotations

import json
import logging
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import psycopg

from alerts import replay_repository as repo
from alerts.baselines import AlertSpan, train_from_history
from alerts.context import (
    CitizenHistory,
    NewItems,
    build_context,
    load_histories,
    proposed_thresholds,
)
from alerts.escalation import DEFAULT_POLICY, EscalationPolicy, parse_policy
from alerts.lifecycle import AlertState, apply_finding, escalate, release, resolve
from alerts.models import Bands, DeviceState, EventView, Finding, ReadingView, Threshold
from alerts.retraining import DEFAULT_EVERY
from alerts.rules import LOOKBACK, evaluate_new, evaluate_tick
from anomaly.baseline import Baseline, BaselineConfig

log = logging.getLogger(__name__)

Conn = psycopg.Connection[Any]
CHUNK = 200  # citizens loaded at once
SIMULATED_NURSE = "resolved by the replay's simulated nurse"
# Rules that rest on device status and dead letters, whose history is not stored.
STATUS_RULES = frozenset({"device_offline", "battery_low", "invalid_payloads"})


@dataclass(frozen=True)
class ReplayRequest:
    """A period [start, end), whom (empty: everyone with data or a plan in it), proposed bands
    by metric instead of those in force, and the tick of the time-driven rules (None: none)."""

    start: datetime
    end: datetime
    citizen_ids: tuple[UUID, ...] = ()
    proposed: Mapping[str, Bands] | None = None
    tick_s: float | None = 900.0
    requested_by: str = "system"
    baselines: BaselineConfig = field(default_factory=BaselineConfig)
    retrain_every: timedelta = DEFAULT_EVERY
    resolve_after: timedelta | None = None

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("the period's times need a UTC offset")
        if not self.start < self.end:
            raise ValueError("the period must start before it ends")


@dataclass
class ReplayResult:
    run_id: int
    citizens: int = 0
    items: int = 0
    findings: int = 0
    alerts: list[AlertState] = field(default_factory=list)
    reminders: int = 0

    def summary(self) -> dict[str, Any]:
        """Counts for the command line: alerts by rule and severity, and screen reminders."""
        by_rule = Counter(f"{a.rule} {a.severity.value}" for a in self.alerts)
        return {"run_id": self.run_id, "citizens": self.citizens, "items": self.items,
                "findings": self.findings, "alerts": len(self.alerts),
                "by_rule": dict(sorted(by_rule.items())), "reminders": self.reminders}


def parse_proposed(text: str) -> dict[str, Bands]:
    """{"metric": {"alert_low": .., ...}} from the command line; ValueError when invalid."""
    raw = json.loads(text)
    if not isinstance(raw, dict):
        raise ValueError("proposed thresholds are a JSON object by metric")
    return {str(metric): Bands.model_validate(bands) for metric, bands in raw.items()}


@dataclass
class _Timeline:
    """One citizen's replay: the lifecycle's alerts in memory and the findings that fed them."""

    citizen: UUID
    care_team: UUID | None
    policy: EscalationPolicy
    alerts: list[AlertState] = field(default_factory=list)
    active: dict[str, int] = field(default_factory=dict)  # rule -> index in alerts
    seen: set[tuple[str, str]] = field(default_factory=set)
    findings: list[dict[str, Any]] = field(default_factory=list)
    reminders: int = 0  # the screen reminders the service would have sent

    def apply(self, findings: Sequence[Finding], now: datetime) -> None:
        """What the service does with findings, in memory: a finding seen before counts once."""
        for finding in findings:
            if finding.rule in STATUS_RULES:
                continue
            key = (finding.rule, finding.occurrence)
            if key in self.seen:
                continue
            self.seen.add(key)
            if finding.reminder:
                if finding.is_current and not finding.held:
                    self.reminders += 1
                continue
            index = self.active.get(finding.rule)
            state = self.alerts[index] if index is not None else None
            new, entries = apply_finding(state, finding, now, self.policy,
                                         citizen_id=self.citizen, care_team_id=self.care_team)
            if new is None or not entries:
                continue  # a clearing finding with nothing to clear
            if index is None:
                index = len(self.alerts)
                self.alerts.append(new)
            else:
                self.alerts[index] = new
            if new.active:
                self.active[finding.rule] = index
            else:
                self.active.pop(finding.rule, None)
            self.findings.append(_finding_row(self.citizen, finding, now, index))

    def tick(self, now: datetime, paused: Callable[[datetime], bool],
             resolve_after: timedelta | None) -> None:
        """Escalation due by now; the release of held alerts once no pause covers now; the
        simulated nurse's resolution `resolve_after` an alert opened."""
        for rule, index in list(self.active.items()):
            state = self.alerts[index]
            if state.held and not paused(now):
                state, _ = release(state, now, self.policy)
            state, _ = escalate(state, now, self.policy)
            if resolve_after is not None and state.active and now >= state.opened_at + resolve_after:
                state, _ = resolve(state, "replay", "other", SIMULATED_NURSE, now)
            self.alerts[index] = state
            if not state.active:
                self.active.pop(rule, None)


def _finding_row(citizen: UUID, finding: Finding, now: datetime, alert: int) -> dict[str, Any]:
    return {"citizen_id": citizen, "rule": finding.rule, "occurrence": finding.occurrence,
            "alert_seq": alert, "severity": finding.severity.value,
            "measured_at": finding.measured_at, "evaluated_at": now,
            "is_current": finding.is_current, "data_age_s": finding.data_age_s,
            "delay_cause": finding.delay_cause, "threshold_id": finding.threshold_id,
            "threshold_version": finding.threshold_version, "held": finding.held,
            "clears": finding.clears, "summary": finding.summary,
            "explanation": dict(finding.explanation)}


def _alert_row(seq: int, alert: AlertState) -> dict[str, Any]:
    return {"seq": seq, "citizen_id": alert.citizen_id, "rule": alert.rule,
            "severity": alert.severity.value, "state": alert.state.value, "count": alert.count,
            "first_measured_at": alert.first_measured_at,
            "last_measured_at": alert.last_measured_at, "opened_at": alert.opened_at,
            "updated_at": alert.updated_at, "is_current": alert.is_current, "held": alert.held,
            "threshold_id": alert.threshold_id, "threshold_version": alert.threshold_version,
            "escalation_step": alert.escalation_step, "resolved_at": alert.resolved_at,
            "outcome": alert.outcome, "summary": alert.summary,
            "explanation": dict(alert.explanation)}


def _steps(history: CitizenHistory, start: datetime, end: datetime
           ) -> dict[datetime, NewItems]:
    """The citizen's items measured in [start, end), grouped by measured time: what one
    message (one measurement of several metrics) brings the live engine at once."""
    steps: dict[datetime, NewItems] = defaultdict(NewItems)
    reading: ReadingView
    for reading in history.readings_within(start, end):
        if reading.measured_at < end:
            steps[reading.measured_at].readings.append(reading)
    event: EventView
    for event in history.events_within(start, end):
        if event.measured_at < end:
            steps[event.measured_at].events.append(event)
    return steps


def _ticks(start: datetime, end: datetime, tick_s: float | None) -> list[datetime]:
    if tick_s is None:
        return []
    step = timedelta(seconds=tick_s)
    count = int((end - start) / step)
    return [start + i * step for i in range(count + 1) if start + i * step < end]


def _train(timeline: _Timeline, history: CitizenHistory, now: datetime,
           config: BaselineConfig) -> dict[str, Baseline]:
    """The citizen's baselines as a retraining at `now` would give them."""
    spans = [AlertSpan(a.rule, a.first_measured_at, a.last_measured_at, a.resolved_at, a.outcome)
             for a in timeline.alerts]
    return train_from_history(history, history.plans_at(now), spans, history.pauses, now, config)


def _replay_citizen(timeline: _Timeline, history: CitizenHistory, request: ReplayRequest,
                    proposed: Mapping[str, Threshold] | None) -> int:
    """Step one citizen through the period; returns how many items were replayed."""
    steps = _steps(history, request.start, request.end)
    ticks = set(_ticks(request.start, request.end, request.tick_s))
    baselines: dict[str, Baseline] = {}
    retrain_at = request.start
    for now in sorted(steps.keys() | ticks):
        if now >= retrain_at:
            baselines = _train(timeline, history, now, request.baselines)
            while retrain_at <= now:
                retrain_at += request.retrain_every
        items = steps.get(now)
        if items is not None:
            context = build_context(timeline.citizen, history, now, items, proposed=proposed,
                                    baselines=baselines)
            timeline.apply(evaluate_new(context, now), now)
        if now in ticks:
            context = build_context(timeline.citizen, history, now, proposed=proposed,
                                    baselines=baselines)
            if context.plans:
                timeline.apply(evaluate_tick(context, now), now)
            timeline.tick(now, context.paused_at, request.resolve_after)
    return sum(len(s.readings) + len(s.events) for s in steps.values())


def run_replay(conn: Conn, request: ReplayRequest, started_at: datetime,
               finished: Callable[[], datetime] | None = None) -> ReplayResult:
    """Replay `request` on `conn` into a new run's result set (the caller commits)."""
    citizens = list(request.citizen_ids) or repo.citizens_in_period(conn, request.start,
                                                                    request.end)
    proposed_json = ({metric: bands.model_dump() for metric, bands in request.proposed.items()}
                     if request.proposed is not None else None)
    run_id = repo.insert_run(conn, request.start, request.end, request.citizen_ids or None,
                             proposed_json, request.tick_s, request.requested_by,
                             started_at)
    result = ReplayResult(run_id=run_id, citizens=len(citizens))
    proposed = proposed_thresholds(request.proposed) if request.proposed is not None else None
    alert_rows: list[dict[str, Any]] = []
    for first in range(0, len(citizens), CHUNK):
        chunk = citizens[first:first + CHUNK]
        teams = {row["citizen_id"]: row for row in repo.policies(conn, chunk)}
        # The rules' look-back, and a training window for the baselines.
        before = max(LOOKBACK, request.baselines.training_window)
        windows = {citizen: (request.start - before, request.end) for citizen in chunk}
        histories = load_histories(conn, windows, None, with_devices=False)
        for row in repo.paired_devices(conn, chunk, request.start, request.end):
            histories[row["citizen_id"]].devices.append(DeviceState(
                device_id=row["device_id"], kind=row["kind"], online=None,
                status_received_at=None, last_seen_at=None, battery_pct=None))
        for citizen in chunk:
            team = teams.get(citizen, {})
            steps = team.get("steps")
            timeline = _Timeline(citizen, team.get("care_team_id"),
                                 parse_policy(steps) if steps else DEFAULT_POLICY)
            result.items += _replay_citizen(timeline, histories[citizen], request, proposed)
            result.reminders += timeline.reminders
            offset = len(result.alerts)
            findings = [{**row, "run_id": run_id, "alert_seq": row["alert_seq"] + offset}
                        for row in timeline.findings]
            repo.insert_findings(conn, findings)
            result.findings += len(findings)
            alert_rows.extend({**_alert_row(offset + i, alert), "run_id": run_id}
                              for i, alert in enumerate(timeline.alerts))
            result.alerts.extend(timeline.alerts)
    repo.insert_alerts(conn, alert_rows)
    repo.finish_run(conn, run_id, "done", (finished or (lambda: started_at))(), result.citizens,
                    result.items, result.findings, len(result.alerts))
    log.info("replay run %d: %d citizens, %d items, %d findings, %d alerts", run_id,
             result.citizens, result.items, result.findings, len(result.alerts))
    return result


def replay(dsn: str, request: ReplayRequest, clock: Callable[[], datetime]) -> ReplayResult:
    """Replay on a connection of its own, committed as one transaction."""
    with psycopg.connect(dsn, connect_timeout=5) as conn:
        with conn.transaction():
            return run_replay(conn, request, clock(), clock)
