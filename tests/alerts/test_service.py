"""Alert service on the real database (both backends): recording findings exactly once,
transitions and their conflicts, escalation and release, the outbox rows written with each
change, and versioned, validated thresholds; plans, pauses and care teams."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alerts import service
from alerts.errors import (
    AlertConflict,
    AlertNotFound,
    InvalidPause,
    InvalidPlan,
    InvalidPolicy,
    InvalidThresholds,
    InvalidWebhook,
    PlanConflict,
    PlanNotFound,
    TeamNotFound,
    WebhookNotFound,
)
from alerts.escalation import DEFAULT_POLICY, Contact, EscalationPolicy, EscalationStep
from alerts.lifecycle import AlertStatus
from alerts.models import Bands, Severity
from core.roles import process_dsn
from devices.errors import CitizenNotFound
from tests.alerts.conftest import NOW, TeamCitizen, finding, minutes, new_citizen_in, new_team
from tests.conftest import count

Conn = psycopg.Connection[Any]


def deliveries(conn: Conn, history_ids: list[int]) -> list[tuple[int, int]]:
    """(webhook id, history id) of the deliveries queued for these history rows."""
    rows = conn.execute("SELECT webhook_id, history_id FROM webhook_deliveries "
                        "WHERE history_id = ANY(%s) ORDER BY history_id, webhook_id",
                        (history_ids,)).fetchall()
    return [(row[0], row[1]) for row in rows]


def screen(conn: Conn, citizen_id: uuid.UUID) -> list[tuple[str, Any]]:
    rows = conn.execute("SELECT kind, body FROM screen_messages WHERE citizen_id = %s ORDER BY id",
                        (citizen_id,)).fetchall()
    return [(row[0], row[1]) for row in rows]


def only_alert(conn: Conn, citizen_id: uuid.UUID) -> int:
    rows = conn.execute("SELECT id FROM alerts WHERE citizen_id = %s", (citizen_id,)).fetchall()
    assert len(rows) == 1, rows
    return int(rows[0][0])


# --- recording findings ----------------------------------------------------------------------

def test_a_finding_opens_an_alert_with_its_history_finding_and_webhook_deliveries(
        conn: Conn, team_citizen: TeamCitizen) -> None:
    active = service.add_webhook(conn, team_citizen.team_id, "http://127.0.0.1:9/a", "s", NOW)
    inactive = service.add_webhook(conn, team_citizen.team_id, "http://127.0.0.1:9/b", "s", NOW)
    service.set_webhook_active(conn, inactive.id, False)
    found = finding(severity=Severity.RED, threshold_version=0,
                    explanation={"value": 190.0, "at": NOW, "window": timedelta(hours=1)})
    written = service.record_findings(conn, team_citizen.citizen_id, team_citizen.team_id,
                                      [found], NOW)
    alert_id = only_alert(conn, team_citizen.citizen_id)
    state = service.alert(conn, alert_id)
    assert state.state is AlertStatus.OPEN and state.severity is Severity.RED and state.count == 1
    assert state.care_team_id == team_citizen.team_id and state.escalate_at == NOW + minutes(5)
    assert state.explanation == {"value": 190.0, "at": NOW.isoformat(), "window": 3600.0}
    (row,) = service.history(conn, alert_id)
    assert written == [row.id] and row.action == "opened" and row.pushed
    assert row.care_team_id == team_citizen.team_id
    assert deliveries(conn, written) == [(active.id, row.id)]
    (stored,) = service.findings(conn, alert_id)
    assert stored.occurrence == found.occurrence and stored.is_current


def test_the_same_occurrence_twice_counts_once(conn: Conn, team_citizen: TeamCitizen) -> None:
    found = finding(severity=Severity.YELLOW)
    first = service.record_findings(conn, team_citizen.citizen_id, team_citizen.team_id,
                                    [found, found], NOW)
    again = service.record_findings(conn, team_citizen.citizen_id, team_citizen.team_id,
                                    [found], NOW + minutes(1))
    assert len(first) == 1 and again == []
    assert service.alert(conn, only_alert(conn, team_citizen.citizen_id)).count == 1


def test_a_resolved_alerts_finding_seen_again_does_not_reopen_it(
        conn: Conn, team_citizen: TeamCitizen) -> None:
    found = finding(rule="missed:systolic_bp", occurrence="w:systolic_bp:2026-03-02",
                    self_resolving=True)
    service.record_findings(conn, team_citizen.citizen_id, team_citizen.team_id, [found], NOW)
    alert_id = only_alert(conn, team_citizen.citizen_id)
    service.resolve(conn, alert_id, "nurse-1", "not_actionable", None, NOW + minutes(1))
    # The engine's next tick finds the same missed window again.
    assert service.record_findings(conn, team_citizen.citizen_id, team_citizen.team_id,
                                   [found], NOW + minutes(2)) == []
    assert only_alert(conn, team_citizen.citizen_id) == alert_id


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(repeats=st.integers(min_value=1, max_value=8), duplicates=st.lists(st.integers(0, 7)))
def test_n_distinct_repeats_make_one_open_alert_with_count_n(
        conn: Conn, team_id: uuid.UUID, repeats: int, duplicates: list[int]) -> None:
    citizen_id = new_citizen_in(conn, team_id)
    series = [finding(severity=Severity.YELLOW, occurrence=f"r:d:m:{i}",
                      measured_at=NOW + minutes(i)) for i in range(repeats)]
    # Redeliveries of some of them, in later batches.
    batches = [series] + [[series[i % repeats]] for i in duplicates]
    for index, batch in enumerate(batches):
        service.record_findings(conn, citizen_id, team_id, batch, NOW + minutes(index))
    state = service.alert(conn, only_alert(conn, citizen_id))
    assert state.count == repeats and state.state is AlertStatus.OPEN
    assert count(conn, "SELECT count(*) FROM alert_findings WHERE citizen_id = %s",
                 citizen_id) == repeats


def test_a_worsening_is_pushed_again_and_a_repeat_is_not(conn: Conn, team_citizen: TeamCitizen) -> None:
    hook = service.add_webhook(conn, team_citizen.team_id, "http://127.0.0.1:9/", "s", NOW)
    c, t = team_citizen.citizen_id, team_citizen.team_id
    opened = service.record_findings(conn, c, t, [finding(severity=Severity.YELLOW)], NOW)
    repeated = service.record_findings(conn, c, t, [finding(severity=Severity.YELLOW)], NOW + minutes(1))
    worsened = service.record_findings(conn, c, t, [finding(severity=Severity.RED)], NOW + minutes(2))
    assert deliveries(conn, opened + repeated + worsened) == [(hook.id, opened[0]),
                                                             (hook.id, worsened[0])]
    state = service.alert(conn, only_alert(conn, c))
    assert state.severity is Severity.RED and state.count == 3
    assert state.escalate_at == NOW + minutes(2) + minutes(5)


def test_old_data_raises_an_alert_that_is_not_pushed(conn: Conn, team_citizen: TeamCitizen) -> None:
    service.add_webhook(conn, team_citizen.team_id, "http://127.0.0.1:9/", "s", NOW)
    old = finding(is_current=False, data_age_s=3 * 3600.0, delay_cause="device_offline",
                  measured_at=NOW - timedelta(hours=3))
    written = service.record_findings(conn, team_citizen.citizen_id, team_citizen.team_id, [old], NOW)
    state = service.alert(conn, only_alert(conn, team_citizen.citizen_id))
    assert not state.is_current and state.escalate_at is None and state.delay_cause == "device_offline"
    assert deliveries(conn, written) == []
    service.escalate_due(conn, NOW + timedelta(days=1))
    assert [row.action for row in service.history(conn, state.id or 0)] == ["opened"]


def test_clears_resolve_a_self_resolving_alert_and_do_nothing_without_one(
        conn: Conn, team_citizen: TeamCitizen) -> None:
    c, t = team_citizen.citizen_id, team_citizen.team_id
    clear = finding(rule="device_offline", clears=True, occurrence="online:1")
    assert service.record_findings(conn, c, t, [clear], NOW) == []
    assert count(conn, "SELECT count(*) FROM alerts WHERE citizen_id = %s", c) == 0
    service.record_findings(conn, c, t, [finding(rule="device_offline", self_resolving=True,
                                                 occurrence="offline:1")], NOW)
    service.record_findings(conn, c, t, [clear], NOW + minutes(30))
    state = service.alert(conn, only_alert(conn, c))
    assert state.state is AlertStatus.RESOLVED and state.outcome == "condition_cleared"
    assert [row.action for row in service.history(conn, state.id or 0)] == ["opened", "self_resolved"]


def test_an_alert_opened_and_cleared_in_one_batch_is_resolved(conn: Conn,
                                                              team_citizen: TeamCitizen) -> None:
    offline = finding(rule="device_offline", self_resolving=True, occurrence="offline:2")
    online = finding(rule="device_offline", clears=True, occurrence="online:2")
    written = service.record_findings(conn, team_citizen.citizen_id, team_citizen.team_id,
                                      [offline, online], NOW)
    state = service.alert(conn, only_alert(conn, team_citizen.citizen_id))
    assert len(written) == 2 and state.state is AlertStatus.RESOLVED


def _reminder(occurrence: str = "remind:body_weight:2026-03-02:06:00-11:00", **fields: Any) -> Any:
    return finding(rule="missed:body_weight", severity=Severity.YELLOW, occurrence=occurrence,
                   reminder=True, explanation={"metric": "body_weight", "day": "2026-03-02",
                                               "window": "06:00-11:00"}, **fields)


def test_a_reminder_reaches_her_screen_once_and_raises_no_alert(
        conn: Conn, team_citizen: TeamCitizen) -> None:
    citizen = team_citizen.citizen_id
    for later in (0, 1, 2):  # every tick finds the missed window again, as may a second process
        assert service.record_findings(conn, citizen, team_citizen.team_id, [_reminder()],
                                       NOW + minutes(later)) == []
    assert screen(conn, citizen) == [("reminder", {
        "text": service.REMINDER_TEXT, "metric": "body_weight", "day": "2026-03-02",
        "window": "06:00-11:00"})]
    assert count(conn, "SELECT count(*) FROM alerts WHERE citizen_id = %s", citizen) == 0
    service.record_findings(conn, citizen, team_citizen.team_id,
                            [_reminder("remind:body_weight:2026-03-03:06:00-11:00")], NOW)
    assert len(screen(conn, citizen)) == 2  # the next window is a reminder of its own


def test_no_reminder_of_old_news_or_during_a_pause(conn: Conn, team_citizen: TeamCitizen) -> None:
    service.record_findings(conn, team_citizen.citizen_id, team_citizen.team_id,
                            [_reminder(is_current=False), _reminder("remind:b", held=True)], NOW)
    assert screen(conn, team_citizen.citizen_id) == []


def test_a_missed_measurement_alert_sends_no_second_reminder(
        conn: Conn, team_citizen: TeamCitizen) -> None:
    service.record_findings(conn, team_citizen.citizen_id, team_citizen.team_id,
                            [finding(rule="missed:body_weight", severity=Severity.YELLOW,
                                     occurrence="body_weight:2026-03-02:06:00-11:00",
                                     self_resolving=True), _reminder()], NOW)
    assert only_alert(conn, team_citizen.citizen_id)
    assert [kind for kind, _ in screen(conn, team_citizen.citizen_id)] == ["reminder"]


def test_a_callers_rollback_undoes_everything(conn: Conn, team_citizen: TeamCitizen) -> None:
    class Abort(Exception):
        pass

    with pytest.raises(Abort), conn.transaction():
        service.record_findings(conn, team_citizen.citizen_id, team_citizen.team_id, [finding()], NOW)
        raise Abort
    assert count(conn, "SELECT count(*) FROM alerts WHERE citizen_id = %s", team_citizen.citizen_id) == 0


def test_two_writers_of_one_new_finding_make_one_alert(conn: Conn, database: str,
                                                       team_citizen: TeamCitizen) -> None:
    found, c, t = finding(), team_citizen.citizen_id, team_citizen.team_id
    results: list[list[int]] = []
    with psycopg.connect(database) as first, psycopg.connect(database) as second:
        assert len(service.record_findings(first, c, t, [found], NOW)) == 1  # not committed yet
        other = threading.Thread(target=lambda: results.append(
            service.record_findings(second, c, t, [found], NOW)))
        other.start()
        time.sleep(0.3)
        assert other.is_alive(), "the second writer did not wait for the first"
        first.commit()
        other.join(10)
        second.commit()
    assert results == [[]]
    assert service.alert(conn, only_alert(conn, c)).count == 1


# --- transitions -----------------------------------------------------------------------------

def test_acknowledge_then_resolve_and_the_conflicts(conn: Conn, team_citizen: TeamCitizen) -> None:
    service.record_findings(conn, team_citizen.citizen_id, team_citizen.team_id, [finding()], NOW)
    alert_id = only_alert(conn, team_citizen.citizen_id)
    acked = service.acknowledge(conn, alert_id, "nurse-1", NOW + minutes(1), "calling")
    assert acked.state is AlertStatus.ACKNOWLEDGED and acked.escalate_at is None
    assert screen(conn, team_citizen.citizen_id) == [
        ("seen", {"text": service.SEEN_TEXT, "alert_id": alert_id})]
    with pytest.raises(AlertConflict):
        service.acknowledge(conn, alert_id, "nurse-2", NOW + minutes(2))
    done = service.resolve(conn, alert_id, "nurse-1", "contacted_citizen", "fine", NOW + minutes(3))
    assert done.state is AlertStatus.RESOLVED and done.note == "fine"
    with pytest.raises(AlertConflict):
        service.resolve(conn, alert_id, "nurse-1", "other", None, NOW + minutes(4))
    rows = service.history(conn, alert_id)
    assert [(r.action, r.actor) for r in rows] == [("opened", "system"), ("acknowledged", "nurse-1"),
                                                   ("resolved", "nurse-1")]
    assert len(screen(conn, team_citizen.citizen_id)) == 1  # seen once
    with pytest.raises(AlertNotFound):
        service.acknowledge(conn, 10**12, "nurse-1", NOW)
    with pytest.raises(AlertNotFound):
        service.resolve(conn, 10**12, "nurse-1", "other", None, NOW)


def test_an_alert_not_on_a_reading_tells_the_screen_nothing(conn: Conn, team_citizen: TeamCitizen) -> None:
    service.record_findings(conn, team_citizen.citizen_id, team_citizen.team_id,
                            [finding(rule="device_offline", occurrence="offline:1")], NOW)
    service.acknowledge(conn, only_alert(conn, team_citizen.citizen_id), "nurse-1", NOW)
    assert screen(conn, team_citizen.citizen_id) == []


# --- escalation and release ------------------------------------------------------------------

def test_escalation_at_its_time_to_the_policys_webhook(conn: Conn, team_citizen: TeamCitizen) -> None:
    hook = service.add_webhook(conn, team_citizen.team_id, "http://127.0.0.1:9/", "s", NOW)
    service.set_policy(conn, team_citizen.team_id, EscalationPolicy(steps=(
        EscalationStep(after_s=60, contact=Contact(kind="webhook", target=str(hook.id))),
        EscalationStep(after_s=120, contact=Contact(kind="role", target="team_lead")))), NOW)
    service.set_webhook_active(conn, hook.id, True)
    service.record_findings(conn, team_citizen.citizen_id, team_citizen.team_id, [finding()], NOW)
    alert_id = only_alert(conn, team_citizen.citizen_id)
    # The session's database holds other tests' alerts: this one's steps are what counts.
    service.escalate_due(conn, NOW + timedelta(seconds=59))
    assert service.alert(conn, alert_id).escalation_step == 0
    assert service.escalate_due(conn, NOW + timedelta(seconds=60)) >= 1
    assert service.alert(conn, alert_id).escalation_step == 1
    step = service.history(conn, alert_id)[-1]
    assert step.action == "escalated" and step.detail["contact"] == {"kind": "webhook",
                                                                     "target": str(hook.id)}
    assert deliveries(conn, [step.id]) == [(hook.id, step.id)]
    service.acknowledge(conn, alert_id, "nurse-1", NOW + timedelta(seconds=90))
    service.escalate_due(conn, NOW + timedelta(hours=1))
    assert service.alert(conn, alert_id).escalation_step == 1


def test_a_policy_naming_another_teams_webhook_is_refused(conn: Conn, team_id: uuid.UUID) -> None:
    elsewhere = service.add_webhook(conn, new_team(conn), "http://127.0.0.1:9/", "s", NOW)
    with pytest.raises(InvalidPolicy):
        service.set_policy(conn, team_id, [{"after_s": 60, "contact": {
            "kind": "webhook", "target": str(elsewhere.id)}}], NOW)
    with pytest.raises(TeamNotFound):
        service.set_policy(conn, uuid.uuid4(), [{"after_s": 60, "contact": {
            "kind": "role", "target": "x"}}], NOW)
    assert service.policy_for(conn, team_id) == DEFAULT_POLICY
    assert service.get_policy(conn, team_id) == DEFAULT_POLICY
    with pytest.raises(TeamNotFound):
        service.get_policy(conn, uuid.uuid4())


def test_held_alerts_are_released_when_the_pause_ends(conn: Conn, team_citizen: TeamCitizen) -> None:
    hook = service.add_webhook(conn, team_citizen.team_id, "http://127.0.0.1:9/", "s", NOW)
    pause = service.add_pause(conn, team_citizen.citizen_id, NOW - timedelta(days=1),
                              NOW + timedelta(hours=1), "hospital_admission", "nurse-1", NOW)
    written = service.record_findings(conn, team_citizen.citizen_id, team_citizen.team_id,
                                      [finding(held=True)], NOW)
    alert_id = only_alert(conn, team_citizen.citizen_id)
    assert deliveries(conn, written) == [] and service.alert(conn, alert_id).held
    assert service.release_held(conn, [team_citizen.citizen_id], NOW + minutes(30)) == 0
    service.release_held(conn, None, NOW + minutes(30))
    assert service.alert(conn, alert_id).held
    service.escalate_due(conn, NOW + minutes(59))
    assert [row.action for row in service.history(conn, alert_id)] == ["opened"]
    assert service.cancel_pause(conn, pause.id, NOW + minutes(40)).in_force_until == NOW + minutes(40)
    assert service.release_held(conn, [team_citizen.citizen_id], NOW + minutes(41)) == 1
    state = service.alert(conn, alert_id)
    assert not state.held and state.escalate_at == NOW + minutes(41) + minutes(5)
    released = service.history(conn, alert_id)[-1]
    assert released.action == "released" and released.pushed
    assert deliveries(conn, [released.id]) == [(hook.id, released.id)]


# --- thresholds ------------------------------------------------------------------------------

def test_thresholds_are_versioned_and_the_one_in_force_is_found(
        conn: Conn, team_citizen: TeamCitizen) -> None:
    c = team_citizen.citizen_id
    v1 = service.set_thresholds(conn, c, "systolic_bp", Bands(alert_low=80, warning_low=95,
                                                              warning_high=150, alert_high=180),
                                NOW, "nurse-1", NOW)
    v2 = service.set_thresholds(conn, c, "systolic_bp", service.parse_bands(
        {"alert_low": 85, "warning_low": 100, "warning_high": 145, "alert_high": 170}),
        NOW + timedelta(days=2), "nurse-2", NOW + timedelta(days=1), reason="new medication")
    spo2 = service.set_thresholds(conn, c, "spo2", Bands(alert_low=88, warning_low=92), NOW,
                                  "nurse-1", NOW)
    assert (v1.version, v2.version, spo2.version) == (1, 2, 1) and v1.id != v2.id
    before = service.thresholds_in_force(conn, [c], NOW - timedelta(seconds=1))
    assert before == {}
    at_day_1 = service.thresholds_in_force(conn, [c], NOW + timedelta(days=1))[c]
    assert at_day_1["systolic_bp"] == v1 and at_day_1["spo2"] == spo2
    assert service.thresholds_in_force(conn, [c], NOW + timedelta(days=2))[c]["systolic_bp"] == v2
    history = service.threshold_history(conn, c, "systolic_bp")
    assert [(h.version, h.set_by, h.reason) for h in history] == [(1, "nurse-1", None),
                                                                  (2, "nurse-2", "new medication")]
    assert count(conn, "SELECT count(*) FROM thresholds WHERE citizen_id = %s", c) == 3


@pytest.mark.parametrize("data", [
    {"alert_low": 100, "warning_low": 90},
    {"warning_high": 150, "alert_high": 150},
    {"alert_low": 100, "alert_high": 90},
    {},
    {"alert_low": float("nan")},
    {"alert_low": "low"},
    {"alert_low": 80, "extra": 1},
])
def test_invalid_bands_are_refused(data: dict[str, Any]) -> None:
    with pytest.raises(InvalidThresholds):
        service.parse_bands(data)


def test_invalid_thresholds_are_refused_and_nothing_is_stored(
        conn: Conn, team_citizen: TeamCitizen) -> None:
    c = team_citizen.citizen_id
    with pytest.raises(InvalidThresholds):
        service.set_thresholds(conn, c, "shoe_size", Bands(alert_high=50), NOW, "n", NOW)
    unordered = Bands.model_construct(alert_low=100.0, warning_low=90.0, warning_high=None,
                                      alert_high=None)
    with pytest.raises(InvalidThresholds):
        service.set_thresholds(conn, c, "spo2", unordered, NOW, "n", NOW)
    with pytest.raises(CitizenNotFound):
        service.set_thresholds(conn, uuid.uuid4(), "spo2", Bands(alert_low=88), NOW, "n", NOW)
    assert service.threshold_history(conn, c) == []


# --- plans, pauses, teams --------------------------------------------------------------------

def test_plans_in_force_overlaps_and_ending(conn: Conn, team_citizen: TeamCitizen) -> None:
    c = team_citizen.citizen_id
    service.set_plan(conn, c, "copd", NOW, "nurse-1", NOW)
    service.set_plan(conn, c, "heart_failure", NOW + timedelta(days=1), "nurse-1", NOW,
                     settings={"weight_gain_kg": 1.5})
    with pytest.raises(PlanConflict):
        service.set_plan(conn, c, "copd", NOW + timedelta(days=3), "nurse-1", NOW)
    day_2 = service.plans_in_force(conn, [c], NOW + timedelta(days=2))[c]
    assert [(p.plan, p.settings) for p in day_2] == [("copd", {}),
                                                    ("heart_failure", {"weight_gain_kg": 1.5})]
    ended = service.end_plan(conn, c, "copd", NOW + timedelta(days=5))
    assert ended.valid_to == NOW + timedelta(days=5)
    assert [p.plan for p in service.plans_in_force(conn, [c], NOW + timedelta(days=6))[c]] == [
        "heart_failure"]
    with pytest.raises(PlanNotFound):
        service.end_plan(conn, c, "copd", NOW + timedelta(days=7))
    with pytest.raises(CitizenNotFound):
        service.set_plan(conn, uuid.uuid4(), "copd", NOW, "nurse-1", NOW)
    with pytest.raises(InvalidPlan):
        service.set_plan(conn, c, "astrology", NOW, "nurse-1", NOW)


def test_pauses_for_a_period(conn: Conn, team_citizen: TeamCitizen) -> None:
    c = team_citizen.citizen_id
    holiday = service.add_pause(conn, c, NOW, NOW + timedelta(days=7), "holiday", "nurse-1", NOW)
    never = service.add_pause(conn, c, NOW + timedelta(days=20), None, "other", "nurse-1", NOW)
    service.cancel_pause(conn, never.id, NOW + timedelta(days=1))
    found = service.pauses_for(conn, [c], NOW - timedelta(days=1), NOW + timedelta(days=30))[c]
    assert [p.id for p in found] == [holiday.id]
    assert found[0].span == (NOW, NOW + timedelta(days=7))
    assert service.pauses_for(conn, [c], NOW + timedelta(days=8), NOW + timedelta(days=9)) == {}
    with pytest.raises(InvalidPause):
        service.add_pause(conn, c, NOW, NOW, "holiday", "nurse-1", NOW)
    with pytest.raises(InvalidPause):
        service.add_pause(conn, c, NOW, None, "bored", "nurse-1", NOW)


def test_a_citizen_moving_team_takes_their_open_alerts(conn: Conn, team_citizen: TeamCitizen) -> None:
    service.record_findings(conn, team_citizen.citizen_id, team_citizen.team_id, [finding()], NOW)
    other = new_team(conn)
    service.assign_citizen(conn, team_citizen.citizen_id, other)
    assert service.team_of(conn, team_citizen.citizen_id) == other
    assert service.alert(conn, only_alert(conn, team_citizen.citizen_id)).care_team_id == other
    with pytest.raises(TeamNotFound):
        service.assign_citizen(conn, team_citizen.citizen_id, uuid.uuid4())
    with pytest.raises(CitizenNotFound):
        service.team_of(conn, uuid.uuid4())


def test_a_webhook_needs_an_http_url_with_a_host_and_belongs_to_its_team(
        conn: Conn, team_id: uuid.UUID) -> None:
    for bad in ("ftp://x.example/", "http://", "x.example/hook", "http://[0]/"):
        with pytest.raises(InvalidWebhook):
            service.add_webhook(conn, team_id, bad, None, NOW)
    with pytest.raises(InvalidWebhook):
        service.add_webhook(conn, team_id, "https://x.example/", "", NOW)
    hook = service.add_webhook(conn, team_id, "https://x.example/", None, NOW)
    other = service.add_webhook(conn, team_id, "https://x.example/", None, NOW)
    assert len(hook.secret) >= 40 and hook.secret != other.secret  # random, 256 bits
    with pytest.raises(WebhookNotFound):
        service.set_webhook_active(conn, hook.id, False, new_team(conn))
    assert service.set_webhook_active(conn, hook.id, False, team_id).active is False
    with pytest.raises(WebhookNotFound):
        service.set_webhook_active(conn, 2**62, True)


def test_the_alert_process_role_may_record_findings_escalate_and_remind(
        conn: Conn, database: str, team_citizen: TeamCitizen) -> None:
    """Under the alert process's own database role (core/roles.py), not the owner's: every
    outbox a finding writes, and escalation, are within its privileges."""
    citizen, team = team_citizen.citizen_id, team_citizen.team_id
    with psycopg.connect(process_dsn(database, "alerts"), autocommit=True) as as_alerts:
        service.record_findings(as_alerts, citizen, team, [
            finding(rule="missed:body_weight", severity=Severity.YELLOW,
                    occurrence="w:body_weight:1", self_resolving=True), _reminder(),
            finding(rule="threshold:systolic_bp", severity=Severity.RED)], NOW)
        escalated = service.escalate_due(as_alerts, NOW + timedelta(days=1))
        service.release_held(as_alerts, [citizen], NOW + timedelta(days=1))
    assert [kind for kind, _ in screen(conn, citizen)] == ["reminder"]
    assert escalated >= 1
