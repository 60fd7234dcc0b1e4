"""Escalation policies (validation, the default chain) and the timing of steps."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from alerts import lifecycle
from alerts.errors import InvalidPolicy
from alerts.escalation import DEFAULT_POLICY, Contact, EscalationPolicy, EscalationStep, parse_policy
from alerts.lifecycle import Action, AlertState
from alerts.models import Severity
from tests.alerts.conftest import NOW, finding

CITIZEN = uuid.uuid4()


def red_alert(policy: EscalationPolicy) -> AlertState:
    state, _ = lifecycle.apply_finding(None, finding(severity=Severity.RED), NOW, policy,
                                       citizen_id=CITIZEN)
    assert state is not None
    return state


def test_the_default_chain_is_nurse_on_duty_then_on_call_nurse_then_team_lead() -> None:
    assert [step.contact.target for step in DEFAULT_POLICY.steps] == [
        "nurse_on_duty", "on_call_nurse", "team_lead"]
    assert all(step.contact.kind == "role" for step in DEFAULT_POLICY.steps)


@pytest.mark.parametrize("steps, message", [
    ([], "at least 1"),
    ([{"after_s": 0, "contact": {"kind": "role", "target": "x"}}], "greater than 0"),
    ([{"after_s": 60, "contact": {"kind": "pager", "target": "x"}}], "kind"),
    ([{"after_s": 60, "contact": {"kind": "webhook", "target": "abc"}}], "webhook's id"),
    ([{"after_s": 60, "contact": {"kind": "role", "target": "a"}},
      {"after_s": 60, "contact": {"kind": "role", "target": "b"}}], "increase strictly"),
    ([{"after_s": 60, "contact": {"kind": "role", "target": "a"}, "extra": 1}], "extra"),
    ("not a list", "steps"),
])
def test_invalid_policies_are_refused(steps: object, message: str) -> None:
    with pytest.raises(InvalidPolicy, match=message):
        parse_policy(steps)


def test_a_policy_round_trips_through_its_json() -> None:
    policy = EscalationPolicy(steps=(
        EscalationStep(after_s=120, contact=Contact(kind="webhook", target="7")),
        EscalationStep(after_s=600, contact=Contact(kind="stream", target="team"))))
    assert parse_policy(policy.as_json()) == policy


def test_each_step_at_its_time_and_none_before() -> None:
    state = red_alert(DEFAULT_POLICY)
    first = NOW + timedelta(seconds=300)
    assert lifecycle.escalate(state, first - timedelta(microseconds=1), DEFAULT_POLICY) == (state, ())
    state, (entry,) = lifecycle.escalate(state, first, DEFAULT_POLICY)
    assert entry.action is Action.ESCALATED and entry.pushed
    assert entry.detail["contact"] == {"kind": "role", "target": "nurse_on_duty"}
    assert entry.detail["step"] == 1 and state.escalation_step == 1
    # The next step counts from the start, not from a late tick.
    assert state.escalate_at == NOW + timedelta(seconds=900)


def test_a_late_tick_takes_every_overdue_step_and_the_chain_ends() -> None:
    state = red_alert(DEFAULT_POLICY)
    state, entries = lifecycle.escalate(state, NOW + timedelta(hours=2), DEFAULT_POLICY)
    assert [e.detail["contact"]["target"] for e in entries] == [
        "nurse_on_duty", "on_call_nurse", "team_lead"]
    assert state.escalate_at is None and state.escalation_step == 3
    assert lifecycle.escalate(state, NOW + timedelta(days=1), DEFAULT_POLICY)[1] == ()


def test_acknowledgement_stops_escalation() -> None:
    state = red_alert(DEFAULT_POLICY)
    state, _ = lifecycle.escalate(state, NOW + timedelta(seconds=300), DEFAULT_POLICY)
    acked, _ = lifecycle.acknowledge(state, "nurse-1", NOW + timedelta(seconds=301))
    assert lifecycle.escalate(acked, NOW + timedelta(hours=1), DEFAULT_POLICY) == (acked, ())


@given(st.lists(st.integers(min_value=1, max_value=3600), min_size=1, max_size=5),
       st.lists(st.integers(min_value=0, max_value=4000), min_size=1, max_size=20))
def test_steps_happen_at_the_configured_times_whatever_the_ticks(gaps: list[int],
                                                                  ticks: list[int]) -> None:
    after = [sum(gaps[: i + 1]) for i in range(len(gaps))]
    policy = EscalationPolicy(steps=tuple(
        EscalationStep(after_s=s, contact=Contact(kind="role", target=f"r{i}"))
        for i, s in enumerate(after)))
    state = red_alert(policy)
    now = NOW
    for tick in ticks:
        now += timedelta(seconds=tick)
        state, entries = lifecycle.escalate(state, now, policy)
        for entry in entries:
            configured = NOW + timedelta(seconds=after[entry.detail["step"] - 1])
            assert entry.detail["due_at"] == configured.isoformat() and configured <= now
        # Every step due by now has been taken.
        assert state.escalation_step == sum(1 for s in after if NOW + timedelta(seconds=s) <= now)
