"""The archive of everything held about a citizen (GET /v1/citizens/{id}/export) on the real
database: for generated citizens it holds every kind of their data with the right counts and
nothing of any other citizen; it is for the citizen and administrators only (everyone else:
404 as for a citizen that does not exist); the citizen's look-ups name no one; it is recorded."""

from __future__ import annotations

import csv
import io
import json
import random
import uuid
import zipfile
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from uuid import UUID

import psycopg
import pytest
from fastapi.testclient import TestClient
from psycopg.types.json import Jsonb

from devices import repository as devices_repo
from devices.repository import ReadingRow
from tests.alerts.delivery_data import history, open_alert, screen_message
from tests.api.conftest import NOW, problem
from tests.api.test_access import KINDS, Plan, Proxy, World, as_user, build
from tests.conftest import new_device, only_on

pytestmark = only_on("postgres")

Conn = psycopg.Connection[Any]
FILES = {"README.txt", "manifest.json", "citizen.json", "readings.csv", "device_events.csv",
         "devices.csv", "alerts.json", "screen_messages.csv", "care.json", "proxies.json",
         "lookups.csv"}


@pytest.fixture
def client(signed_in_client: TestClient) -> TestClient:
    return signed_in_client


@dataclass
class Made:
    """What the test put in for one citizen, counted here (not by the code under test)."""

    readings: int = 2  # build() gives each citizen two
    events: int = 0
    devices: int = 1
    alerts: int = 1
    history: int = 0
    findings: int = 0
    messages: int = 0
    care: int = 0
    proxies: int = 0


def populate(conn: Conn, citizen: UUID, device: str, rng: random.Random) -> Made:
    """A generated amount of every kind of data for the citizen."""
    made = Made()
    rows = [ReadingRow(device, rng.choice(["systolic_bp", "diastolic_bp", "pulse_rate"]),
                       NOW - timedelta(days=2, minutes=seq), 100 + seq, citizen, 70.0 + seq,
                       NOW - timedelta(days=2), None, seq % 3 == 0,
                       "device" if seq % 3 == 0 else None, "valid", False)
            for seq in range(rng.randint(1, 60))]
    devices_repo.prepare_reading_stage(conn)
    with conn.transaction():
        devices_repo.insert_readings(conn, rows)
    made.readings += len(rows)
    for seq in range(rng.randint(1, 5)):
        at = NOW - timedelta(hours=seq + 3)
        conn.execute("INSERT INTO device_events (device_id, measured_at, seq, kind, citizen_id,"
                     " received_at, late, data) VALUES (%s, %s, %s, 'emergency_button', %s, %s,"
                     " false, %s)", (device, at, seq, citizen, at, Jsonb({"pressed": True})))
        made.events += 1
    second, _ = new_device(conn, "pulse_oximeter", citizen)
    made.devices += 1
    for n in range(rng.randint(0, 3)):
        alert = open_alert(conn, citizen, None, NOW - timedelta(days=1, minutes=n),
                           rule=f"rule_{n}")
        made.alerts += 1
        for step in range(rng.randint(1, 3)):
            history(conn, alert, None, NOW - timedelta(hours=20 - step))
            made.history += 1
        conn.execute("INSERT INTO alert_findings (citizen_id, rule, occurrence, alert_id,"
                     " severity, measured_at, evaluated_at, is_current) VALUES (%s, %s, %s, %s,"
                     " 'red', %s, %s, true)", (citizen, f"rule_{n}", f"{second}:1", alert,
                                               NOW - timedelta(days=1), NOW - timedelta(days=1)))
        made.findings += 1
        screen_message(conn, citizen, NOW - timedelta(hours=19), alert_id=alert)
        made.messages += 1
    for plan in rng.sample(["copd", "heart_failure", "hypertension"], rng.randint(1, 3)):
        conn.execute("INSERT INTO citizen_plans (citizen_id, plan, valid, set_by, set_at) VALUES"
                     " (%s, %s, tstzrange(%s, NULL), 'nurse', %s)",
                     (citizen, plan, NOW - timedelta(days=30), NOW - timedelta(days=30)))
        made.care += 1
    for version in range(1, rng.randint(1, 3) + 1):
        conn.execute("INSERT INTO thresholds (citizen_id, metric, version, alert_high, valid_from,"
                     " set_by, set_at) VALUES (%s, 'systolic_bp', %s, %s, %s, 'nurse', %s)",
                     (citizen, version, 170 + version, NOW - timedelta(days=10 - version),
                      NOW - timedelta(days=10 - version)))
        made.care += 1
    conn.execute("INSERT INTO alert_pauses (citizen_id, during, reason, created_by, created_at)"
                 " VALUES (%s, tstzrange(%s, %s), 'holiday', 'nurse', %s)",
                 (citizen, NOW - timedelta(days=6), NOW - timedelta(days=4), NOW - timedelta(days=7)))
    made.care += 1
    return made


def _archive(response: Any) -> dict[str, str]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/zip"
    assert response.headers["content-disposition"].startswith("attachment; filename=")
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        return {name: archive.read(name).decode() for name in archive.namelist()}


def _csv(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def _world(conn: Conn, seed: int) -> tuple[World, dict[UUID, Made]]:
    world = build(conn, Plan(teams=1, citizen_teams=[0, 0], nurse_teams=frozenset({0}),
                             own_citizen=0, proxies=[Proxy(0, frozenset(KINDS), 2, None, False),
                                                     Proxy(1, frozenset(KINDS), 2, None, True)]))
    rng = random.Random(seed)
    made = {citizen: populate(conn, citizen, device, rng)
            for citizen, device in zip(world.citizens, world.devices, strict=True)}
    for citizen in world.citizens:
        made[citizen].proxies = 1
    return world, made


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_archive_holds_every_kind_of_the_citizens_data_and_nothing_of_another(
        conn: Conn, client: TestClient, seed: int) -> None:
    world, made = _world(conn, seed)
    mine, other = world.citizens
    nurse = world.users["nurse"]
    # the nurse looks twice: two look-ups in the citizen's log, by name
    for path in ("readings?metric=systolic_bp&start=2026-11-01T00:00:00Z", "plans"):
        assert client.get(f"/v1/citizens/{mine}/{path}", headers=as_user(nurse)).status_code == 200
    for role in ("citizen", "administrator"):
        files = _archive(client.get(f"/v1/citizens/{mine}/export",
                                    headers=as_user(world.users[role])))
        assert set(files) == FILES
        expected = made[mine]
        readings = _csv(files["readings.csv"])
        assert len(readings) == expected.readings
        assert {r["unit"] for r in readings} <= {"mm[Hg]", "/min"} and all(
            r["received_at"] and r["measured_at"] and r["device_id"] and r["quality"] == "valid"
            for r in readings)
        assert any(r["late"] == "true" and r["delay_cause"] == "device" for r in readings)
        assert len(_csv(files["device_events.csv"])) == expected.events
        devices = _csv(files["devices.csv"])
        assert len(devices) == expected.devices and all(d["valid_from"] for d in devices)
        alerts = json.loads(files["alerts.json"])
        assert len(alerts) == expected.alerts
        assert sum(len(a["history"]) for a in alerts) == expected.history
        assert sum(len(a["findings"]) for a in alerts) == expected.findings
        assert len(_csv(files["screen_messages.csv"])) == expected.messages
        care = json.loads(files["care.json"])
        assert sum(len(rows) for rows in care.values()) == expected.care
        assert len(json.loads(files["proxies.json"])) == expected.proxies
        assert json.loads(files["citizen.json"])["id"] == str(mine)
        manifest = json.loads(files["manifest.json"])
        assert manifest["files"]["readings.csv"]["rows"] == expected.readings
        assert f"readings.csv ({expected.readings} rows)" in files["README.txt"]

        lookups = _csv(files["lookups.csv"])
        logged = conn.execute("SELECT count(*) FROM audit_log WHERE citizen_id = %s",
                              (mine,)).fetchone()
        assert logged is not None and len(lookups) == logged[0]
        assert sum(1 for row in lookups if row["role"] == "nurse") == 2
        if role == "citizen":  # when, role, what, why: not who
            assert set(lookups[0]) == {"at", "role", "action", "what", "purpose"}
            assert nurse.username not in files["lookups.csv"]
            assert str(nurse.id) not in files["lookups.csv"]
        else:
            assert nurse.username in files["lookups.csv"]

        # nothing of any other citizen: no id of one, nor the other citizen's devices
        others = {str(row[0]) for row in conn.execute(
            "SELECT id FROM citizens WHERE id <> %s", (mine,))}
        theirs = {str(row[0]) for row in conn.execute(
            "SELECT device_id FROM device_pairings WHERE citizen_id = %s", (other,))}
        assert str(other) in others and theirs
        for name, text in files.items():
            assert not [c for c in others if c in text], (role, name)
            assert not [d for d in theirs if d in text], (role, name)


def test_only_the_citizen_and_administrators_get_it_the_rest_as_for_no_citizen(
        conn: Conn, client: TestClient) -> None:
    world, _ = _world(conn, 4)
    mine, other = world.citizens
    missing = problem(client.get(f"/v1/citizens/{uuid.uuid4()}/export",
                                 headers=as_user(world.users["administrator"])), 404,
                      "citizen_not_found")
    for role in ("nurse", "relative", "project_lead", "service"):
        refused = problem(client.get(f"/v1/citizens/{mine}/export",
                                     headers=as_user(world.users[role])), 404, "citizen_not_found")
        assert refused["title"] == missing["title"] and refused["type"] == missing["type"]
    # the citizen user of `mine` may not have another citizen's archive
    problem(client.get(f"/v1/citizens/{other}/export", headers=as_user(world.users["citizen"])),
            404, "citizen_not_found")
    problem(client.get(f"/v1/citizens/{mine}/export"), 401)
    problem(client.get("/v1/citizens/not-an-id/export",
                       headers=as_user(world.users["administrator"])), 422)
    refused_rows = conn.execute("SELECT count(*) FROM audit_log WHERE citizen_id = %s AND action"
                                " = 'export'", (mine,)).fetchone()
    assert refused_rows == (0,)


def test_the_export_is_in_the_audit_log(conn: Conn, client: TestClient) -> None:
    world, _ = _world(conn, 5)
    mine = world.citizens[0]
    citizen = world.users["citizen"]
    _archive(client.get(f"/v1/citizens/{mine}/export", headers=as_user(citizen),
                        ))
    rows = conn.execute("SELECT action, what, user_id, role, purpose, route FROM audit_log"
                        " WHERE citizen_id = %s AND action = 'export'", (mine,)).fetchall()
    assert rows == [("export", "archive", citizen.id, "citizen", "self",
                     f"GET /v1/citizens/{mine}/export")]


def test_openapi_documents_the_archive(client: TestClient) -> None:
    operation = client.get("/openapi.json").json()["paths"]["/v1/citizens/{citizen_id}/export"]["get"]
    assert set(operation["responses"]["200"]["content"]) == {"application/zip"}
    assert {"404", "422"} <= set(operation["responses"])
