"""Enrolment, discharge and devices given and taken back over the API, on the real database:
administrators change the registry, everyone sees only the citizens of their relation, and
every change is in the audit log."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from tests.api.conftest import NOW, problem
from tests.api.test_access import Plan, as_user, build
from tests.conftest import only_on

pytestmark = only_on("postgres")

Conn = psycopg.Connection[Any]


@pytest.fixture
def client(signed_in_client: TestClient) -> TestClient:
    return signed_in_client


def _changes(conn: Conn, citizen: Any) -> list[tuple[str, str]]:
    return conn.execute("SELECT action, what FROM audit_log WHERE citizen_id = %s AND action ="
                        " 'change' ORDER BY id", (citizen,)).fetchall()


def test_only_administrators_enrol_and_each_role_lists_its_own_citizens(
        conn: Conn, client: TestClient) -> None:
    world = build(conn, Plan(teams=2, citizen_teams=[0, 1], nurse_teams=frozenset({0}),
                             own_citizen=1, proxies=[]))
    admin, nurse = as_user(world.users["administrator"]), as_user(world.users["nurse"])
    body = {"display_name": "Inger Holm", "conditions": ["copd"], "care_team_id": str(world.teams[0])}
    problem(client.post("/v1/citizens", json=body, headers=nurse), 403, "forbidden")
    created = client.post("/v1/citizens", json=body, headers=admin)
    assert created.status_code == 201, created.text
    new = created.json()
    assert (new["display_name"], new["care_team_id"], new["discharged_at"]) == (
        "Inger Holm", str(world.teams[0]), None)
    assert _changes(conn, new["id"]) == [("change", "registry")]
    problem(client.post("/v1/citizens", json={**body, "care_team_id": str(uuid.uuid4())},
                        headers=admin), 404, "care_team_not_found")

    def listed(role: str) -> set[str]:
        seen: set[str] = set()
        after = None
        while True:  # page through every citizen the role may see
            page = client.get("/v1/citizens", params={"limit": 2, **({"after": after} if after else {})},
                              headers=as_user(world.users[role])).json()
            seen |= {c["id"] for c in page}
            if len(page) < 2:
                return seen
            after = page[-1]["id"]
    ours = {str(c) for c in world.citizens} | {new["id"]}
    assert listed("nurse") & ours == {str(world.citizens[0]), new["id"]}
    assert listed("citizen") == {str(world.citizens[1])}
    assert listed("project_lead") == set()
    assert listed("administrator") >= ours
    problem(client.get(f"/v1/citizens/{world.citizens[1]}", headers=nurse), 404, "citizen_not_found")
    assert client.get(f"/v1/citizens/{world.citizens[0]}", headers=nurse).json()["display_name"]


def test_a_device_is_registered_given_taken_back_and_a_discharge_ends_everything(
        conn: Conn, client: TestClient) -> None:
    world = build(conn, Plan(teams=1, citizen_teams=[0, 0], nurse_teams=frozenset({0}),
                             own_citizen=0, proxies=[]))
    admin, nurse = as_user(world.users["administrator"]), as_user(world.users["nurse"])
    first, second = world.citizens
    device = f"scale-{uuid.uuid4().hex[:8]}"
    body = {"id": device, "kind": "scale", "model": "WS-1", "serial": uuid.uuid4().hex}
    problem(client.post("/v1/devices", json=body, headers=nurse), 403, "forbidden")
    assert client.post("/v1/devices", json=body, headers=admin).status_code == 201
    problem(client.post("/v1/devices", json=body, headers=admin), 409)
    start = (NOW - timedelta(hours=2)).isoformat()
    given = client.put(f"/v1/devices/{device}/holder", headers=admin,
                       json={"citizen_id": str(first), "valid_from": start})
    assert given.status_code == 200 and given.json()["citizen_id"] == str(first), given.text
    assert _changes(conn, first) == [("change", "devices")]
    back = (NOW - timedelta(minutes=90)).isoformat()
    assert client.delete(f"/v1/devices/{device}/holder", params={"at": back},
                         headers=admin).status_code == 204
    problem(client.delete(f"/v1/devices/{device}/holder", headers=admin), 409)
    assert client.put(f"/v1/devices/{device}/holder", headers=admin, json={
        "citizen_id": str(second), "valid_from": back}).status_code == 200
    assert client.put(f"/v1/citizens/{second}/plans/heart_failure", headers=nurse,
                      json={"valid_from": start}).status_code in (200, 201)

    problem(client.post(f"/v1/citizens/{second}/discharge", json={}, headers=nurse), 403)
    out = client.post(f"/v1/citizens/{second}/discharge", json={}, headers=admin)
    assert out.status_code == 200 and out.json()["discharged_at"] is not None, out.text
    held = conn.execute("SELECT count(*) FROM device_pairings WHERE citizen_id = %s AND "
                        "upper_inf(valid)", (second,)).fetchone()
    plans = conn.execute("SELECT count(*) FROM citizen_plans WHERE citizen_id = %s AND "
                         "valid @> %s::timestamptz", (second, NOW + timedelta(minutes=1))).fetchone()
    assert held == (0,) and plans == (0,)
    problem(client.post(f"/v1/citizens/{second}/discharge", json={}, headers=admin), 409,
            "citizen_discharged")
    problem(client.post(f"/v1/citizens/{uuid.uuid4()}/discharge", json={}, headers=admin), 404)


def test_a_discharge_that_would_orphan_data_changes_nothing(conn: Conn, client: TestClient) -> None:
    world = build(conn, Plan(teams=1, citizen_teams=[0], nurse_teams=frozenset(),
                             own_citizen=0, proxies=[]))
    admin = as_user(world.users["administrator"])
    citizen = world.citizens[0]  # its device has a reading measured an hour ago
    earlier = (NOW - timedelta(hours=3)).isoformat()
    problem(client.post(f"/v1/citizens/{citizen}/discharge", json={"at": earlier}, headers=admin),
            409)
    row = conn.execute("SELECT discharged_at FROM citizens WHERE id = %s", (citizen,)).fetchone()
    assert row == (None,)
    assert _changes(conn, citizen) == []
