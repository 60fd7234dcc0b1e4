"""Sign-in over the API on the real database: the password flow, tokens that expire and are
checked by signature, refresh tokens used once (a reused one ends its sign-in), sign-out, the
slow-down and lock after failures counted in the database across API processes, sign-in
required, and `telecare users`."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

import jwt
import psycopg
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from api.app import create_app
from api.auth import service
from core.db import open_pool
from core.roles import process_dsn
from core.settings import Settings
from tests.api.conftest import NOW, problem
from tests.conftest import only_on

pytestmark = only_on("postgres")  # sign-in does not depend on the storage backend

KEY = "k" * 40
PASSWORD = "correct horse battery"


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


@contextmanager
def api(database: str, clock: Callable[[], datetime], **settings: Any) -> Iterator[TestClient]:
    """One API process: its own pool, the shared signing key."""
    pool = open_pool(process_dsn(database, "api"), max_size=2)
    app = create_app(Settings(**{"database_url": database, "auth_signing_key": SecretStr(KEY),
                                 "auth_required": False, **settings}), pool=pool, clock=clock)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client
    pool.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def client(database: str, clock: Clock) -> Iterator[TestClient]:
    with api(database, clock) as test_client:
        yield test_client


@pytest.fixture
def nurse(conn: psycopg.Connection[Any]) -> str:
    username = f"nurse-{uuid.uuid4().hex[:8]}"
    service.create_user(conn, username, "Nurse Test", "nurse", PASSWORD, NOW)
    return username


def sign_in(client: TestClient, username: str, password: str = PASSWORD) -> Any:
    return client.post("/v1/auth/token", data={"grant_type": "password", "username": username,
                                               "password": password})


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_a_user_signs_in_and_the_token_says_who_they_are(
        client: TestClient, conn: psycopg.Connection[Any], nurse: str) -> None:
    answer = sign_in(client, nurse.upper())  # usernames are not case-sensitive
    assert answer.status_code == 200, answer.text
    tokens = answer.json()
    assert tokens["token_type"] == "bearer" and tokens["expires_in"] == 900
    me = client.get("/v1/auth/me", headers=bearer(tokens["access_token"]))
    assert me.status_code == 200, me.text
    assert me.json()["username"] == nurse and me.json()["role"] == "nurse"
    assert me.json()["expires_at"] == (NOW + timedelta(seconds=900)).isoformat().replace(
        "+00:00", "Z")
    stored = conn.execute("SELECT password_hash FROM users WHERE username = %s",
                          (nurse,)).fetchone()
    assert stored is not None and stored[0].startswith("$argon2id$") and PASSWORD not in stored[0]
    problem(client.get("/v1/auth/me"), 401, "not_signed_in")


def test_every_wrong_detail_gets_one_answer(client: TestClient, nurse: str) -> None:
    wrong = [problem(sign_in(client, nurse, "not the password"), 400, "invalid_grant"),
             problem(sign_in(client, "nobody-here"), 400, "invalid_grant"),
             problem(sign_in(client, "nul\x00name"), 400, "invalid_grant")]
    assert len({answer["detail"] for answer in wrong}) == 1
    problem(client.post("/v1/auth/token", data={"username": nurse}), 422, "invalid_request")


def test_a_token_expires_and_one_not_signed_by_us_is_refused(
        client: TestClient, clock: Clock, nurse: str) -> None:
    token = sign_in(client, nurse).json()["access_token"]
    claims = jwt.decode(token, KEY, algorithms=["HS256"], options={"verify_exp": False})
    forged = jwt.encode({**claims, "role": "administrator"}, "another key" * 4, algorithm="HS256")
    unsigned = jwt.encode({**claims}, None, algorithm="none")
    for bad in (forged, unsigned, token[:-2], "not-a-token"):
        answer = client.get("/v1/teams", headers=bearer(bad))
        problem(answer, 401, "not_signed_in")
        assert answer.headers["www-authenticate"].startswith("Bearer")
    assert client.get("/v1/teams", headers=bearer(token)).status_code == 200
    clock.now = NOW + timedelta(seconds=900 + 11)  # past the 10 s leeway
    problem(client.get("/v1/teams", headers=bearer(token)), 401, "not_signed_in")


def test_a_refresh_token_is_used_once_and_a_reused_one_ends_the_sign_in(
        client: TestClient, clock: Clock, nurse: str) -> None:
    first = sign_in(client, nurse).json()
    clock.now = NOW + timedelta(minutes=20)
    second = client.post("/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert second.status_code == 200, second.text
    assert client.get("/v1/auth/me", headers=bearer(second.json()["access_token"])).status_code == 200
    # The first one again: someone holds a copy, so the whole sign-in ends.
    problem(client.post("/v1/auth/refresh", json={"refresh_token": first["refresh_token"]}),
            400, "invalid_grant")
    problem(client.post("/v1/auth/refresh", json={"refresh_token": second.json()["refresh_token"]}),
            400, "invalid_grant")
    # Another sign-in is not affected; signing out ends it.
    other = sign_in(client, nurse).json()
    assert client.post("/v1/auth/revoke", json={"refresh_token": other["refresh_token"]}
                       ).status_code == 204
    problem(client.post("/v1/auth/refresh", json={"refresh_token": other["refresh_token"]}),
            400, "invalid_grant")
    assert client.post("/v1/auth/revoke", json={"refresh_token": "unknown"}).status_code == 204
    late = sign_in(client, nurse).json()
    clock.now += timedelta(hours=12, seconds=1)
    problem(client.post("/v1/auth/refresh", json={"refresh_token": late["refresh_token"]}),
            400, "invalid_grant")


def test_failures_slow_down_then_lock_counted_across_api_processes(
        database: str, clock: Clock, nurse: str) -> None:
    with api(database, clock) as one, api(database, clock) as two:
        for attempt in range(3):  # free: typos
            problem(sign_in((one, two)[attempt % 2], nurse, "wrong"), 400, "invalid_grant")
        problem(sign_in(two, nurse, "wrong"), 400, "invalid_grant")  # the 4th: 1 s wait
        blocked = problem(sign_in(one, nurse), 429, "sign_in_blocked")  # even the right one
        assert "1 s" in blocked["detail"]
        assert sign_in(one, nurse).headers["retry-after"] == "1"
        for failures in range(5, 11):  # waits 2, 4, ... s; the 10th locks for 15 minutes
            clock.now += timedelta(seconds=64)
            problem(sign_in((one, two)[failures % 2], nurse, "wrong"), 400, "invalid_grant")
        clock.now += timedelta(minutes=14)
        assert sign_in(two, nurse).headers["retry-after"] == "60"  # a minute of the lock left
        clock.now += timedelta(minutes=1, seconds=1)
        assert sign_in(two, nurse).status_code == 200  # and the count starts again
        problem(sign_in(one, nurse, "wrong"), 400, "invalid_grant")
        assert sign_in(one, nurse).status_code == 200


def test_an_unknown_name_is_slowed_down_like_a_known_one(
        client: TestClient, conn: psycopg.Connection[Any], nurse: str) -> None:
    """Else four wrong passwords would tell which usernames exist."""
    ghost = f"ghost-{uuid.uuid4().hex[:8]}"
    answers = {}
    for name in (nurse, ghost):
        for _ in range(4):
            problem(sign_in(client, name, "wrong"), 400, "invalid_grant")
        answer = sign_in(client, name, "wrong")
        answers[name] = (answer.status_code, answer.headers.get("retry-after"))
    assert answers[nurse] == answers[ghost] == (429, "1")
    service.unlock(conn, nurse)  # an administrator lets her in at once
    assert sign_in(client, nurse).status_code == 200


def test_a_token_sent_to_the_sign_in_routes_is_ignored(client: TestClient, clock: Clock,
                                                       nurse: str) -> None:
    """A client that sends its expired access token along must still be able to refresh."""
    tokens = sign_in(client, nurse).json()
    clock.now = NOW + timedelta(hours=1)
    expired = bearer(tokens["access_token"])
    problem(client.get("/v1/auth/me", headers=expired), 401, "not_signed_in")
    renewed = client.post("/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]},
                          headers=expired)
    assert renewed.status_code == 200, renewed.text
    assert client.post("/v1/auth/token", headers=expired, data={
        "username": nurse, "password": PASSWORD}).status_code == 200


def test_only_administrators_manage_webhooks_and_never_to_this_machine(
        client: TestClient, conn: psycopg.Connection[Any], nurse: str) -> None:
    team = client.post("/v1/teams", json={"name": f"Team {uuid.uuid4().hex[:8]}"}).json()
    path = f"/v1/teams/{team['id']}/webhooks"
    nurse_token = bearer(sign_in(client, nurse).json()["access_token"])
    for answer in (client.get(path, headers=nurse_token),
                   client.post(path, json={"url": "https://x.example/"}, headers=nurse_token),
                   client.patch(f"{path}/1", json={"active": False}, headers=nurse_token)):
        problem(answer, 403, "forbidden")
    admin = f"admin-{uuid.uuid4().hex[:8]}"
    service.create_user(conn, admin, "Admin", "administrator", PASSWORD, NOW)
    admin_token = bearer(sign_in(client, admin).json()["access_token"])
    for inside in ("http://127.0.0.1:5432/", "http://localhost/x", "http://169.254.169.254/",
                   "http://2130706433/", "http://0x7f000001/"):
        problem(client.post(path, json={"url": inside}, headers=admin_token), 422,
                "invalid_webhook")
    added = client.post(path, json={"url": "https://x.example/"}, headers=admin_token)
    assert added.status_code == 201, added.text


def test_a_disabled_user_cannot_sign_in_or_refresh(
        client: TestClient, conn: psycopg.Connection[Any], nurse: str) -> None:
    tokens = sign_in(client, nurse).json()
    service.disable_user(conn, nurse, NOW)
    problem(sign_in(client, nurse), 400, "invalid_grant")
    problem(client.post("/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]}),
            400, "invalid_grant")
    service.enable_user(conn, nurse)
    assert sign_in(client, nurse).status_code == 200


@pytest.mark.parametrize("change", ["password", "disable"])
def test_a_new_password_or_disabling_ends_the_users_access_tokens_at_once(
        client: TestClient, conn: psycopg.Connection[Any], nurse: str, change: str) -> None:
    first, second = sign_in(client, nurse).json(), sign_in(client, nurse).json()
    for tokens in (first, second):
        assert client.get("/v1/auth/me", headers=bearer(tokens["access_token"])).status_code == 200
    password = PASSWORD
    if change == "password":
        password = "a new password, long enough"
        service.set_password(conn, nurse, password, NOW)  # as `telecare users password`
    else:
        service.disable_user(conn, nurse, NOW)
        service.enable_user(conn, nurse)  # enabled again: the old tokens stay void
    for tokens in (first, second):  # the same second, long before they expire
        problem(client.get("/v1/auth/me", headers=bearer(tokens["access_token"])), 401,
                "not_signed_in")
        problem(client.get("/v1/teams", headers=bearer(tokens["access_token"])), 401,
                "not_signed_in")
        problem(client.post("/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]}),
                400, "invalid_grant")
    fresh = sign_in(client, nurse, password).json()  # issued in the same second, after it
    assert client.get("/v1/auth/me", headers=bearer(fresh["access_token"])).status_code == 200
    renewed = client.post("/v1/auth/refresh", json={"refresh_token": fresh["refresh_token"]})
    assert renewed.status_code == 200, renewed.text
    assert client.get("/v1/auth/me",
                      headers=bearer(renewed.json()["access_token"])).status_code == 200


def test_an_administrator_ending_a_users_sign_ins_over_the_api_ends_the_access_token(
        client: TestClient, conn: psycopg.Connection[Any], nurse: str) -> None:
    admin = f"admin-{uuid.uuid4().hex[:8]}"
    service.create_user(conn, admin, "Admin Test", "administrator", PASSWORD, NOW)
    admin_token = bearer(sign_in(client, admin).json()["access_token"])
    token = bearer(sign_in(client, nurse).json()["access_token"])
    changed = client.put(f"/v1/users/{nurse}/password", json={"password": "x" * 12},
                         headers=admin_token)
    assert changed.status_code == 200, changed.text
    problem(client.get("/v1/auth/me", headers=token), 401, "not_signed_in")
    token = bearer(sign_in(client, nurse, "x" * 12).json()["access_token"])
    assert client.post(f"/v1/users/{nurse}/disable", headers=admin_token).status_code == 200
    assert client.post(f"/v1/users/{nurse}/enable", headers=admin_token).status_code == 200
    problem(client.get("/v1/auth/me", headers=token), 401, "not_signed_in")
    assert client.get("/v1/auth/me", headers=admin_token).status_code == 200  # not the others'


def test_a_token_without_the_generation_claim_is_refused(
        client: TestClient, conn: psycopg.Connection[Any], nurse: str) -> None:
    token = sign_in(client, nurse).json()["access_token"]
    claims = jwt.decode(token, KEY, algorithms=["HS256"], options={"verify_exp": False})
    del claims["gen"]
    problem(client.get("/v1/auth/me", headers=bearer(jwt.encode(claims, KEY, algorithm="HS256"))),
            401, "not_signed_in")


def test_when_sign_in_is_required_only_health_and_sign_in_are_open(
        database: str, clock: Clock, nurse: str) -> None:
    with api(database, clock, auth_required=True) as client:
        problem(client.get("/v1/teams"), 401, "not_signed_in")
        problem(client.get(f"/v1/citizens/{uuid.uuid4()}/readings"), 401, "not_signed_in")
        assert client.get("/health").status_code == 200
        token = sign_in(client, nurse).json()["access_token"]
        assert client.get("/v1/teams", headers=bearer(token)).status_code == 200
    with api(database, clock) as open_client:  # off: no token acts as the local operator
        assert open_client.get("/v1/teams").status_code == 200


def test_users_are_validated(conn: psycopg.Connection[Any], nurse: str) -> None:
    from api.auth.errors import InvalidUser, UserConflict, UserNotFound

    for username, role, password in (("Upper", "nurse", PASSWORD), ("ok", "wizard", PASSWORD),
                                     ("ok", "nurse", "short"), ("", "nurse", PASSWORD)):
        with pytest.raises(InvalidUser):
            service.create_user(conn, username, "X", role, password, NOW)
    with pytest.raises(UserConflict):
        service.create_user(conn, nurse, "Again", "nurse", PASSWORD, NOW)
    with pytest.raises(UserNotFound):
        service.disable_user(conn, "nobody-at-all", NOW)


def test_the_users_command_adds_a_user_who_can_sign_in(database: str, client: TestClient) -> None:
    username = f"cli-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "TELECARE_DATABASE_URL": database}
    added = subprocess.run([sys.executable, "-m", "telecare.cli", "users", "add", username,
                            "--role", "administrator", "--name", "Admin CLI"],
                           input=PASSWORD + "\n", capture_output=True, text=True, env=env,
                           timeout=60)
    assert added.returncode == 0, added.stderr
    listed = subprocess.run([sys.executable, "-m", "telecare.cli", "users"], capture_output=True,
                            text=True, env=env, timeout=60)
    assert f"{username}\tadministrator\tactive\tAdmin CLI" in listed.stdout
    for _ in range(4):
        sign_in(client, username, "wrong")
    assert sign_in(client, username).status_code == 429
    unlocked = subprocess.run([sys.executable, "-m", "telecare.cli", "users", "unlock", username],
                              capture_output=True, text=True, env=env, timeout=60)
    assert unlocked.returncode == 0, unlocked.stderr
    assert sign_in(client, username).status_code == 200
    assert sign_in(client, username).status_code == 200
    again = subprocess.run([sys.executable, "-m", "telecare.cli", "users", "add", username,
                            "--role", "nurse", "--name", "X"], input=PASSWORD + "\n",
                           capture_output=True, text=True, env=env, timeout=60)
    assert again.returncode == 2 and "taken" in again.stderr


def test_the_demo_users_get_a_new_password_at_each_start(fresh_database: str,
                                                         clock: Clock) -> None:
    from telecare.demo import demo_users
    from tests.alerts.delivery_data import care_team, team_citizen

    with psycopg.connect(fresh_database, autocommit=True) as conn:
        team_citizen(conn, care_team(conn))
        care_team(conn)
        first, second = demo_users(fresh_database), demo_users(fresh_database)
        # One nurse per team, each a member; one proxy, however often the demo starts.
        assert (conn.execute("SELECT count(*) FROM team_members").fetchone() or [0])[0] == 2
        assert (conn.execute("SELECT count(*) FROM proxies").fetchone() or [0])[0] == 1
    assert set(second) == {"admin", "citizen", "relative", "lead", "nurse1", "nurse2"}
    assert first["nurse1"] != second["nurse1"]
    with api(fresh_database, clock) as client:
        problem(sign_in(client, "nurse1", first["nurse1"]), 400, "invalid_grant")
        for username, password in second.items():
            assert sign_in(client, username, password).status_code == 200, username


def test_old_refresh_tokens_and_failure_counts_are_purged(
        client: TestClient, conn: psycopg.Connection[Any], nurse: str) -> None:
    ghost = f"ghost-{uuid.uuid4().hex[:8]}"
    sign_in(client, nurse)
    problem(sign_in(client, ghost, "wrong"), 400, "invalid_grant")

    def held() -> tuple[int, int]:
        tokens = conn.execute("SELECT count(*) FROM refresh_tokens t JOIN users u ON "
                              "u.id = t.user_id WHERE u.username = %s", (nurse,)).fetchone()
        failures = conn.execute("SELECT count(*) FROM sign_in_failures WHERE username = %s",
                                (ghost,)).fetchone()
        assert tokens is not None and failures is not None
        return int(tokens[0]), int(failures[0])

    assert held() == (1, 1)
    service.purge_old_sign_ins(conn, NOW + timedelta(hours=12))  # the token still runs
    assert held() == (1, 1)
    assert service.purge_old_sign_ins(conn, NOW + timedelta(days=1, hours=12, seconds=1)) >= 2
    assert held() == (0, 0)
