"""The alert lifecycle as pure functions: findings, acknowledgements, resolutions and the clock
turn one alert's state into its next state and the history entries that record the change.

open -> acknowledged -> resolved (or open -> resolved). One alert per citizen and rule is not
resolved at a time: a repeat raises `count`, a worsening raises `severity`. An alert on old data
says so and is never pushed or escalated; a held alert (raised during a pause) waits for its
release. Escalation starts when a red alert starts needing attention (a pushed change that
leaves it red and open) and stops at acknowledgement. Nothing here reads a clock or a database:
the service (alerts/service.py) loads and stores states, replay runs these in memory."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any
from uuid import UUID

from alerts.errors import AlertConflict, InvalidOutcome
from alerts.escalation import EscalationPolicy
from alerts.models import Finding, Severity

SYSTEM = "system"


class AlertStatus(StrEnum):
    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


class Action(StrEnum):
    OPENED = "opened"
    REPEATED = "repeated"
    WORSENED = "worsened"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"
    SELF_RESOLVED = "self_resolved"
    ESCALATED = "escalated"
    RELEASED = "released"


# What a nurse may record; 'condition_cleared' is the system's own outcome of a self-resolution.
USER_OUTCOMES = frozenset({"contacted_citizen", "changed_treatment", "not_actionable",
                           "device_problem", "other"})
CONDITION_CLEARED = "condition_cleared"


@dataclass(frozen=True)
class AlertState:
    """One alerts row. `id` is None until the repository has stored a new alert."""

    citizen_id: UUID
    rule: str
    severity: Severity
    state: AlertStatus
    count: int
    first_measured_at: datetime
    last_measured_at: datetime
    opened_at: datetime
    updated_at: datetime
    is_current: bool
    summary: str
    care_team_id: UUID | None = None
    id: int | None = None
    data_age_s: float | None = None
    delay_cause: str | None = None
    self_resolving: bool = False
    held: bool = False
    explanation: dict[str, Any] = field(default_factory=dict)
    threshold_id: int | None = None
    threshold_version: int | None = None
    # Steps taken so far, and when the next one is due (None: none scheduled).
    escalation_step: int = 0
    escalate_at: datetime | None = None
    acknowledged_at: datetime | None = None
    acknowledged_by: str | None = None
    resolved_at: datetime | None = None
    resolved_by: str | None = None
    outcome: str | None = None
    note: str | None = None

    @property
    def active(self) -> bool:
        """Not resolved: the one alert of its citizen and rule that findings feed."""
        return self.state is not AlertStatus.RESOLVED

    @property
    def escalatable(self) -> bool:
        """Red, on current data, not held and not acknowledged: nobody has it in hand."""
        return (self.state is AlertStatus.OPEN and self.severity is Severity.RED
                and self.is_current and not self.held)

    @property
    def armed(self) -> bool:
        """Escalation has started (a step is scheduled or has been taken)."""
        return self.escalate_at is not None or self.escalation_step > 0


AlertRow = AlertState


@dataclass(frozen=True)
class HistoryEntry:
    """One alert_history row before it is stored (the alert's state after the change)."""

    action: Action
    actor: str
    at: datetime
    severity: Severity
    state: AlertStatus
    # The change needs attention now: streams and webhooks push it.
    pushed: bool
    detail: dict[str, Any] = field(default_factory=dict)


Change = tuple[AlertState | None, tuple[HistoryEntry, ...]]
# A change to an alert that exists.
Transition = tuple[AlertState, tuple[HistoryEntry, ...]]


def apply_finding(state: AlertState | None, finding: Finding, now: datetime,
                  policy: EscalationPolicy, *, citizen_id: UUID,
                  care_team_id: UUID | None = None) -> Change:
    """The alert after `finding` (None when there is none) and the entries recording it;
    `state` is the citizen's active alert of the finding's rule, if any."""
    if state is not None and not state.active:
        state = None
    if finding.clears:
        return _clear(state, finding, now)
    if state is None:
        return _open(finding, now, policy, citizen_id, care_team_id)
    return _repeat(state, finding, now, policy)


def acknowledge(state: AlertState, actor: str, now: datetime, note: str | None = None) -> Transition:
    """open -> acknowledged; stops escalation. Anything else is an AlertConflict."""
    if state.state is not AlertStatus.OPEN:
        raise AlertConflict(f"alert {state.id} is {state.state}, only an open alert is acknowledged")
    new = replace(state, state=AlertStatus.ACKNOWLEDGED, acknowledged_at=now, acknowledged_by=actor,
                  note=note if note is not None else state.note, escalate_at=None, updated_at=now)
    return new, (_entry(new, Action.ACKNOWLEDGED, actor, now, False, _note(note)),)


def resolve(state: AlertState, actor: str, outcome: str, note: str | None, now: datetime) -> Transition:
    """open | acknowledged -> resolved with an outcome; a resolved alert is an AlertConflict."""
    if outcome not in USER_OUTCOMES:
        raise InvalidOutcome(f"outcome must be one of {sorted(USER_OUTCOMES)}")
    if not state.active:
        raise AlertConflict(f"alert {state.id} is already resolved")
    new = replace(state, state=AlertStatus.RESOLVED, resolved_at=now, resolved_by=actor,
                  outcome=outcome, note=note if note is not None else state.note,
                  escalate_at=None, updated_at=now)
    return new, (_entry(new, Action.RESOLVED, actor, now, False,
                        {"outcome": outcome, **_note(note)}),)


def escalate(state: AlertState, now: datetime, policy: EscalationPolicy) -> Transition:
    """Take every escalation step due by `now` (none before its time), scheduling the next."""
    entries: list[HistoryEntry] = []
    while state.escalatable and state.escalate_at is not None and now >= state.escalate_at:
        due = state.escalate_at
        index = state.escalation_step
        if index >= len(policy.steps):
            # The policy was shortened since the step was scheduled: the chain has ended.
            state = replace(state, escalate_at=None)
            break
        step = policy.steps[index]
        following = None
        if index + 1 < len(policy.steps):
            # Counted from the start of escalation, not from this (possibly late) step.
            following = due + timedelta(seconds=policy.steps[index + 1].after_s - step.after_s)
        state = replace(state, escalation_step=index + 1, escalate_at=following, updated_at=now)
        entries.append(_entry(state, Action.ESCALATED, SYSTEM, now, True, {
            "step": index + 1, "contact": step.contact.model_dump(), "after_s": step.after_s,
            "due_at": due.isoformat()}))
    return state, tuple(entries)


def release(state: AlertState, now: datetime, policy: EscalationPolicy) -> Transition:
    """Lift the hold of an alert raised during a pause that has ended."""
    if not state.held or not state.active:
        return state, ()
    new = replace(state, held=False, updated_at=now)
    pushed = new.is_current and new.state is AlertStatus.OPEN
    new = _arm(new, now, policy) if pushed else new
    return new, (_entry(new, Action.RELEASED, SYSTEM, now, pushed, {"reason": "pause_ended"}),)


def _clear(state: AlertState | None, finding: Finding, now: datetime) -> Change:
    if state is None or not state.self_resolving:
        return state, ()
    new = replace(state, state=AlertStatus.RESOLVED, resolved_at=now, resolved_by=SYSTEM,
                  outcome=CONDITION_CLEARED, escalate_at=None, updated_at=now)
    return new, (_entry(new, Action.SELF_RESOLVED, SYSTEM, now, False, _about(finding)),)


def _open(finding: Finding, now: datetime, policy: EscalationPolicy, citizen_id: UUID,
          care_team_id: UUID | None) -> Transition:
    alert = AlertState(
        citizen_id=citizen_id, care_team_id=care_team_id, rule=finding.rule,
        severity=finding.severity, state=AlertStatus.OPEN, count=1,
        first_measured_at=finding.measured_at, last_measured_at=finding.measured_at,
        opened_at=now, updated_at=now, is_current=finding.is_current, summary=finding.summary,
        data_age_s=finding.data_age_s, delay_cause=finding.delay_cause,
        self_resolving=finding.self_resolving, held=finding.held,
        explanation=dict(finding.explanation), threshold_id=finding.threshold_id,
        threshold_version=finding.threshold_version)
    pushed = alert.is_current and not alert.held
    if pushed:
        alert = _arm(alert, now, policy)
    return alert, (_entry(alert, Action.OPENED, SYSTEM, now, pushed, _about(finding)),)


def _repeat(state: AlertState, finding: Finding, now: datetime, policy: EscalationPolicy) -> Transition:
    worsened = finding.severity.rank > state.severity.rank
    new = replace(
        state, count=state.count + 1, updated_at=now,
        last_measured_at=max(state.last_measured_at, finding.measured_at),
        severity=finding.severity if worsened else state.severity,
        is_current=state.is_current or finding.is_current,
        # A finding outside any pause shows the pause is over; a hold never hides an alert
        # that has already been pushed.
        held=state.held and finding.held)
    if finding.is_current or not state.is_current:
        new = replace(new, data_age_s=finding.data_age_s, delay_cause=finding.delay_cause)
    if worsened or (finding.severity is state.severity
                    and finding.measured_at >= state.last_measured_at):
        new = replace(new, summary=finding.summary, explanation=dict(finding.explanation),
                      threshold_id=finding.threshold_id, threshold_version=finding.threshold_version)
    visible = finding.is_current and not new.held
    if worsened:
        action, pushed, detail = Action.WORSENED, visible, {"from": state.severity.value}
    elif visible and state.state is AlertStatus.OPEN and (
            not state.is_current or state.held
            or (new.severity is Severity.RED and not state.armed)):
        # It needs attention for the first time: current data for an alert on old data, the end
        # of a pause, or the first current data under a red that rested on old data.
        action, pushed, detail = Action.RELEASED, True, {"reason": _release_reason(state)}
    elif state.held and not new.held:
        action, pushed, detail = Action.RELEASED, False, {"reason": _release_reason(state)}
    else:
        action, pushed, detail = Action.REPEATED, False, {}
    if pushed:
        new = _arm(new, now, policy)
    return new, (_entry(new, action, SYSTEM, now, pushed, {**_about(finding), **detail}),)


def _release_reason(state: AlertState) -> str:
    return "pause_ended" if state.held else "current_data"


def _arm(state: AlertState, now: datetime, policy: EscalationPolicy) -> AlertState:
    """Start escalation of an alert that now needs attention, unless it has started already."""
    if not state.escalatable or state.armed:
        return state
    return replace(state, escalate_at=now + timedelta(seconds=policy.steps[0].after_s))


def _entry(state: AlertState, action: Action, actor: str, now: datetime, pushed: bool,
           detail: dict[str, Any]) -> HistoryEntry:
    return HistoryEntry(action=action, actor=actor, at=now, severity=state.severity,
                        state=state.state, pushed=pushed, detail=detail)


def _about(finding: Finding) -> dict[str, Any]:
    detail: dict[str, Any] = {"occurrence": finding.occurrence, "severity": finding.severity.value,
                              "measured_at": finding.measured_at.isoformat(),
                              "summary": finding.summary}
    if not finding.is_current:
        detail.update(old_data=True, data_age_s=finding.data_age_s, delay_cause=finding.delay_cause)
    if finding.held:
        detail["held"] = True
    return detail


def _note(note: str | None) -> dict[str, Any]:
    return {} if note is None else {"note": note}
