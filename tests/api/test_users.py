"""Users managed over the API by administrators, on the real database."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from tests.api.conftest import problem
from tests.api.test_access import Plan, _user, as_user, build
from tests.conftest import only_on

pytestmark = only_on("postgres")

Conn = psycopg.Connection[Any]
PASSWORD = "correct horse battery"


@pytest.fixture
def client(signed_in_client: TestClient) -> TestClient:
    return signed_in_client


def _sign_in(client: TestClient, username: str, password: str) -> Any:
    return client.post("/v1/auth/token", data={"grant_type": "password", "username": username,
                                                "password": password})


def test_an_administrator_adds_disables_enables_and_resets_a_user(
        conn: Conn, client: TestClient) -> None:
    admin = as_user(_user(conn, "administrator"))
    name = f"nurse-{uuid.uuid4().hex[:8]}"
    body = {"username": name, "display_name": "Nurse Test", "role": "nurse", "password": PASSWORD}
    problem(client.post("/v1/users", json=body, headers=as_user(_user(conn, "nurse"))), 403)
    created = client.post("/v1/users", json=body, headers=admin)
    assert created.status_code == 201, created.text
    assert (created.json()["role"], created.json()["disabled_at"]) == ("nurse", None)
    problem(client.post("/v1/users", json=body, headers=admin), 409, "user_conflict")
    assert name in {u["username"] for u in client.get("/v1/users", headers=admin).json()}

    token = _sign_in(client, name, PASSWORD).json()["access_token"]
    nurse = {"Authorization": f"Bearer {token}"}
    assert client.get("/v1/auth/me", headers=nurse).status_code == 200
    assert client.post(f"/v1/users/{name}/disable", headers=admin).json()["disabled_at"]
    problem(client.get("/v1/auth/me", headers=nurse), 401, "not_signed_in")
    problem(_sign_in(client, name, PASSWORD), 400, "invalid_grant")
    assert client.post(f"/v1/users/{name}/enable", headers=admin).json()["disabled_at"] is None

    new = "another horse battery"
    assert client.put(f"/v1/users/{name}/password", json={"password": new},
                      headers=admin).status_code == 200
    problem(_sign_in(client, name, PASSWORD), 400, "invalid_grant")
    assert _sign_in(client, name, new).status_code == 200
    problem(client.post("/v1/users/nobody-here/disable", headers=admin), 404, "user_not_found")


def test_failed_sign_ins_show_as_blocked_until_unlocked(conn: Conn, client: TestClient) -> None:
    admin = as_user(_user(conn, "administrator"))
    name = f"rel-{uuid.uuid4().hex[:8]}"
    client.post("/v1/users", headers=admin, json={"username": name, "display_name": "R",
                                                  "role": "relative", "password": PASSWORD})
    for _ in range(4):
        _sign_in(client, name, "wrong password!!")
    users = {u["username"]: u for u in client.get("/v1/users", headers=admin).json()}
    assert users[name]["blocked"] is True
    assert client.post(f"/v1/users/{name}/unlock", headers=admin).json()["blocked"] is False
    assert _sign_in(client, name, PASSWORD).status_code == 200


def test_a_citizen_user_is_linked_once_and_the_link_is_audited(
        conn: Conn, client: TestClient) -> None:
    world = build(conn, Plan(teams=1, citizen_teams=[0, 0], nurse_teams=frozenset(),
                             own_citizen=0, proxies=[]))
    admin = as_user(world.users["administrator"])
    name = f"cit-{uuid.uuid4().hex[:8]}"
    client.post("/v1/users", headers=admin, json={"username": name, "display_name": "C",
                                                  "role": "citizen", "password": PASSWORD})
    citizen = world.citizens[1]
    linked = client.put(f"/v1/users/{name}/citizen", json={"citizen_id": str(citizen)},
                        headers=admin)
    assert linked.status_code == 200, linked.text
    problem(client.put(f"/v1/users/{world.users['citizen'].username}/citizen",
                       json={"citizen_id": str(citizen)}, headers=admin), 409, "user_conflict")
    rows = conn.execute("SELECT action, what FROM audit_log WHERE citizen_id = %s",
                        (citizen,)).fetchall()
    assert rows == [("change", "access")]
    token = _sign_in(client, name, PASSWORD).json()["access_token"]
    own = client.get(f"/v1/citizens/{citizen}/devices", headers={"Authorization": f"Bearer {token}"})
    assert own.status_code == 200
