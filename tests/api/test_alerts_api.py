"""Triage through the API on the real database: a team's queue, one alert explained, its
history, acknowledge and resolve, and every refusal as problem+json."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest
from fastapi.testclient import TestClient

from alerts import service
from alerts.models import Finding, Severity
from devices.repository import prepare_reading_stage
from ingest.decode import Inbound
from ingest.pipeline import Limits, process_batch
from tests.api.conftest import NOW, problem
from tests.conftest import count, reading_message

MakeDevice = Callable[..., tuple[str, UUID]]


def _finding(rule: str, severity: Severity, at: Any, occurrence: str | None = None,
             **extra: Any) -> Finding:
    return Finding(rule=rule, severity=severity, occurrence=occurrence or f"o:{uuid4()}",
                   measured_at=at, summary=f"{rule} {severity}", **extra)


@pytest.fixture
def team(conn: psycopg.Connection[Any]) -> UUID:
    return service.create_team(conn, f"Team {uuid4().hex[:8]}", NOW).id


@pytest.fixture
def citizen(conn: psycopg.Connection[Any], make_device: MakeDevice, team: UUID) -> tuple[str, UUID]:
    """A citizen of `team` with a blood-pressure monitor and a day of readings before NOW."""
    device, citizen_id = make_device()
    service.assign_citizen(conn, citizen_id, team)
    message = reading_message(device, range(48), start=NOW - timedelta(days=1),
                              step=timedelta(minutes=30), systolic=150)
    limits = Limits("telecare", 65536, timedelta(minutes=10), timedelta(minutes=5))
    prepare_reading_stage(conn)
    with conn.transaction():
        process_batch(conn, [Inbound(f"telecare/v1/{device}/readings", message.encode(), NOW)],
                      limits)
    return device, citizen_id


def _alert_ids(conn: psycopg.Connection[Any], citizen_id: UUID) -> dict[str, int]:
    rows = conn.execute("SELECT rule, id FROM alerts WHERE citizen_id = %s", (citizen_id,))
    return {rule: alert_id for rule, alert_id in rows.fetchall()}


def test_the_queue_puts_red_before_yellow_then_the_oldest_first(
        client: TestClient, conn: psycopg.Connection[Any], team: UUID,
        citizen: tuple[str, UUID]) -> None:
    _device, citizen_id = citizen
    opened = [("threshold:systolic_bp", Severity.YELLOW, NOW - timedelta(hours=5)),
              ("threshold:pulse_rate", Severity.RED, NOW - timedelta(hours=1)),
              ("device_offline", Severity.YELLOW, NOW - timedelta(hours=3)),
              ("emergency_button", Severity.RED, NOW - timedelta(hours=2))]
    for rule, severity, at in opened:
        service.record_findings(conn, citizen_id, team, [_finding(rule, severity, at)], at)
    body = client.get(f"/v1/teams/{team}/alerts").json()
    assert [a["rule"] for a in body["alerts"]] == [
        "emergency_button", "threshold:pulse_rate", "threshold:systolic_bp", "device_offline"]
    assert body["total"] == 4 and body["care_team_id"] == str(team)

    page = client.get(f"/v1/teams/{team}/alerts", params={"limit": 2, "offset": 2}).json()
    assert [a["rule"] for a in page["alerts"]] == ["threshold:systolic_bp", "device_offline"]
    assert page["total"] == 4
    past = client.get(f"/v1/teams/{team}/alerts", params={"offset": 10}).json()
    assert past["alerts"] == [] and past["total"] == 4

    yellow = client.get(f"/v1/teams/{team}/alerts", params={"severity": "yellow"}).json()
    assert [a["rule"] for a in yellow["alerts"]] == ["threshold:systolic_bp", "device_offline"]
    one_rule = client.get(f"/v1/teams/{team}/alerts", params={"rule": "device_offline"}).json()
    assert [a["rule"] for a in one_rule["alerts"]] == ["device_offline"]
    nobody = client.get(f"/v1/teams/{team}/alerts", params={"citizen_id": str(uuid4())}).json()
    assert nobody["alerts"] == [] and nobody["total"] == 0
    mine = client.get(f"/v1/teams/{team}/alerts", params={"citizen_id": str(citizen_id)}).json()
    assert mine["total"] == 4

    ids = _alert_ids(conn, citizen_id)
    client.post(f"/v1/alerts/{ids['device_offline']}/resolve", json={"outcome": "device_problem"})
    states = client.get(f"/v1/teams/{team}/alerts").json()
    assert "device_offline" not in {a["rule"] for a in states["alerts"]}
    resolved = client.get(f"/v1/teams/{team}/alerts", params={"state": "resolved"}).json()
    assert [a["rule"] for a in resolved["alerts"]] == ["device_offline"]


def test_an_alert_explains_itself_with_its_threshold_version_and_readings_around_it(
        client: TestClient, conn: psycopg.Connection[Any], team: UUID,
        citizen: tuple[str, UUID]) -> None:
    _device, citizen_id = citizen
    bands = service.parse_bands({"alert_low": 80, "warning_low": 95, "warning_high": 140,
                                 "alert_high": 180})
    version = service.set_thresholds(conn, citizen_id, "systolic_bp", bands,
                                     NOW - timedelta(days=2), "nurse-a", NOW - timedelta(days=2))
    at = NOW - timedelta(hours=12)
    explanation = {"metric": "systolic_bp", "value": 150.0, "band": "warning_high", "limit": 140}
    service.record_findings(conn, citizen_id, team, [_finding(
        "threshold:systolic_bp", Severity.YELLOW, at, explanation=explanation,
        threshold_id=version.id, threshold_version=version.version)], at)
    alert_id = _alert_ids(conn, citizen_id)["threshold:systolic_bp"]

    body = client.get(f"/v1/alerts/{alert_id}").json()
    assert body["alert"]["threshold_version"] == 1 and body["alert"]["state"] == "open"
    assert body["explanation"] == explanation
    assert body["threshold"]["id"] == version.id and body["threshold"]["warning_high"] == 140
    assert body["threshold"]["set_by"] == "nurse-a"
    assert len(body["findings"]) == 1 and body["findings"][0]["severity"] == "yellow"
    [series] = body["readings"]
    assert series["metric"] == "systolic_bp" and series["unit"] == "mm[Hg]"
    # 48 readings over the day before NOW, all within 24 h either side of the finding.
    assert len(series["readings"]) == 48
    assert {r["value"] for r in series["readings"]} == {150.0}
    assert body["readings_start"].startswith((at - timedelta(days=1)).date().isoformat())

    history = client.get(f"/v1/alerts/{alert_id}/history").json()
    assert [h["action"] for h in history] == ["opened"]


def test_a_news2_alert_shows_each_vital_it_scores(client: TestClient,
                                                  conn: psycopg.Connection[Any], team: UUID,
                                                  citizen: tuple[str, UUID]) -> None:
    _device, citizen_id = citizen
    service.record_findings(conn, citizen_id, team, [_finding("news2", Severity.RED, NOW)], NOW)
    body = client.get(f"/v1/alerts/{_alert_ids(conn, citizen_id)['news2']}").json()
    metrics = {s["metric"]: len(s["readings"]) for s in body["readings"]}
    assert metrics == {"respiration_rate": 0, "spo2": 0, "systolic_bp": 48, "pulse_rate": 48,
                       "body_temperature": 0}
    assert body["threshold"] is None


def test_acknowledge_then_resolve_records_the_caller_and_refuses_a_second_resolve(
        client: TestClient, conn: psycopg.Connection[Any], team: UUID,
        citizen: tuple[str, UUID]) -> None:
    _device, citizen_id = citizen
    service.record_findings(conn, citizen_id, team,
                            [_finding("emergency_button", Severity.RED, NOW)], NOW)
    alert_id = _alert_ids(conn, citizen_id)["emergency_button"]

    acked = client.post(f"/v1/alerts/{alert_id}/acknowledge", json={"note": "calling her"})
    assert acked.status_code == 200, acked.text
    assert acked.json()["state"] == "acknowledged"
    assert acked.json()["acknowledged_by"] == "local-operator"
    assert acked.json()["acknowledged_at"] == NOW.isoformat().replace("+00:00", "Z")
    problem(client.post(f"/v1/alerts/{alert_id}/acknowledge", json={}), 409, "alert_conflict")

    done = client.post(f"/v1/alerts/{alert_id}/resolve",
                       json={"outcome": "contacted_citizen", "note": "she is fine"})
    assert done.status_code == 200, done.text
    assert (done.json()["state"], done.json()["outcome"], done.json()["resolved_by"]) == (
        "resolved", "contacted_citizen", "local-operator")
    again = client.post(f"/v1/alerts/{alert_id}/resolve", json={"outcome": "other"})
    problem(again, 409, "alert_conflict")
    problem(client.post(f"/v1/alerts/{alert_id}/acknowledge", json={}), 409, "alert_conflict")
    # The refusals changed nothing.
    assert count(conn, "SELECT count(*) FROM alert_history WHERE alert_id = %s", alert_id) == 3

    history = client.get(f"/v1/alerts/{alert_id}/history").json()
    assert [(h["action"], h["actor"]) for h in history] == [
        ("opened", "system"), ("acknowledged", "local-operator"), ("resolved", "local-operator")]
    assert [h["id"] for h in history] == sorted(h["id"] for h in history)


@pytest.mark.parametrize("body", [
    {"outcome": "condition_cleared"},  # the system's own outcome
    {"outcome": "cured"},
    {},
    {"outcome": "other", "note": "x" * 2001},
    {"outcome": "other", "extra": 1},
])
def test_a_resolve_body_that_is_not_valid_is_422(client: TestClient,
                                                 conn: psycopg.Connection[Any], team: UUID,
                                                 citizen: tuple[str, UUID],
                                                 body: dict[str, Any]) -> None:
    _device, citizen_id = citizen
    service.record_findings(conn, citizen_id, team,
                            [_finding("battery_low", Severity.YELLOW, NOW)], NOW)
    alert_id = _alert_ids(conn, citizen_id)["battery_low"]
    problem(client.post(f"/v1/alerts/{alert_id}/resolve", json=body), 422, "invalid_request")
    assert client.get(f"/v1/alerts/{alert_id}").json()["alert"]["state"] == "open"


def test_unknown_alerts_and_teams_are_404(client: TestClient) -> None:
    missing = 2**62
    problem(client.get(f"/v1/alerts/{missing}"), 404, "alert_not_found")
    problem(client.get(f"/v1/alerts/{missing}/history"), 404, "alert_not_found")
    problem(client.post(f"/v1/alerts/{missing}/acknowledge", json={}), 404, "alert_not_found")
    problem(client.post(f"/v1/alerts/{missing}/resolve", json={"outcome": "other"}), 404,
             "alert_not_found")
    problem(client.get(f"/v1/teams/{uuid4()}/alerts"), 404, "care_team_not_found")


@pytest.mark.parametrize(("path", "params"), [
    ("/v1/alerts/0", {}),
    ("/v1/alerts/9223372036854775808", {}),  # beyond bigint
    ("/v1/alerts/abc", {}),
    ("/v1/teams/not-a-uuid/alerts", {}),
    ("/v1/teams/{team}/alerts", {"state": "closed"}),
    ("/v1/teams/{team}/alerts", {"severity": "green"}),
    ("/v1/teams/{team}/alerts", {"rule": "Threshold:SpO2"}),
    ("/v1/teams/{team}/alerts", {"rule": "a:b:c"}),
    ("/v1/teams/{team}/alerts", {"citizen_id": "42"}),
    ("/v1/teams/{team}/alerts", {"limit": "0"}),
    ("/v1/teams/{team}/alerts", {"limit": "501"}),
    ("/v1/teams/{team}/alerts", {"offset": "-1"}),
])
def test_malformed_requests_are_422(client: TestClient, team: UUID, path: str,
                                    params: dict[str, str]) -> None:
    problem(client.get(path.format(team=team), params=params), 422, "invalid_request")
