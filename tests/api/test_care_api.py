"""Care set-up through the API on the real database: teams, plans, thresholds with versions,
pauses and escalation policies, and every refusal as problem+json."""

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
from tests.api.conftest import NOW, problem

MakeDevice = Callable[..., tuple[str, UUID]]
Z = NOW.isoformat().replace("+00:00", "Z")


@pytest.fixture
def citizen(make_device: MakeDevice) -> UUID:
    return make_device()[1]


@pytest.fixture
def team(client: TestClient) -> dict[str, Any]:
    response = client.post("/v1/teams", json={"name": f"Team {uuid4().hex[:8]}"})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def test_teams_are_created_listed_and_take_citizens_with_their_alerts(
        client: TestClient, conn: psycopg.Connection[Any], citizen: UUID,
        team: dict[str, Any]) -> None:
    assert team["citizens"] == 0 and team["created_at"] == Z
    problem(client.post("/v1/teams", json={"name": team["name"]}), 409, "care_team_conflict")
    problem(client.post("/v1/teams", json={"name": "   "}), 409, "care_team_conflict")
    assert client.get(f"/v1/citizens/{citizen}/team").json() == {
        "citizen_id": str(citizen), "care_team_id": None}

    service.record_findings(conn, citizen, None, [Finding(
        rule="battery_low", severity=Severity.YELLOW, occurrence="o:1", measured_at=NOW,
        summary="battery low")], NOW)
    moved = client.put(f"/v1/citizens/{citizen}/team", json={"care_team_id": team["id"]})
    assert moved.status_code == 200, moved.text
    assert client.get(f"/v1/citizens/{citizen}/team").json()["care_team_id"] == team["id"]
    assert client.get(f"/v1/teams/{team['id']}").json()["citizens"] == 1
    listed = {t["id"]: t for t in client.get("/v1/teams").json()}
    assert listed[team["id"]]["citizens"] == 1
    # The team took over the alert still in hand: it is in the team's queue.
    queue = client.get(f"/v1/teams/{team['id']}/alerts").json()
    assert [a["rule"] for a in queue["alerts"]] == ["battery_low"]

    problem(client.put(f"/v1/citizens/{citizen}/team", json={"care_team_id": str(uuid4())}),
             404, "care_team_not_found")
    problem(client.put(f"/v1/citizens/{uuid4()}/team", json={"care_team_id": team["id"]}),
             404, "citizen_not_found")
    problem(client.get(f"/v1/citizens/{uuid4()}/team"), 404, "citizen_not_found")
    problem(client.get(f"/v1/teams/{uuid4()}"), 404, "care_team_not_found")
    for body in ({}, {"name": ""}, {"name": "x" * 201}, {"name": "a", "extra": 1},
                 {"name": "a\x00b"}):  # PostgreSQL text cannot hold NUL
        problem(client.post("/v1/teams", json=body), 422, "invalid_request")
    problem(client.put(f"/v1/citizens/{citizen}/team", json={"care_team_id": "x"}), 422)


def test_plans_start_show_and_end(client: TestClient, citizen: UUID) -> None:
    started = client.put(f"/v1/citizens/{citizen}/plans/heart_failure",
                         json={"valid_from": "2026-11-01T00:00:00Z"})
    assert started.status_code == 200, started.text
    assert started.json()["valid_to"] is None and started.json()["set_by"] == "local-operator"
    problem(client.put(f"/v1/citizens/{citizen}/plans/heart_failure", json={}), 409,
             "plan_conflict")
    with_settings = client.put(f"/v1/citizens/{citizen}/plans/copd",
                               json={"settings": {"spo2_scale": 2}})
    assert with_settings.status_code == 200, with_settings.text
    assert with_settings.json()["settings"] == {"spo2_scale": 2}
    assert {p["plan"] for p in client.get(f"/v1/citizens/{citizen}/plans").json()} == {
        "heart_failure", "copd"}

    ended = client.delete(f"/v1/citizens/{citizen}/plans/heart_failure")
    assert ended.status_code == 200, ended.text
    assert ended.json()["valid_to"] == Z
    assert {p["plan"] for p in client.get(f"/v1/citizens/{citizen}/plans").json()} == {"copd"}
    every = client.get(f"/v1/citizens/{citizen}/plans", params={"include_ended": "true"}).json()
    assert {p["plan"] for p in every} == {"heart_failure", "copd"}
    assert len(client.get(f"/v1/citizens/{citizen}/plans/heart_failure").json()) == 1
    problem(client.delete(f"/v1/citizens/{citizen}/plans/heart_failure"), 404, "plan_not_found")

    problem(client.put(f"/v1/citizens/{citizen}/plans/diabetes",
                        json={"settings": {"inactivity": {"max_quiet_hours": 3}}}), 422,
             "invalid_plan")
    problem(client.put(f"/v1/citizens/{citizen}/plans/asthma", json={}), 422, "invalid_request")
    problem(client.put(f"/v1/citizens/{citizen}/plans/copd",
                        json={"valid_from": "2026-11-01T00:00:00"}), 422, "invalid_request")
    problem(client.get(f"/v1/citizens/{uuid4()}/plans"), 404, "citizen_not_found")
    problem(client.put(f"/v1/citizens/{uuid4()}/plans/copd", json={}), 404, "citizen_not_found")


def test_thresholds_are_versioned_and_default_to_the_plans(client: TestClient,
                                                           citizen: UUID) -> None:
    client.put(f"/v1/citizens/{citizen}/plans/hypertension", json={"valid_from": "2026-01-01T00:00:00Z"})
    defaults = {t["metric"]: t for t in client.get(f"/v1/citizens/{citizen}/thresholds").json()}
    assert defaults["systolic_bp"]["version"] == 0
    assert defaults["systolic_bp"]["source"] == "plan_default"
    assert defaults["systolic_bp"]["id"] is None

    bands = {"alert_low": 85, "warning_low": 100, "warning_high": 150, "alert_high": 175}
    first = client.put(f"/v1/citizens/{citizen}/thresholds/systolic_bp",
                       json={**bands, "reason": "her usual is high"})
    assert first.status_code == 200, first.text
    assert (first.json()["version"], first.json()["set_by"], first.json()["reason"]) == (
        1, "local-operator", "her usual is high")
    second = client.put(f"/v1/citizens/{citizen}/thresholds/systolic_bp",
                        json={**bands, "alert_high": 185})
    assert second.json()["version"] == 2
    # SpO2 has no upper bands.
    spo2 = client.put(f"/v1/citizens/{citizen}/thresholds/spo2",
                      json={"alert_low": 88, "warning_low": 92})
    assert spo2.status_code == 200, spo2.text

    in_force = {t["metric"]: t for t in client.get(f"/v1/citizens/{citizen}/thresholds").json()}
    assert (in_force["systolic_bp"]["version"], in_force["systolic_bp"]["alert_high"],
            in_force["systolic_bp"]["source"]) == (2, 185, "citizen")
    assert in_force["spo2"]["warning_high"] is None
    versions = client.get(f"/v1/citizens/{citizen}/thresholds/systolic_bp/versions").json()
    assert [(v["version"], v["alert_high"]) for v in versions] == [(1, 175), (2, 185)]
    one = client.get(f"/v1/citizens/{citizen}/thresholds/systolic_bp").json()
    assert one["in_force"]["version"] == 2 and len(one["versions"]) == 2
    none = client.get(f"/v1/citizens/{citizen}/thresholds/blood_glucose").json()
    assert none == {"metric": "blood_glucose", "in_force": None, "versions": []}

    # A version from the future is stored but not yet in force.
    later = client.put(f"/v1/citizens/{citizen}/thresholds/systolic_bp",
                       json={**bands, "valid_from": "2026-12-01T00:00:00Z"})
    assert later.json()["version"] == 3
    assert client.get(f"/v1/citizens/{citizen}/thresholds/systolic_bp").json()[
        "in_force"]["version"] == 2


@pytest.mark.parametrize("bands", [
    {"alert_low": 100, "warning_low": 90},
    {"warning_low": 100, "warning_high": 100},
    {"alert_low": 80, "alert_high": 70},
    {"warning_high": 150, "alert_high": 140, "alert_low": 10},
    {},
])
def test_bands_out_of_order_or_absent_are_422(client: TestClient, citizen: UUID,
                                              bands: dict[str, float]) -> None:
    problem(client.put(f"/v1/citizens/{citizen}/thresholds/systolic_bp", json=bands), 422,
             "invalid_thresholds")
    assert client.get(f"/v1/citizens/{citizen}/thresholds/systolic_bp/versions").json() == []


@pytest.mark.parametrize("body", [
    {"alert_low": "low"}, {"alert_low": 1e9}, {"alert_low": None, "colour": "red"},
    {"warning_low": 1, "valid_from": "yesterday"}, {"warning_low": 1, "reason": "x" * 2001},
])
def test_malformed_threshold_bodies_are_422(client: TestClient, citizen: UUID,
                                            body: dict[str, Any]) -> None:
    problem(client.put(f"/v1/citizens/{citizen}/thresholds/systolic_bp", json=body), 422,
             "invalid_request")


def test_threshold_refusals_for_unknown_citizens_and_metrics(client: TestClient,
                                                             citizen: UUID) -> None:
    ok = {"warning_low": 1, "warning_high": 2}
    problem(client.put(f"/v1/citizens/{uuid4()}/thresholds/spo2", json=ok), 404,
             "citizen_not_found")
    problem(client.get(f"/v1/citizens/{uuid4()}/thresholds"), 404, "citizen_not_found")
    problem(client.get(f"/v1/citizens/{uuid4()}/thresholds/spo2/versions"), 404)
    # Blood pressure is set per component metric, never as one.
    problem(client.put(f"/v1/citizens/{citizen}/thresholds/blood_pressure", json=ok), 422,
             "invalid_request")


def test_pauses_are_added_listed_and_cancelled(client: TestClient, citizen: UUID) -> None:
    added = client.post(f"/v1/citizens/{citizen}/pauses", json={
        "reason": "hospital_admission", "end": "2026-11-27T12:00:00Z", "note": "ward 4"})
    assert added.status_code == 201, added.text
    pause = added.json()
    assert (pause["start"], pause["created_by"], pause["cancelled_at"]) == (
        Z, "local-operator", None)
    open_ended = client.post(f"/v1/citizens/{citizen}/pauses", json={
        "reason": "holiday", "start": "2026-12-20T00:00:00+01:00"}).json()
    assert open_ended["end"] is None
    listed = client.get(f"/v1/citizens/{citizen}/pauses").json()
    assert [p["id"] for p in listed] == [pause["id"], open_ended["id"]]
    assert client.get(f"/v1/citizens/{citizen}/pauses/{pause['id']}").json() == pause

    cancelled = client.delete(f"/v1/citizens/{citizen}/pauses/{pause['id']}")
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["cancelled_at"] == Z and cancelled.json()["in_force_until"] == Z
    again = client.delete(f"/v1/citizens/{citizen}/pauses/{pause['id']}")
    assert again.json() == cancelled.json()

    other = uuid4()
    problem(client.get(f"/v1/citizens/{citizen}/pauses/{2**62}"), 404, "pause_not_found")
    problem(client.delete(f"/v1/citizens/{other}/pauses/{pause['id']}"), 404,
             "citizen_not_found")
    problem(client.post(f"/v1/citizens/{other}/pauses", json={"reason": "holiday"}), 404)
    problem(client.post(f"/v1/citizens/{citizen}/pauses", json={
        "reason": "holiday", "start": "2026-12-01T00:00:00Z", "end": "2026-12-01T00:00:00Z"}),
        422, "invalid_pause")
    problem(client.post(f"/v1/citizens/{citizen}/pauses", json={
        "reason": "holiday", "end": (NOW - timedelta(hours=1)).isoformat()}), 422, "invalid_pause")
    for body in ({}, {"reason": "bored"}, {"reason": "holiday", "start": "2026-12-01"},
                 {"reason": "holiday", "note": "\x00"},
                 {"reason": "holiday", "end": "9999-01-01T00:00:00Z"}):  # 10000 in UTC at -01:00
        problem(client.post(f"/v1/citizens/{citizen}/pauses", json=body), 422, "invalid_request")
    problem(client.get(f"/v1/citizens/{citizen}/pauses/0"), 422, "invalid_request")


def test_a_pause_of_another_citizen_is_not_found(client: TestClient, citizen: UUID,
                                                 make_device: MakeDevice) -> None:
    pause = client.post(f"/v1/citizens/{citizen}/pauses", json={"reason": "other"}).json()
    stranger = make_device()[1]
    problem(client.get(f"/v1/citizens/{stranger}/pauses/{pause['id']}"), 404, "pause_not_found")
    problem(client.delete(f"/v1/citizens/{stranger}/pauses/{pause['id']}"), 404,
             "pause_not_found")
    assert client.get(f"/v1/citizens/{citizen}/pauses/{pause['id']}").json()["cancelled_at"] is None


def test_escalation_policy_defaults_and_is_replaced(client: TestClient, conn: psycopg.Connection[Any],
                                                   team: dict[str, Any]) -> None:
    path = f"/v1/teams/{team['id']}/escalation-policy"
    default = client.get(path).json()
    assert default["is_default"] is True and default["updated_at"] is None
    assert [s["contact"]["target"] for s in default["steps"]] == [
        "nurse_on_duty", "on_call_nurse", "team_lead"]

    webhook = service.add_webhook(conn, UUID(team["id"]), "http://127.0.0.1:9/hook", "s", NOW)
    steps = [{"after_s": 120, "contact": {"kind": "role", "target": "nurse_on_duty"}},
             {"after_s": 600, "contact": {"kind": "webhook", "target": str(webhook.id)}},
             {"after_s": 900, "contact": {"kind": "stream", "target": "team"}}]
    saved = client.put(path, json={"steps": steps})
    assert saved.status_code == 200, saved.text
    assert saved.json()["is_default"] is False and saved.json()["updated_at"] == Z
    assert saved.json()["steps"] == steps
    assert client.get(path).json() == saved.json()

    for bad in ([{**steps[0], "after_s": 600}, steps[1]],  # not increasing
                [{"after_s": 60, "contact": {"kind": "webhook", "target": "999999"}}]):
        problem(client.put(path, json={"steps": bad}), 422, "invalid_escalation_policy")
    for malformed in ([], [{"after_s": 0, "contact": steps[0]["contact"]}],
                      [{"after_s": 60, "contact": {"kind": "webhook", "target": "abc"}}],
                      [{"after_s": 60, "contact": {"kind": "pager", "target": "x"}}]):
        problem(client.put(path, json={"steps": malformed}), 422, "invalid_request")
    assert client.get(path).json() == saved.json()
    problem(client.get(f"/v1/teams/{uuid4()}/escalation-policy"), 404, "care_team_not_found")
    problem(client.put(f"/v1/teams/{uuid4()}/escalation-policy", json={"steps": steps}), 404,
             "care_team_not_found")


def test_a_team_adds_webhooks_sees_the_secret_once_and_switches_them(
        client: TestClient, conn: psycopg.Connection[Any], team: dict[str, Any]) -> None:
    path = f"/v1/teams/{team['id']}/webhooks"
    assert client.get(path).json() == []
    added = client.post(path, json={"url": "https://care.example/hooks/telecare?team=1"})
    assert added.status_code == 201, added.text
    hook = added.json()
    assert hook["active"] is True and hook["care_team_id"] == team["id"]
    assert hook["created_at"] == Z and len(hook["secret"]) >= 40
    stored = service.webhooks_of_team(conn, UUID(team["id"]))
    assert [(w.id, w.secret) for w in stored] == [(hook["id"], hook["secret"])]
    public = {k: v for k, v in hook.items() if k != "secret"}
    assert client.get(path).json() == [public]  # never the secret again

    switched = client.patch(f"{path}/{hook['id']}", json={"active": False})
    assert switched.status_code == 200, switched.text
    assert switched.json() == {**public, "active": False}
    assert client.get(path).json() == [{**public, "active": False}]

    other = client.post("/v1/teams", json={"name": f"Team {uuid4().hex[:8]}"}).json()
    problem(client.patch(f"/v1/teams/{other['id']}/webhooks/{hook['id']}",
                         json={"active": True}), 404, "webhook_not_found")
    assert client.get(path).json()[0]["active"] is False  # another team cannot switch it
    for bad in ("ftp://care.example/x", "https://", "care.example/hooks", "https://a b/"):
        problem(client.post(path, json={"url": bad}), 422, "invalid_request")
    problem(client.post(path, json={"url": "https://x.example", "secret": "mine"}), 422,
            "invalid_request")
    problem(client.post(f"/v1/teams/{uuid4()}/webhooks", json={"url": "https://x.example"}),
            404, "care_team_not_found")
    problem(client.get(f"/v1/teams/{uuid4()}/webhooks"), 404, "care_team_not_found")


@pytest.mark.parametrize(("path", "allowed"), [
    ("/v1/teams", "GET, POST"),
    ("/v1/citizens/{citizen}/plans/copd", "DELETE, GET, PUT"),
    ("/v1/citizens/{citizen}/pauses/1", "DELETE, GET"),
    ("/v1/alerts/1/resolve", "POST"),
])
def test_method_not_allowed_names_every_method_of_the_path(client: TestClient, citizen: UUID,
                                                          path: str, allowed: str) -> None:
    response = client.request("PATCH", path.format(citizen=citizen))
    problem(response, 405)
    assert response.headers["allow"] == allowed
