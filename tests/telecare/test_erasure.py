"""Erasure within the retention rules (`telecare citizens erase`, api/erasure.py) on the real
database: with short retention what is past it goes and what is within it stays, each kind with
its reason and date; a dry run changes nothing; processing stops; identity goes only with the
last data that needs it; counted from the last entry, a recent entry keeps the whole record;
another citizen is untouched; every erasure and every report is in the audit log."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import psycopg
import pytest
from fastapi.testclient import TestClient
from psycopg.types.json import Jsonb
from pydantic import SecretStr

from api.app import create_app
from api.auth.models import User
from api.auth.tokens import issue_access_token
from api.erasure import Retention
from core.db import open_pool
from core.roles import process_dsn
from core.settings import Settings
from devices import repository as devices_repo
from devices import service as devices_service
from devices.errors import CitizenNotFound
from devices.models import Device
from devices.repository import ReadingRow
from telecare import cli
from telecare.erasure import erase
from tests.alerts.delivery_data import care_team, delivery, history, screen_message, webhook
from tests.api.test_access import KEY
from tests.api.test_access import _user as make_user
from tests.conftest import only_on

pytestmark = only_on("postgres")

Conn = psycopg.Connection[Any]
# The CLI reads the system clock; the data is laid out around it.
NOW = datetime.now(UTC).replace(microsecond=0)
OLD = NOW - timedelta(days=20)  # past a 5-day retention
RECENT = NOW - timedelta(hours=1)  # within it
DAYS = 5
SHORT = Retention(readings=DAYS, events=DAYS, devices=DAYS, alerts=DAYS, care=DAYS,
                  proxies=DAYS, audit=DAYS, from_last_entry=False)
# (table, the citizen's rows): what one citizen holds, counted here
TABLES = {
    "readings": "SELECT count(*) FROM readings WHERE citizen_id = %(c)s",
    "device_events": "SELECT count(*) FROM device_events WHERE citizen_id = %(c)s",
    "device_pairings": "SELECT count(*) FROM device_pairings WHERE citizen_id = %(c)s",
    "alerts": "SELECT count(*) FROM alerts WHERE citizen_id = %(c)s",
    "alert_history": "SELECT count(*) FROM alert_history h JOIN alerts a ON a.id = h.alert_id"
                     " WHERE a.citizen_id = %(c)s",
    "alert_findings": "SELECT count(*) FROM alert_findings WHERE citizen_id = %(c)s",
    "screen_messages": "SELECT count(*) FROM screen_messages WHERE citizen_id = %(c)s",
    "citizen_plans": "SELECT count(*) FROM citizen_plans WHERE citizen_id = %(c)s",
    "thresholds": "SELECT count(*) FROM thresholds WHERE citizen_id = %(c)s",
    "alert_pauses": "SELECT count(*) FROM alert_pauses WHERE citizen_id = %(c)s",
    "proxies": "SELECT count(*) FROM proxies WHERE citizen_id = %(c)s",
    "audit_log": "SELECT count(*) FROM audit_log WHERE citizen_id = %(c)s",
    "open_pairings": "SELECT count(*) FROM device_pairings WHERE citizen_id = %(c)s"
                     " AND upper_inf(valid)",
    "proxies_open": "SELECT count(*) FROM proxies WHERE citizen_id = %(c)s"
                    " AND revoked_at IS NULL",
    "name": "SELECT display_name FROM citizens WHERE id = %(c)s",
    "user_disabled": "SELECT count(*) FROM users WHERE citizen_id = %(c)s"
                     " AND disabled_at IS NOT NULL",
}


def snapshot(conn: Conn, citizen: UUID) -> dict[str, Any]:
    return {name: row[0] for name, query in TABLES.items()
            if (row := conn.execute(query, {"c": citizen}).fetchone()) is not None}


def _device(conn: Conn, citizen: UUID, since: datetime, until: datetime | None) -> str:
    device = f"bp-{uuid.uuid4().hex[:10]}"
    devices_service.register_device(conn, Device(id=device, kind="bp_monitor",  # type: ignore[arg-type]
                                                 model="M", serial=f"S-{device}"))
    devices_service.pair_device(conn, device, citizen, since)
    if until is not None:
        devices_service.unpair_device(conn, device, until)
    return device


def _readings(conn: Conn, device: str, citizen: UUID, times: list[datetime]) -> None:
    devices_repo.prepare_reading_stage(conn)
    with conn.transaction():
        devices_repo.insert_readings(conn, [
            ReadingRow(device, "systolic_bp", at, seq, citizen, 130.0, at, None, False, None,
                       "valid", False) for seq, at in enumerate(times)])


def _alert(conn: Conn, citizen: UUID, at: datetime, *, resolved: bool, rule: str,
           threshold: int | None = None) -> int:
    row = conn.execute(
        "INSERT INTO alerts (citizen_id, rule, severity, state, first_measured_at,"
        " last_measured_at, opened_at, updated_at, is_current, summary, acknowledged_at,"
        " resolved_at, threshold_id) VALUES (%s, %s, 'red', %s, %s, %s, %s, %s, true, 'x', %s,"
        " %s, %s) RETURNING id",
        (citizen, rule, "resolved" if resolved else "open", at, at, at, at,
         at if resolved else None, at if resolved else None, threshold)).fetchone()
    assert row is not None
    alert = int(row[0])
    history(conn, alert, None, at)
    conn.execute("INSERT INTO alert_findings (citizen_id, rule, occurrence, alert_id, severity,"
                 " measured_at, evaluated_at, is_current) VALUES (%s, %s, %s, %s, 'red', %s, %s,"
                 " true)", (citizen, rule, f"o-{alert}", alert, at, at))
    screen_message(conn, citizen, at, alert_id=alert)
    return alert


def make_citizen(conn: Conn, *, old_only: bool = False) -> UUID:
    """A citizen with data of every kind, old (20 days ago, all of it ended) and, unless
    old_only, recent (an hour ago, in force now), and a user of their own."""
    team = care_team(conn)
    citizen = devices_service.enrol_citizen(conn, "Karen Olsen", ["copd"])
    conn.execute("UPDATE citizens SET care_team_id = %s WHERE id = %s", (team, citizen))
    old_device = _device(conn, citizen, OLD - timedelta(days=1), OLD + timedelta(hours=1))
    _readings(conn, old_device, citizen, [OLD, OLD + timedelta(minutes=1)])
    conn.execute("INSERT INTO device_events (device_id, measured_at, seq, kind, citizen_id,"
                 " received_at, late, data) VALUES (%s, %s, 1, 'emergency_button', %s, %s, false,"
                 " %s)", (old_device, OLD, citizen, OLD, Jsonb({})))
    old_threshold = conn.execute(
        "INSERT INTO thresholds (citizen_id, metric, version, alert_high, valid_from, set_by,"
        " set_at) VALUES (%s, 'systolic_bp', 1, 170, %s, 'n', %s) RETURNING id",
        (citizen, OLD - timedelta(days=5), OLD - timedelta(days=5))).fetchone()
    assert old_threshold is not None
    old_alert = _alert(conn, citizen, OLD, resolved=True, rule="old", threshold=old_threshold[0])
    hook = webhook(conn, team, "https://example.org/hook")
    first = conn.execute("SELECT min(id) FROM alert_history WHERE alert_id = %s",
                         (old_alert,)).fetchone()
    assert first is not None
    delivery(conn, hook, first[0], OLD)
    conn.execute("INSERT INTO citizen_plans (citizen_id, plan, valid, set_by, set_at) VALUES"
                 " (%s, 'copd', tstzrange(%s, %s), 'n', %s)",
                 (citizen, OLD - timedelta(days=9), OLD, OLD - timedelta(days=9)))
    conn.execute("INSERT INTO alert_pauses (citizen_id, during, reason, created_by, created_at)"
                 " VALUES (%s, tstzrange(%s, %s), 'holiday', 'n', %s)",
                 (citizen, OLD - timedelta(days=2), OLD, OLD - timedelta(days=2)))
    relative = make_user(conn, "relative")
    conn.execute("INSERT INTO proxies (citizen_id, relative_id, kinds, valid, granted_by,"
                 " granted_at, revoked_at) VALUES (%s, %s, '{readings}', tstzrange(%s, NULL),"
                 " 'n', %s, %s)", (citizen, relative.id, OLD - timedelta(days=3),
                                   OLD - timedelta(days=3), OLD))
    conn.execute("INSERT INTO audit_log (at, request_id, role, action, what, citizen_id,"
                 " purpose, route) VALUES (%s, %s, 'nurse', 'read', 'readings', %s, 'care',"
                 " 'GET x')", (OLD, uuid.uuid4(), citizen))
    make_user(conn, "citizen", citizen)
    if old_only:
        return citizen
    device = _device(conn, citizen, NOW - timedelta(days=2), None)
    _readings(conn, device, citizen, [RECENT])
    conn.execute("INSERT INTO device_events (device_id, measured_at, seq, kind, citizen_id,"
                 " received_at, late, data) VALUES (%s, %s, 1, 'emergency_button', %s, %s, false,"
                 " %s)", (device, RECENT, citizen, RECENT, Jsonb({})))
    conn.execute("INSERT INTO thresholds (citizen_id, metric, version, alert_high, valid_from,"
                 " set_by, set_at) VALUES (%s, 'systolic_bp', 2, 175, %s, 'n', %s)",
                 (citizen, OLD + timedelta(hours=1), OLD + timedelta(hours=1)))  # in force
    _alert(conn, citizen, RECENT, resolved=False, rule="recent")
    conn.execute("INSERT INTO citizen_plans (citizen_id, plan, valid, set_by, set_at) VALUES"
                 " (%s, 'copd', tstzrange(%s, NULL), 'n', %s)",
                 (citizen, NOW - timedelta(days=2), NOW - timedelta(days=2)))
    conn.execute("INSERT INTO proxies (citizen_id, relative_id, kinds, valid, granted_by,"
                 " granted_at) VALUES (%s, %s, '{readings}', tstzrange(%s, NULL), 'n', %s)",
                 (citizen, relative.id, NOW - timedelta(days=1), NOW - timedelta(days=1)))
    conn.execute("INSERT INTO audit_log (at, request_id, role, action, what, citizen_id,"
                 " purpose, route) VALUES (%s, %s, 'nurse', 'read', 'readings', %s, 'care',"
                 " 'GET x')", (RECENT, uuid.uuid4(), citizen))
    return citizen


# What the old half of make_citizen holds, and the recent half (per snapshot name).
OLD_ROWS = {"readings": 2, "device_events": 1, "device_pairings": 1, "alerts": 1,
            "alert_history": 1, "alert_findings": 1, "screen_messages": 1, "citizen_plans": 1,
            "thresholds": 1, "alert_pauses": 1, "proxies": 1, "audit_log": 1}
RECENT_ROWS = {"readings": 1, "device_events": 1, "device_pairings": 1, "alerts": 1,
               "alert_history": 1, "alert_findings": 1, "screen_messages": 1, "citizen_plans": 1,
               "thresholds": 1, "alert_pauses": 0, "proxies": 1, "audit_log": 1}


def _erasures(conn: Conn, citizen: UUID) -> list[tuple[str, str]]:
    return conn.execute("SELECT action, what FROM audit_log WHERE citizen_id = %s AND what ="
                        " 'erasure' ORDER BY id", (citizen,)).fetchall()


def test_a_dry_run_reports_and_changes_nothing(conn: Conn) -> None:
    citizen, other = make_citizen(conn), make_citizen(conn)
    before, others_before = snapshot(conn, citizen), snapshot(conn, other)
    report = erase(conn, citizen, SHORT, NOW, dry_run=True)
    assert report.dry_run
    for name, count in (("readings", 2), ("device_events", 1), ("devices", 1), ("alerts", 1),
                        ("screen_messages", 1), ("plans", 1), ("thresholds", 1), ("pauses", 1),
                        ("proxies", 1), ("audit_log", 1)):
        assert report.kinds[name].delete == count, name
    assert report.processing.devices_taken_back and report.processing.plans_ended == 1
    assert report.processing.proxies_revoked == 1 and report.processing.user_disabled
    after = snapshot(conn, citizen)
    assert {**after, "audit_log": before["audit_log"]} == before  # only its own record is new
    assert after["audit_log"] == before["audit_log"] + 1
    assert _erasures(conn, citizen) == [("read", "erasure")]
    assert snapshot(conn, other) == others_before


def test_an_erasure_deletes_what_is_past_retention_keeps_the_rest_and_stops_processing(
        conn: Conn) -> None:
    citizen, other = make_citizen(conn), make_citizen(conn)
    before, others_before = snapshot(conn, citizen), snapshot(conn, other)
    planned = erase(conn, citizen, SHORT, NOW, dry_run=True)
    report = erase(conn, citizen, SHORT, NOW, dry_run=False)
    assert not report.dry_run
    # what the dry run said, but for its own record in the audit log
    mask = {"dry_run": True, "kinds": {"audit_log": True}}
    assert report.model_dump(exclude=mask) == planned.model_dump(exclude=mask)
    assert report.kinds["audit_log"].keep == planned.kinds["audit_log"].keep + 1
    after = snapshot(conn, citizen)
    for name, old in OLD_ROWS.items():
        # the audit log also holds the dry run's and the erasure's own records
        extra = 2 if name == "audit_log" else 0
        assert after[name] == before[name] - old + extra, name
        assert after[name] == RECENT_ROWS[name] + extra, name
    for name in ("readings", "device_events", "devices", "alerts", "thresholds", "plans",
                 "proxies", "audit_log"):
        kept = report.kinds[name]
        assert kept.keep >= 1 and str(DAYS) in kept.reason and kept.rule, name
        assert kept.next_may_go is not None and NOW < kept.next_may_go <= NOW + timedelta(days=DAYS)
    assert report.kinds["pauses"].keep == 0
    # processing stops
    assert after["open_pairings"] == 0 and after["proxies_open"] == 0
    assert after["user_disabled"] == 1
    in_force = conn.execute("SELECT count(*) FROM citizen_plans WHERE citizen_id = %s AND"
                            " valid @> %s::timestamptz", (citizen, NOW + timedelta(seconds=1))
                            ).fetchone()
    assert in_force == (0,)
    assert after["name"] == "Karen Olsen" and report.identity_kept  # data is kept
    assert _erasures(conn, citizen) == [("read", "erasure"), ("change", "erasure")]
    assert snapshot(conn, other) == others_before


def test_identity_goes_with_the_last_data_that_needs_it(conn: Conn) -> None:
    citizen = make_citizen(conn, old_only=True)
    # its one threshold is in force to the end (now): with care kept 0 days it goes too
    report = erase(conn, citizen, Retention(**{**SHORT.__dict__, "care": 0}), NOW, dry_run=False)
    assert not report.identity_kept
    after = snapshot(conn, citizen)
    assert after["name"] == "(erased)"
    assert all(after[name] == 0 for name in OLD_ROWS if name != "audit_log")
    assert after["audit_log"] == 1  # the erasure's own record
    user = conn.execute("SELECT display_name, disabled_at FROM users WHERE citizen_id = %s",
                        (citizen,)).fetchone()
    assert user is not None and user[0] == "(erased)" and user[1] is not None


def test_counted_from_the_last_entry_a_recent_entry_keeps_the_whole_record(conn: Conn) -> None:
    citizen = make_citizen(conn)
    report = erase(conn, citizen, Retention(**{**SHORT.__dict__, "from_last_entry": True}), NOW,
                   dry_run=False)
    assert report.last_entry is not None and report.last_entry >= RECENT
    after = snapshot(conn, citizen)
    for name in ("readings", "device_events", "alerts", "thresholds"):
        assert after[name] == OLD_ROWS[name] + RECENT_ROWS[name], name
        assert report.kinds[name].delete == 0
    # the proxies and the audit log count from their own time
    assert after["proxies"] == RECENT_ROWS["proxies"]
    assert report.kinds["readings"].all_may_go == report.last_entry + timedelta(days=DAYS)


def test_the_cli_prints_the_report_and_the_api_gives_the_same_dry_run(
        conn: Conn, database: str, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    citizen = make_citizen(conn)
    before = snapshot(conn, citizen)
    monkeypatch.setenv("TELECARE_DATABASE_URL", database)
    for name in ("READINGS", "EVENTS", "DEVICES", "ALERTS", "CARE", "PROXIES", "AUDIT"):
        monkeypatch.setenv(f"TELECARE_RETENTION_{name}_DAYS", str(DAYS))
    monkeypatch.setenv("TELECARE_RETENTION_FROM_LAST_ENTRY", "false")
    assert cli.main(["citizens", "erase", str(citizen), "--dry-run"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["dry_run"] is True and printed["kinds"]["readings"]["delete"] == 2

    with _client(database) as client:
        admin = make_user(conn, "administrator")
        answer = client.get(f"/v1/citizens/{citizen}/erasure", headers=as_user(admin))
        assert answer.status_code == 200, answer.text
        # the same, but for the CLI's own record in the audit log
        kinds = answer.json()["kinds"]
        assert kinds.pop("audit_log")["keep"] == printed["kinds"].pop("audit_log")["keep"] + 1
        assert {name: (k["delete"], k["keep"]) for name, k in kinds.items()} == {
            name: (k["delete"], k["keep"]) for name, k in printed["kinds"].items()}
        assert client.get(f"/v1/citizens/{citizen}/erasure",
                          headers=as_user(make_user(conn, "nurse"))).status_code == 403
        assert client.get(f"/v1/citizens/{uuid.uuid4()}/erasure",
                          headers=as_user(admin)).status_code == 404
    assert _erasures(conn, citizen) == [("read", "erasure"), ("read", "erasure")]
    assert {**snapshot(conn, citizen), "audit_log": 0} == {**before, "audit_log": 0}

    assert cli.main(["citizens", "erase", str(citizen)]) == 0
    assert json.loads(capsys.readouterr().out)["dry_run"] is False
    assert snapshot(conn, citizen)["readings"] == RECENT_ROWS["readings"]
    assert cli.main(["citizens", "erase", str(uuid.uuid4())]) == 2


def test_an_unknown_citizen_is_not_found(conn: Conn) -> None:
    with pytest.raises(CitizenNotFound):
        erase(conn, uuid.uuid4(), SHORT, NOW, dry_run=True)


def as_user(user: User) -> dict[str, str]:
    return {"Authorization": "Bearer " + issue_access_token(user, KEY, NOW, timedelta(minutes=5))}


def _client(database: str) -> Any:
    class Client:
        def __enter__(self) -> TestClient:
            self.pool = open_pool(process_dsn(database, "api"), max_size=2)
            settings = Settings(database_url=database, auth_signing_key=SecretStr(KEY),
                                auth_required=True, retention_readings_days=DAYS,
                                retention_events_days=DAYS, retention_devices_days=DAYS,
                                retention_alerts_days=DAYS, retention_care_days=DAYS,
                                retention_proxies_days=DAYS, retention_audit_days=DAYS,
                                retention_from_last_entry=False)
            self.client = TestClient(create_app(settings, pool=self.pool, clock=lambda: NOW),
                                     raise_server_exceptions=False)
            return self.client.__enter__()

        def __exit__(self, *exc: object) -> None:
            self.client.__exit__(*exc)
            self.pool.close()
    return Client()

