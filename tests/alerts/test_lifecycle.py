"""The pure alert lifecycle: a state machine over findings, acknowledgements, resolutions,
releases and the clock, with examples of each rule and properties of repeats and old data."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from alerts import lifecycle
from alerts.errors import AlertConflict, InvalidOutcome
from alerts.escalation import DEFAULT_POLICY, Contact, EscalationPolicy, EscalationStep
from alerts.lifecycle import Action, AlertState, AlertStatus
from alerts.models import Finding, Severity
from tests.alerts.conftest import NOW, finding

CITIZEN = uuid.uuid4()
TEAM = uuid.uuid4()
POLICY = DEFAULT_POLICY
FIRST = timedelta(seconds=POLICY.steps[0].after_s)


def apply(state: AlertState | None, found: Finding, at: datetime = NOW,
          policy: EscalationPolicy = POLICY) -> lifecycle.Change:
    return lifecycle.apply_finding(state, found, at, policy, citizen_id=CITIZEN, care_team_id=TEAM)


def opened(found: Finding | None = None, at: datetime = NOW) -> AlertState:
    state, _ = apply(None, found or finding(), at)
    assert state is not None
    return replace(state, id=1)


# --- examples of each rule -------------------------------------------------------------------

def test_a_first_finding_opens_a_pushed_alert_that_escalates_when_red() -> None:
    state, (entry,) = apply(None, finding(severity=Severity.RED))
    assert state is not None and state.state is AlertStatus.OPEN and state.count == 1
    assert entry.action is Action.OPENED and entry.pushed and entry.actor == "system"
    assert state.escalate_at == NOW + FIRST


def test_a_yellow_alert_does_not_escalate() -> None:
    state, (entry,) = apply(None, finding(severity=Severity.YELLOW))
    assert state is not None and entry.pushed and state.escalate_at is None


def test_a_repeat_counts_and_is_not_pushed() -> None:
    first = opened(finding(severity=Severity.YELLOW))
    later = NOW + timedelta(minutes=5)
    state, (entry,) = apply(first, finding(severity=Severity.YELLOW, measured_at=later), later)
    assert state is not None and state.count == 2 and state.last_measured_at == later
    assert state.first_measured_at == NOW and state.opened_at == NOW
    assert entry.action is Action.REPEATED and not entry.pushed


def test_a_worsening_raises_severity_is_pushed_and_starts_escalation() -> None:
    first = opened(finding(severity=Severity.YELLOW))
    later = NOW + timedelta(minutes=5)
    state, (entry,) = apply(first, finding(severity=Severity.RED, measured_at=later), later)
    assert state is not None and state.severity is Severity.RED
    assert entry.action is Action.WORSENED and entry.pushed and entry.detail["from"] == "yellow"
    assert state.escalate_at == later + FIRST


def test_a_milder_finding_never_lowers_severity() -> None:
    state, (entry,) = apply(opened(), finding(severity=Severity.YELLOW))
    assert state is not None and state.severity is Severity.RED and entry.action is Action.REPEATED


def test_a_finding_on_an_acknowledged_alert_repeats_it_without_reopening() -> None:
    acked, _ = lifecycle.acknowledge(opened(), "nurse-1", NOW, None)
    state, (entry,) = apply(acked, finding())
    assert state is not None and state.state is AlertStatus.ACKNOWLEDGED and state.count == 2
    assert entry.action is Action.REPEATED and state.escalate_at is None


def test_clears_resolves_a_self_resolving_alert() -> None:
    first = opened(finding(rule="device_offline", self_resolving=True))
    state, (entry,) = apply(first, finding(rule="device_offline", clears=True))
    assert state is not None and state.state is AlertStatus.RESOLVED
    assert state.outcome == "condition_cleared" and state.resolved_by == "system"
    assert entry.action is Action.SELF_RESOLVED and not entry.pushed and state.escalate_at is None


def test_clears_leaves_other_alerts_and_raises_nothing() -> None:
    first = opened()
    assert apply(first, finding(clears=True)) == (first, ())
    assert apply(None, finding(rule="device_offline", clears=True)) == (None, ())


def test_after_resolution_a_finding_opens_a_new_alert() -> None:
    done, _ = lifecycle.resolve(opened(), "nurse-1", "not_actionable", None, NOW)
    state, (entry,) = apply(done, finding())
    assert state is not None and state.id is None and entry.action is Action.OPENED


def test_old_data_is_recorded_as_such_never_pushed_or_escalated() -> None:
    old = finding(is_current=False, data_age_s=7200.0, delay_cause="device_offline",
                  measured_at=NOW - timedelta(hours=2))
    state, (entry,) = apply(None, old)
    assert state is not None and not state.is_current and not entry.pushed
    assert entry.detail["old_data"] and state.escalate_at is None
    later = NOW + timedelta(days=1)
    assert lifecycle.escalate(state, later, POLICY) == (state, ())


def test_current_data_after_old_data_pushes_the_alert() -> None:
    old = opened(finding(is_current=False, measured_at=NOW - timedelta(hours=2)))
    later = NOW + timedelta(minutes=1)
    state, (entry,) = apply(old, finding(measured_at=later), later)
    assert state is not None and state.is_current
    assert entry.action is Action.RELEASED and entry.pushed and entry.detail["reason"] == "current_data"
    assert state.escalate_at == later + FIRST


def test_a_held_alert_is_neither_pushed_nor_escalated_until_released() -> None:
    state, (entry,) = apply(None, finding(held=True))
    assert state is not None and state.held and not entry.pushed and state.escalate_at is None
    later = NOW + timedelta(hours=3)
    assert lifecycle.escalate(state, later, POLICY) == (state, ())
    released, (entry,) = lifecycle.release(state, later, POLICY)
    assert entry.action is Action.RELEASED and entry.pushed and not released.held
    assert released.escalate_at == later + FIRST


def test_a_finding_after_the_pause_releases_a_held_alert() -> None:
    held = opened(finding(held=True))
    state, (entry,) = apply(held, finding())
    assert state is not None and not state.held
    assert entry.action is Action.RELEASED and entry.pushed and entry.detail["reason"] == "pause_ended"


def test_acknowledge_and_resolve_transitions_and_conflicts() -> None:
    first = opened()
    acked, (entry,) = lifecycle.acknowledge(first, "nurse-1", NOW, "called her")
    assert acked.state is AlertStatus.ACKNOWLEDGED and acked.acknowledged_by == "nurse-1"
    assert entry.actor == "nurse-1" and entry.detail == {"note": "called her"}
    assert acked.escalate_at is None
    with pytest.raises(AlertConflict):
        lifecycle.acknowledge(acked, "nurse-2", NOW)
    done, (entry,) = lifecycle.resolve(acked, "nurse-1", "contacted_citizen", None, NOW)
    assert done.state is AlertStatus.RESOLVED and done.outcome == "contacted_citizen"
    with pytest.raises(AlertConflict):
        lifecycle.resolve(done, "nurse-1", "other", None, NOW)
    with pytest.raises(AlertConflict):
        lifecycle.acknowledge(done, "nurse-1", NOW)
    with pytest.raises(InvalidOutcome):
        lifecycle.resolve(first, "nurse-1", "condition_cleared", None, NOW)


# --- properties ------------------------------------------------------------------------------

severities = st.sampled_from([Severity.YELLOW, Severity.RED])


@given(st.lists(severities, min_size=1, max_size=30))
def test_n_repeats_make_one_open_alert_with_count_n(series: list[Severity]) -> None:
    state: AlertState | None = None
    for index, severity in enumerate(series):
        at = NOW + timedelta(minutes=index)
        state, entries = apply(state, finding(severity=severity, measured_at=at,
                                              occurrence=f"r:d:m:{index}"), at)
        assert state is not None and len(entries) == 1
        state = replace(state, id=state.id or 1)
    assert state is not None and state.count == len(series) and state.active
    assert state.severity is max(series, key=lambda s: s.rank)


@given(st.lists(st.tuples(severities, st.booleans()), min_size=1, max_size=20),
       st.integers(min_value=0, max_value=10 * 86400))
def test_late_data_is_never_current_pushed_or_escalated(series: list[tuple[Severity, bool]],
                                                        wait_s: int) -> None:
    state: AlertState | None = None
    for index, (severity, held) in enumerate(series):
        at = NOW + timedelta(minutes=index)
        state, entries = apply(state, finding(severity=severity, held=held, is_current=False,
                                              measured_at=at - timedelta(hours=5)), at)
        assert state is not None and not state.is_current
        assert not any(entry.pushed for entry in entries)
        state = replace(state, id=1)
    assert state is not None
    later = NOW + timedelta(seconds=wait_s)
    assert lifecycle.escalate(state, later, POLICY)[1] == ()
    assert not any(entry.pushed for entry in lifecycle.release(state, later, POLICY)[1])


# --- the state machine -----------------------------------------------------------------------

RULES = ("threshold:spo2", "device_offline")  # the second resolves itself


class Lifecycle(RuleBasedStateMachine):
    """Findings of random severity, currency and hold on two rules, acknowledgements,
    resolutions, releases and a clock that moves (also exactly onto due times)."""

    @initialize(gaps=st.lists(st.integers(min_value=1, max_value=1200), min_size=1, max_size=4))
    def start(self, gaps: list[int]) -> None:
        after = [sum(gaps[: i + 1]) for i in range(len(gaps))]
        self.policy = EscalationPolicy(steps=tuple(
            EscalationStep(after_s=s, contact=Contact(kind="role", target=f"r{i}"))
            for i, s in enumerate(after)))
        self.now = NOW
        self.alerts: list[AlertState] = []  # every alert ever, resolved ones included
        self.counts: dict[int, int] = {}
        # When each alert's escalation clock started (the model of when steps are due).
        self.attention: dict[int, datetime] = {}
        self.next_id = 1

    def latest(self, rule_name: str) -> AlertState | None:
        mine = [a for a in self.alerts if a.rule == rule_name]
        return mine[-1] if mine else None

    def store(self, state: AlertState) -> AlertState:
        if state.id is None:
            state = replace(state, id=self.next_id)
            self.next_id += 1
            self.alerts.append(state)
        else:
            self.alerts = [state if a.id == state.id else a for a in self.alerts]
        return state

    @rule(rule_index=st.integers(0, 1), severity=severities, current=st.booleans(),
          held=st.booleans(), clears=st.booleans())
    def find(self, rule_index: int, severity: Severity, current: bool, held: bool,
             clears: bool) -> None:
        name = RULES[rule_index]
        before = self.latest(name)
        measured = self.now - (timedelta(seconds=30) if current else timedelta(hours=3))
        found = finding(rule=name, severity=severity, is_current=current, held=held,
                        clears=clears, self_resolving=name == "device_offline",
                        measured_at=measured, occurrence=f"o{self.next_id}-{self.now}")
        after, entries = lifecycle.apply_finding(before, found, self.now, self.policy,
                                                 citizen_id=CITIZEN)
        if clears and (before is None or not before.active or not before.self_resolving):
            assert entries == ()
            return
        assert after is not None and len(entries) == 1
        (entry,) = entries
        if entry.pushed:
            assert current and not after.held, "old or held data was pushed"
        if before is None or not before.active:
            assert after.id is None and entry.action is Action.OPENED and after.count == 1
        was_armed = before is not None and before.active and before.armed
        after = self.store(after)
        assert after.id is not None
        if not clears:
            self.counts[after.id] = self.counts.get(after.id, 0) + 1
        if entry.pushed and after.escalatable and not was_armed:
            # "escalate_at = opened/worsened time + the first step's after_s"
            assert after.escalate_at == self.now + timedelta(seconds=self.policy.steps[0].after_s)
            self.attention[after.id] = self.now
        if current and not held and after.escalatable:
            assert after.armed, "a red open alert on current data has no escalation"

    @rule(rule_index=st.integers(0, 1), note=st.none() | st.text(max_size=5))
    def acknowledge(self, rule_index: int, note: str | None) -> None:
        before = self.latest(RULES[rule_index])
        if before is None:
            return
        if before.state is not AlertStatus.OPEN:
            with pytest.raises(AlertConflict):
                lifecycle.acknowledge(before, "nurse", self.now, note)
            return
        after, (entry,) = lifecycle.acknowledge(before, "nurse", self.now, note)
        assert entry.actor == "nurse" and after.escalate_at is None
        self.store(after)

    @rule(rule_index=st.integers(0, 1),
          outcome=st.sampled_from(sorted(lifecycle.USER_OUTCOMES)))
    def resolve(self, rule_index: int, outcome: str) -> None:
        before = self.latest(RULES[rule_index])
        if before is None:
            return
        if not before.active:
            with pytest.raises(AlertConflict):
                lifecycle.resolve(before, "nurse", outcome, None, self.now)
            return
        after, _ = lifecycle.resolve(before, "nurse", outcome, None, self.now)
        self.store(after)

    @rule(rule_index=st.integers(0, 1))
    def release(self, rule_index: int) -> None:
        before = self.latest(RULES[rule_index])
        if before is None:
            return
        was_armed = before.armed
        after, entries = lifecycle.release(before, self.now, self.policy)
        if not before.held or not before.active:
            assert entries == ()
            return
        after = self.store(after)
        if entries[0].pushed and after.escalatable and not was_armed:
            assert after.id is not None
            self.attention[after.id] = self.now

    @rule(seconds=st.integers(min_value=1, max_value=3600))
    def advance(self, seconds: int) -> None:
        self.now += timedelta(seconds=seconds)

    @precondition(lambda self: any(a.escalate_at is not None for a in self.alerts))
    @rule(offset=st.sampled_from([-1, 0, 1]), pick=st.integers(0, 10))
    def advance_to_a_due_time(self, offset: int, pick: int) -> None:
        due = sorted(a.escalate_at for a in self.alerts if a.escalate_at is not None)
        target = due[pick % len(due)] + timedelta(microseconds=offset)
        if target > self.now:
            self.now = target

    @rule()
    def escalate(self) -> None:
        for before in list(self.alerts):
            after, entries = lifecycle.escalate(before, self.now, self.policy)
            due_before = before.escalate_at
            if not entries:
                assert not (before.escalatable and due_before is not None
                            and due_before <= self.now), "a due step was not taken"
                continue
            assert before.escalatable, "an acknowledged, resolved, held or old alert escalated"
            assert before.id is not None
            started = self.attention[before.id]
            for step_index, entry in zip(range(before.escalation_step, after.escalation_step),
                                         entries, strict=True):
                step = self.policy.steps[step_index]
                configured = started + timedelta(seconds=step.after_s)
                assert entry.detail["due_at"] == configured.isoformat()
                assert configured <= self.now, "escalated before the configured time"
                assert entry.action is Action.ESCALATED and entry.pushed
                assert entry.detail["contact"] == step.contact.model_dump()
            assert after.escalate_at is None or after.escalate_at > self.now
            self.store(after)

    @invariant()
    def one_active_alert_per_rule(self) -> None:
        for name in RULES:
            assert sum(1 for a in self.alerts if a.rule == name and a.active) <= 1

    @invariant()
    def states_are_consistent(self) -> None:
        for a in self.alerts:
            assert a.state in (AlertStatus.OPEN, AlertStatus.ACKNOWLEDGED, AlertStatus.RESOLVED)
            assert (a.state is AlertStatus.RESOLVED) == (a.resolved_at is not None)
            assert a.state is AlertStatus.OPEN or a.acknowledged_at is not None \
                or a.state is AlertStatus.RESOLVED
            if a.state is not AlertStatus.OPEN:
                assert a.escalate_at is None, "an acknowledged or resolved alert may escalate"
            if not a.is_current or a.held:
                assert not a.armed, "an old-data or held alert escalates"
            assert a.id is not None and a.count == self.counts.get(a.id, 0)


Lifecycle.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
TestLifecycle = Lifecycle.TestCase
