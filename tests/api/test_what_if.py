"""A nurse's "what would these bands have raised?" through the API: the production rules over
stored readings, stored as a replay run, nothing saved as a threshold and nobody notified."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any
from uuid import UUID

import psycopg
from fastapi.testclient import TestClient

from alerts import service
from tests.api.conftest import NOW
from tests.conftest import count

MakeDevice = Callable[..., tuple[str, UUID]]
SYSTOLIC = (150.0, 152.0, 171.0, 149.0)  # one a day, the last four days


def _citizen_with_readings(conn: psycopg.Connection[Any], make_device: MakeDevice) -> UUID:
    device, citizen = make_device("bp_monitor")
    service.set_plan(conn, citizen, "hypertension", NOW - timedelta(days=60), "test", NOW)
    for days_ago, value in zip(range(len(SYSTOLIC), 0, -1), SYSTOLIC, strict=True):
        at = NOW - timedelta(days=days_ago)
        conn.execute("INSERT INTO readings (device_id, metric, measured_at, seq, citizen_id, value,"
                     " received_at, late) VALUES (%s, 'systolic_bp', %s, %s, %s, %s, %s, false)",
                     (device, at, days_ago, citizen, value, at))
    return citizen


def _alerts(body: dict[str, Any]) -> dict[str, tuple[str, int]]:
    return {a["rule"]: (a["severity"], a["count"]) for a in body["alerts"]}


def test_what_if_shows_what_proposed_bands_would_have_raised_and_changes_nothing(
        client: TestClient, conn: psycopg.Connection[Any], make_device: MakeDevice) -> None:
    citizen = _citizen_with_readings(conn, make_device)
    url = f"/v1/citizens/{citizen}/thresholds/systolic_bp/what-if"
    history = count(conn, "SELECT count(*) FROM alert_history")

    # The plan's default bands (yellow above 159, red above 179): one yellow, the 171.
    default = client.post(url, json={"warning_high": 159, "alert_high": 179}).json()
    assert _alerts(default) == {"threshold:blood_pressure": ("yellow", 1)}
    # Stricter bands: yellow above 145 for all four, red above 165 for the 171.
    stricter = client.post(url, json={"warning_high": 145, "alert_high": 165})
    assert stricter.status_code == 200, stricter.text
    assert _alerts(stricter.json()) == {"threshold:blood_pressure": ("red", 4)}
    assert stricter.json()["readings_and_events"] == len(SYSTOLIC)

    assert count(conn, "SELECT count(*) FROM thresholds WHERE citizen_id = %s", citizen) == 0
    assert count(conn, "SELECT count(*) FROM alerts WHERE citizen_id = %s", citizen) == 0
    assert count(conn, "SELECT count(*) FROM alert_history") == history
    assert count(conn, "SELECT count(*) FROM replay_runs WHERE id = %s",
                 stricter.json()["run_id"]) == 1


def test_what_if_refuses_bands_out_of_order_a_bad_period_and_an_unknown_citizen(
        client: TestClient, conn: psycopg.Connection[Any], make_device: MakeDevice) -> None:
    citizen = _citizen_with_readings(conn, make_device)
    url = f"/v1/citizens/{citizen}/thresholds/systolic_bp/what-if"
    for body in ({"warning_high": 170, "alert_high": 160},
                 {"warning_high": 150, "start": NOW.isoformat(),
                  "end": (NOW - timedelta(days=1)).isoformat()},
                 {"warning_high": 150, "start": (NOW - timedelta(days=200)).isoformat()}):
        response = client.post(url, json=body)
        assert response.status_code == 422, response.text
        assert response.headers["content-type"] == "application/problem+json"
    unknown = client.post("/v1/citizens/00000000-0000-4000-8000-000000000000/thresholds/"
                          "systolic_bp/what-if", json={"warning_high": 150})
    assert unknown.status_code == 404
