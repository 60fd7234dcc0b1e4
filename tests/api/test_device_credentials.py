"""Device credentials over the API (real PostgreSQL, the API's own database role): for
administrators only, every refusal problem+json, the secret only in the issue and rotate answers."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
from fastapi.testclient import TestClient

from api.auth import service
from devices import credentials
from tests.api.conftest import NOW, problem
from tests.api.test_auth import PASSWORD, bearer, sign_in
from tests.conftest import new_device, only_on

pytestmark = only_on("postgres")  # credentials do not depend on the storage backend


def token(client: TestClient, conn: psycopg.Connection[Any], role: str) -> dict[str, str]:
    username = f"{role[:5]}-{uuid.uuid4().hex[:8]}"
    service.create_user(conn, username, "Test", role, PASSWORD, NOW)
    return bearer(sign_in(client, username).json()["access_token"])


def test_an_administrator_issues_rotates_lists_and_revokes(
        client: TestClient, conn: psycopg.Connection[Any]) -> None:
    device_id, _ = new_device(conn)
    admin = token(client, conn, "administrator")
    path = f"/v1/devices/{device_id}/credentials"

    issued = client.post(path, headers=admin)
    assert issued.status_code == 201, issued.text
    assert issued.headers["cache-control"] == "no-store"
    body = issued.json()
    assert body["username"] == device_id and body["credential"]["in_force"]
    assert body["credential"]["issued_by"].startswith("admin")
    in_force = dict(credentials.in_force(conn))
    assert credentials.verify(body["secret"], in_force[device_id])
    problem(client.post(path, headers=admin), 409, "credential_conflict")

    rotated = client.post(f"{path}/rotate", headers=admin)
    assert rotated.status_code == 200, rotated.text
    assert rotated.headers["cache-control"] == "no-store"
    secret = rotated.json()["secret"]
    assert secret != body["secret"]
    assert credentials.verify(secret, dict(credentials.in_force(conn))[device_id])

    listed = client.get(path, headers=admin)
    assert listed.status_code == 200
    assert [c["in_force"] for c in listed.json()] == [True, False]
    assert secret not in listed.text and body["secret"] not in listed.text
    assert "$7$" not in listed.text and "password_hash" not in listed.text

    assert client.delete(path, headers=admin).status_code == 204
    assert device_id not in dict(credentials.in_force(conn))
    problem(client.delete(path, headers=admin), 404, "credential_not_found")
    problem(client.post(f"{path}/rotate", headers=admin), 404, "credential_not_found")


def test_only_administrators_and_every_refusal_is_a_problem(
        client: TestClient, conn: psycopg.Connection[Any]) -> None:
    device_id, _ = new_device(conn)
    path = f"/v1/devices/{device_id}/credentials"
    for role in ("nurse", "citizen", "relative", "project_lead", "service"):
        caller = token(client, conn, role)
        for answer in (client.get(path, headers=caller), client.post(path, headers=caller),
                       client.post(f"{path}/rotate", headers=caller),
                       client.delete(path, headers=caller)):
            problem(answer, 403, "forbidden")
    assert device_id not in dict(credentials.in_force(conn))
    admin = token(client, conn, "administrator")
    for answer in (client.get("/v1/devices/no-such-device/credentials", headers=admin),
                   client.post("/v1/devices/no-such-device/credentials", headers=admin)):
        problem(answer, 404, "device_not_found")
    problem(client.post("/v1/devices/not%20an%20id/credentials", headers=admin), 422)
    problem(client.get(path, headers={"Authorization": "Bearer not-a-token"}), 401)
