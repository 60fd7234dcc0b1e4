"""Pilots over the API on the real database: for generated pilots, citizens (enrolled in some
pilots, for a while or still), their readings and alerts, and project leads (each leading
some pilots), a lead sees the aggregates of exactly the pilots they lead and 404 for the rest;
no answer to a project lead holds a citizen id, device id, citizen name or team name; counts
are suppressed below 5; pseudonyms are the keyed HMAC of docs/access.md, stable, per pilot,
and change with the key. The expectations are worked out here from the generated world."""

from __future__ import annotations

import hashlib
import hmac
import json
import statistics
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import psycopg
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from alerts.plans import LOCAL
from api.app import create_app
from api.auth.models import User
from api.auth.tokens import issue_access_token
from core.db import open_pool
from core.settings import Settings
from devices import repository as devices_repo
from devices import service as devices_service
from devices.repository import ReadingRow
from tests.alerts.delivery_data import care_team
from tests.api.conftest import NOW, problem
from tests.api.test_access import _user
from tests.conftest import new_device, only_on

pytestmark = only_on("postgres")

SIGNING_KEY = "s" * 40
PSEUDONYM_KEY = "p" * 40
OTHER_KEY = "q" * 40
PILOT_START = NOW - timedelta(days=30)
ENROLLED_FROM = NOW - timedelta(days=20)
ENDED_AT = NOW - timedelta(days=5)
Conn = psycopg.Connection[Any]
COUNT_FIELDS = ("citizens_enrolled", "readings", "citizens", "scheduled", "on_time", "alerts",
                "acknowledged", "enrolled_days", "red_alerts")


def expected_pseudonym(key: str, pilot: UUID, citizen: UUID) -> str:
    """docs/access.md: HMAC-SHA256(key, "telecare-pseudonym-v1" || pilot || citizen), first 50
    bits in Crockford base32, XXXXX-XXXXX."""
    digest = hmac.new(key.encode(), b"telecare-pseudonym-v1" + pilot.bytes + citizen.bytes,
                      hashlib.sha256).digest()
    bits = format(int.from_bytes(digest[:8], "big"), "064b")[:50]
    chars = "".join("0123456789ABCDEFGHJKMNPQRSTVWXYZ"[int(bits[i:i + 5], 2)]
                    for i in range(0, 50, 5))
    return chars[:5] + "-" + chars[5:]


def shown(n: int) -> int | str:
    return n if n == 0 or n >= 5 else "<5"


@dataclass
class CitizenPlan:
    enrolments: dict[int, bool]  # pilot index -> the enrolment has ended
    readings_days_ago: list[int]
    alerts: list[tuple[str, str, int, int | None]]  # rule, severity, days ago, ack after min


@dataclass
class Plan:
    pilots: int
    citizens: list[CitizenPlan]
    leads: list[frozenset[int]]  # per project lead: the pilots they lead


DAYS = st.sampled_from([1, 2, 10, 25])  # 25: before the enrolment; 1, 2: after one ended


@st.composite
def plans(draw: st.DrawFn) -> Plan:
    pilots = draw(st.integers(1, 3))
    citizens = draw(st.lists(st.builds(
        CitizenPlan,
        enrolments=st.dictionaries(st.integers(0, pilots - 1), st.booleans(), max_size=pilots),
        readings_days_ago=st.lists(DAYS, max_size=6),
        alerts=st.lists(st.tuples(st.sampled_from(["threshold:systolic_bp", "emergency_button"]),
                                  st.sampled_from(["yellow", "red"]), DAYS,
                                  st.one_of(st.none(), st.integers(1, 300))), max_size=3)),
        min_size=1, max_size=8))
    leads = draw(st.lists(st.frozensets(st.integers(0, pilots - 1)), min_size=1, max_size=2))
    return Plan(pilots, citizens, leads)


@dataclass
class World:
    plan: Plan
    pilots: list[UUID] = field(default_factory=list)
    citizens: list[UUID] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    devices: list[str] = field(default_factory=list)
    team_name: str = ""
    leads: list[User] = field(default_factory=list)
    users: dict[str, User] = field(default_factory=dict)

    def secrets(self) -> list[str]:
        """Everything that would identify a citizen, in every spelling a response could use."""
        ids = self.citizens
        return ([str(c) for c in ids] + [c.hex for c in ids] + self.names + self.devices
                + [self.team_name])

    def enrolled(self, pilot: int) -> list[int]:
        return [i for i, c in enumerate(self.plan.citizens) if pilot in c.enrolments]

    def counted(self, citizen: int, pilot: int, days_ago: int) -> bool:
        """Whether something of `days_ago` falls within the citizen's enrolment in the pilot."""
        ended = self.plan.citizens[citizen].enrolments[pilot]
        return days_ago < 20 and (not ended or days_ago > 5)


def _at(days_ago: int, index: int) -> Any:
    return NOW - timedelta(days=days_ago, minutes=index)


def build(conn: Conn, plan: Plan) -> World:
    world = World(plan)
    team = care_team(conn)
    world.team_name = conn.execute("SELECT name FROM care_teams WHERE id = %s",
                                   (team,)).fetchone()[0]  # type: ignore[index]
    for index in range(plan.pilots):
        row = conn.execute(
            "INSERT INTO pilots (name, period, created_by, created_at) VALUES (%s,"
            " tstzrange(%s, NULL), 'test', %s) RETURNING id",
            (f"pilot-{uuid.uuid4().hex[:8]}-{index}", PILOT_START, NOW)).fetchone()
        assert row is not None
        world.pilots.append(row[0])
    for citizen_plan in plan.citizens:
        name = f"Name{uuid.uuid4().hex[:12]}"
        citizen = devices_service.enrol_citizen(conn, name, ["hypertension"])
        conn.execute("UPDATE citizens SET care_team_id = %s WHERE id = %s", (team, citizen))
        device, _ = new_device(conn, "bp_monitor", citizen)
        world.citizens.append(citizen)
        world.names.append(name)
        world.devices.append(device)
        for pilot, ended in citizen_plan.enrolments.items():
            conn.execute(
                "INSERT INTO pilot_enrolments (pilot_id, citizen_id, valid, enrolled_by,"
                " enrolled_at) VALUES (%s, %s, tstzrange(%s, %s), 'test', %s)",
                (world.pilots[pilot], citizen, ENROLLED_FROM, ENDED_AT if ended else None, NOW))
        if citizen_plan.readings_days_ago:
            devices_repo.prepare_reading_stage(conn)
            with conn.transaction():
                devices_repo.insert_readings(conn, [
                    ReadingRow(device, "systolic_bp", _at(days, seq), seq, citizen, 130.0,
                               _at(days, seq), None, False, None, "valid", False)
                    for seq, days in enumerate(citizen_plan.readings_days_ago)])
        for n, (rule, severity, days, ack) in enumerate(citizen_plan.alerts):
            opened = _at(days, n)
            conn.execute(
                "INSERT INTO alerts (citizen_id, care_team_id, rule, severity, state,"
                " first_measured_at, last_measured_at, opened_at, updated_at, is_current,"
                " summary, acknowledged_at, resolved_at, outcome) VALUES (%s, %s, %s, %s,"
                " 'resolved', %s, %s, %s, %s, true, 'x', %s, %s, 'not_actionable')",
                (citizen, team, rule, severity, opened, opened, opened, opened,
                 None if ack is None else opened + timedelta(minutes=ack), opened))
    for led in plan.leads:
        lead = _user(conn, "project_lead")
        world.leads.append(lead)
        for pilot in led:
            conn.execute("INSERT INTO pilot_leads (pilot_id, user_id, added_by, added_at)"
                         " VALUES (%s, %s, 'test', %s)", (world.pilots[pilot], lead.id, NOW))
    for role in ("administrator", "nurse", "citizen", "relative", "service"):
        world.users[role] = _user(conn, role)
    return world


def _client(database: str, key: str | None) -> Iterator[TestClient]:
    pool = open_pool(database, max_size=2)
    app = create_app(Settings(database_url=database, auth_signing_key=SecretStr(SIGNING_KEY),
                              auth_required=True,
                              pseudonym_key=SecretStr(key) if key else None),
                     pool=pool, clock=lambda: NOW)
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client
    pool.close()


@pytest.fixture
def client(database: str) -> Iterator[TestClient]:
    yield from _client(database, PSEUDONYM_KEY)


@pytest.fixture
def other_key_client(database: str) -> Iterator[TestClient]:
    yield from _client(database, OTHER_KEY)


@pytest.fixture
def keyless_client(database: str) -> Iterator[TestClient]:
    yield from _client(database, None)


def as_user(user: User) -> dict[str, str]:
    return {"Authorization": "Bearer " + issue_access_token(user, SIGNING_KEY, NOW,
                                                            timedelta(minutes=5))}


def _counts_are_suppressed(value: Any) -> None:
    """Every count anywhere in an aggregate is 0, at least 5, or "<5"."""
    if isinstance(value, dict):
        for name, inner in value.items():
            if name in COUNT_FIELDS and not isinstance(inner, list):
                assert inner == "<5" or (isinstance(inner, int) and (inner == 0 or inner >= 5)), \
                    (name, inner)
            _counts_are_suppressed(inner)
    elif isinstance(value, list):
        for inner in value:
            _counts_are_suppressed(inner)


def _check_aggregates(world: World, pilot: int, body: dict[str, Any]) -> None:
    enrolled = world.enrolled(pilot)
    assert body["citizens_enrolled"] == shown(len(enrolled))
    readings = sum(1 for i in enrolled for d in world.plan.citizens[i].readings_days_ago
                   if world.counted(i, pilot, d))
    by_metric = {m["metric"]: m for m in body["readings"]}
    assert by_metric.get("systolic_bp", {"readings": 0})["readings"] == shown(readings)
    alerts: dict[tuple[str, str], int] = {}
    minutes: list[int] = []
    for i in enrolled:
        for rule, severity, days, ack in world.plan.citizens[i].alerts:
            if world.counted(i, pilot, days):
                alerts[(rule, severity)] = alerts.get((rule, severity), 0) + 1
                if ack is not None:
                    minutes.append(ack)
    assert {(a["rule"], a["severity"]): a["alerts"] for a in body["alerts"]} == {
        key: shown(n) for key, n in alerts.items()}
    assert body["time_to_acknowledge"] == {
        "acknowledged": shown(len(minutes)),
        "median_minutes": round(statistics.median(minutes)) if len(minutes) >= 5 else None}
    assert body["citizens_shown"] == (len(enrolled) >= 5)
    if len(enrolled) < 5:
        assert body["citizens"] == []
        return
    rows = {row["pseudonym"]: row for row in body["citizens"]}
    assert len(rows) == len(enrolled)
    for i in enrolled:
        row = rows[expected_pseudonym(PSEUDONYM_KEY, world.pilots[pilot], world.citizens[i])]
        plan = world.plan.citizens[i]
        assert row["readings"] == shown(sum(world.counted(i, pilot, d)
                                            for d in plan.readings_days_ago))
        assert row["alerts"] == shown(sum(world.counted(i, pilot, d) for _, _, d, _ in plan.alerts))
        assert row["red_alerts"] == shown(sum(world.counted(i, pilot, d)
                                              for _, s, d, _ in plan.alerts if s == "red"))
        assert row["enrolled_days"] == shown(15 if plan.enrolments[pilot] else 20)
    assert list(rows) == sorted(rows)  # not in enrolment order


@settings(max_examples=15, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(plan=plans())
@example(plan=Plan(2, [CitizenPlan({0: i % 3 == 0, 1: False}, [1, 10, 10, 25],
                                   [("emergency_button", "red", 10, 7 * i + 1),
                                    ("threshold:systolic_bp", "yellow", 2, None)])
                       for i in range(6)], [frozenset({0}), frozenset({0, 1})]))
def test_a_lead_sees_exactly_the_pilots_they_lead_and_no_identity(
        conn: Conn, client: TestClient, other_key_client: TestClient, plan: Plan) -> None:
    world = build(conn, plan)
    missing = uuid.uuid4()
    for lead, led in zip(world.leads, plan.leads, strict=True):
        headers = as_user(lead)
        answers = [client.get("/v1/pilots", headers=headers)]
        assert {UUID(p["id"]) for p in answers[0].json()} == {world.pilots[i] for i in led}
        for index, pilot in enumerate(world.pilots):
            for path in (f"/v1/pilots/{pilot}", f"/v1/pilots/{pilot}/aggregates"):
                answer = client.get(path, headers=headers)
                answers.append(answer)
                if index in led:
                    assert answer.status_code == 200, (path, answer.text)
                else:
                    stranger = problem(answer, 404, "pilot_not_found")
                    absent = problem(client.get(path.replace(str(pilot), str(missing)),
                                                headers=headers), 404, "pilot_not_found")
                    assert stranger["detail"].replace(str(pilot), "") == \
                        absent["detail"].replace(str(missing), "")
            if index in led:
                body = answers[-1].json()
                _counts_are_suppressed(body)
                _check_aggregates(world, index, body)
                again = client.get(f"/v1/pilots/{pilot}/aggregates", headers=headers).json()
                assert again == body  # stable
                other = other_key_client.get(f"/v1/pilots/{pilot}/aggregates",
                                             headers=headers).json()
                if body["citizens"]:  # another key, other pseudonyms for everyone
                    assert not ({r["pseudonym"] for r in body["citizens"]}
                                & {r["pseudonym"] for r in other["citizens"]})
        # Leading a pilot opens no citizen: the relation check still gives leads nobody (these
        # 404s name the id asked about, so they stay out of the search below).
        for citizen, device in zip(world.citizens, world.devices, strict=True):
            problem(client.get(f"/v1/citizens/{citizen}/readings?metric=systolic_bp"
                               "&start=2026-10-01T00:00:00Z", headers=headers), 404)
            problem(client.get(f"/v1/devices/{device}", headers=headers), 404)
        answers += [client.get(p, headers=headers) for p in ("/v1/devices", "/v1/teams")]
        text = "\n".join(a.text for a in answers).lower()
        for secret in world.secrets():
            assert secret.lower() not in text, secret
    for role, user in world.users.items():
        if role == "administrator":
            continue
        headers = as_user(user)
        problem(client.get("/v1/pilots", headers=headers), 403, "forbidden")
        for pilot in [*world.pilots, missing]:
            for path in (f"/v1/pilots/{pilot}", f"/v1/pilots/{pilot}/aggregates"):
                problem(client.get(path, headers=headers), 403, "forbidden")


def test_pseudonyms_of_one_citizen_differ_between_pilots(conn: Conn, client: TestClient) -> None:
    world = build(conn, Plan(2, [CitizenPlan({0: False, 1: False}, [1], []) for _ in range(5)],
                             [frozenset({0, 1})]))
    headers = as_user(world.leads[0])
    seen = [{r["pseudonym"] for r in client.get(f"/v1/pilots/{p}/aggregates",
                                                headers=headers).json()["citizens"]}
            for p in world.pilots]
    assert len(seen[0]) == len(seen[1]) == 5
    assert not seen[0] & seen[1]


def test_without_a_pseudonym_key_aggregates_answer_503_and_strangers_still_404(
        conn: Conn, keyless_client: TestClient) -> None:
    world = build(conn, Plan(2, [CitizenPlan({0: False}, [1], [])], [frozenset({0})]))
    headers = as_user(world.leads[0])
    problem(keyless_client.get(f"/v1/pilots/{world.pilots[0]}/aggregates", headers=headers),
            503, "pseudonym_key_missing")
    problem(keyless_client.get(f"/v1/pilots/{world.pilots[1]}/aggregates", headers=headers),
            404, "pilot_not_found")
    assert keyless_client.get(f"/v1/pilots/{world.pilots[0]}", headers=headers).status_code == 200


def test_a_disabled_or_demoted_lead_leads_nothing(conn: Conn, client: TestClient) -> None:
    world = build(conn, Plan(1, [CitizenPlan({0: False}, [1], [])], [frozenset({0})]))
    lead = world.leads[0]
    path = f"/v1/pilots/{world.pilots[0]}/aggregates"
    assert client.get(path, headers=as_user(lead)).status_code == 200
    # The pilot check asks the database (404), whatever the token says; the gate in api/deps.py
    # may refuse them before it does (401 signed out, 403 in their new role).
    conn.execute("UPDATE users SET disabled_at = %s WHERE id = %s", (NOW, lead.id))
    answer = client.get(path, headers=as_user(lead))
    problem(answer, answer.status_code if answer.status_code == 401 else 404)
    conn.execute("UPDATE users SET disabled_at = NULL, role = 'nurse' WHERE id = %s", (lead.id,))
    answer = client.get(path, headers=as_user(lead))
    problem(answer, answer.status_code if answer.status_code == 403 else 404)


def test_administrators_manage_pilots_and_nobody_else(conn: Conn, client: TestClient) -> None:
    admin = as_user(_user(conn, "administrator"))
    lead_user = _user(conn, "project_lead")
    lead = as_user(lead_user)
    nurse_user = _user(conn, "nurse")
    name = f"pilot-{uuid.uuid4().hex[:8]}"
    body = {"name": name, "starts_at": PILOT_START.isoformat()}
    for headers in (lead, as_user(nurse_user)):
        problem(client.post("/v1/pilots", json=body, headers=headers), 403, "forbidden")
    created = client.post("/v1/pilots", json=body, headers=admin)
    assert created.status_code == 201, created.text
    pilot = created.json()["id"]
    problem(client.post("/v1/pilots", json=body, headers=admin), 409, "pilot_conflict")
    problem(client.post("/v1/pilots", json={**body, "name": name + "x", "ends_at":
                                            PILOT_START.isoformat()}, headers=admin),
            422, "invalid_pilot")
    problem(client.put(f"/v1/pilots/{pilot}/leads/{nurse_user.username}", headers=admin),
            422, "invalid_user")
    problem(client.put(f"/v1/pilots/{uuid.uuid4()}/leads/{lead_user.username}", headers=admin),
            404, "pilot_not_found")
    problem(client.put(f"/v1/pilots/{pilot}/leads/{lead_user.username}", headers=lead),
            403, "forbidden")
    problem(client.get(f"/v1/pilots/{pilot}", headers=lead), 404, "pilot_not_found")
    assert client.put(f"/v1/pilots/{pilot}/leads/{lead_user.username}",
                      headers=admin).status_code == 204
    assert client.get(f"/v1/pilots/{pilot}", headers=lead).status_code == 200
    assert [x["username"] for x in client.get(f"/v1/pilots/{pilot}/leads",
                                              headers=admin).json()] == [lead_user.username]

    citizen = devices_service.enrol_citizen(conn, "Test Citizen", ["copd"])
    enrolment = {"citizen_id": str(citizen), "valid_from": ENROLLED_FROM.isoformat()}
    problem(client.post(f"/v1/pilots/{pilot}/enrolments", json=enrolment, headers=lead),
            403, "forbidden")
    problem(client.get(f"/v1/pilots/{pilot}/enrolments", headers=lead), 403, "forbidden")
    made = client.post(f"/v1/pilots/{pilot}/enrolments", json=enrolment, headers=admin)
    assert made.status_code == 201, made.text
    problem(client.post(f"/v1/pilots/{pilot}/enrolments", json=enrolment, headers=admin),
            409, "pilot_conflict")
    problem(client.post(f"/v1/pilots/{pilot}/enrolments", json={
        **enrolment, "valid_from": (PILOT_START - timedelta(days=1)).isoformat()},
        headers=admin), 422, "invalid_pilot")
    problem(client.post(f"/v1/pilots/{pilot}/enrolments", json={
        **enrolment, "citizen_id": str(uuid.uuid4())}, headers=admin), 404, "citizen_not_found")
    enrolment_id = made.json()["id"]
    assert client.delete(f"/v1/pilots/{pilot}/enrolments/{enrolment_id}",
                         headers=admin).status_code == 204
    listed = client.get(f"/v1/pilots/{pilot}/enrolments", headers=admin).json()
    assert listed[0]["valid_until"] is not None
    # Ended now: enrolling again from now on is no overlap.
    again = client.post(f"/v1/pilots/{pilot}/enrolments", json={"citizen_id": str(citizen)},
                        headers=admin)
    assert again.status_code == 201, again.text
    problem(client.delete(f"/v1/pilots/{pilot}/enrolments/{2**62}", headers=admin), 404,
            "enrolment_not_found")
    assert client.delete(f"/v1/pilots/{pilot}/leads/{lead_user.username}",
                         headers=admin).status_code == 204
    problem(client.get(f"/v1/pilots/{pilot}", headers=lead), 404, "pilot_not_found")
    assert json.dumps(client.get("/v1/pilots", headers=lead).json()) == "[]"


def test_adherence_counts_the_windows_the_plans_scheduled(conn: Conn, client: TestClient) -> None:
    world = build(conn, Plan(1, [CitizenPlan({0: False}, [], []) for _ in range(5)],
                             [frozenset({0})]))
    plan_start = datetime(2026, 11, 17, tzinfo=LOCAL)
    for citizen, device in zip(world.citizens, world.devices, strict=True):
        conn.execute("INSERT INTO citizen_plans (citizen_id, plan, valid, set_by, set_at)"
                     " VALUES (%s, 'hypertension', tstzrange(%s, NULL), 'test', %s)",
                     (citizen, plan_start, NOW))
        at = datetime(2026, 11, 18, 7, tzinfo=LOCAL)
        devices_repo.prepare_reading_stage(conn)
        with conn.transaction():
            devices_repo.insert_readings(conn, [ReadingRow(
                device, "systolic_bp", at, 1, citizen, 130.0, at, None, False, None, "valid",
                False)])
    body = client.get(f"/v1/pilots/{world.pilots[0]}/aggregates",
                      headers=as_user(world.leads[0])).json()
    # 06-11 and 18-23 local, 1 h grace, from the 17th to now (13:00 local on the 20th): 7 each.
    assert body["readings"] == [{"metric": "systolic_bp", "readings": 5, "citizens": 5,
                                 "scheduled": 35, "on_time": 5, "adherence": 0.14}]
    assert [row["adherence"] for row in body["citizens"]] == [0.14] * 5
    one_day = client.get(f"/v1/pilots/{world.pilots[0]}/aggregates?from=2026-11-19&to=2026-11-19",
                         headers=as_user(world.leads[0])).json()
    assert one_day["readings"][0] == {"metric": "systolic_bp", "readings": 0, "citizens": 0,
                                      "scheduled": 10, "on_time": 0, "adherence": 0.0}
    assert one_day["citizens_enrolled"] == 5 and one_day["from_day"] == "2026-11-19"
    problem(client.get(f"/v1/pilots/{world.pilots[0]}/aggregates?from=2026-11-19&to=2026-11-18",
                       headers=as_user(world.leads[0])), 422, "invalid_pilot")
