"""The audit record on the real database: one record per look at a citizen's data for a
generated sequence of API calls; a read whose record cannot be written fails; the API's
database role cannot rewrite or remove records (PostgreSQL says so, not this test)."""

from __future__ import annotations

import uuid
from collections import Counter
from typing import Any
from uuid import UUID

import psycopg
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.roles import PRIVILEGES, ROLES, unlisted_tables
from tests.api.conftest import NOW, problem
from tests.api.test_access import (
    CITIZEN_ROUTES,
    Plan,
    Proxy,
    World,
    as_user,
    build,
    plans,
)
from tests.api.test_access import (
    ROLES as USER_ROLES,
)
from tests.conftest import only_on

pytestmark = only_on("postgres")  # privileges and records do not depend on the backend

Conn = psycopg.Connection[Any]
READINGS = "/v1/citizens/{citizen}/readings?metric=systolic_bp&start=2026-11-01T00:00:00Z"


@pytest.fixture
def client(signed_in_client: TestClient) -> TestClient:
    return signed_in_client


def _last_id(conn: Conn) -> int:
    row = conn.execute("SELECT coalesce(max(id), 0) FROM audit_log").fetchone()
    assert row is not None
    return int(row[0])


def _records_after(conn: Conn, after: int) -> Counter[tuple[str, UUID | None, str]]:
    rows = conn.execute("SELECT role, citizen_id, action FROM audit_log WHERE id > %s",
                        (after,)).fetchall()
    return Counter((role, citizen, action) for role, citizen, action in rows)


# One call: a role, a route and the index of the citizen (or team) it is about.
Call = tuple[str, str, int]
LISTS = ("/v1/teams/{team}/alerts", "/v1/devices")


def _calls(world_size: int, teams: int) -> st.SearchStrategy[list[Call]]:
    single = st.tuples(st.sampled_from(USER_ROLES), st.sampled_from(sorted(CITIZEN_ROUTES)),
                       st.integers(0, world_size - 1))
    listing = st.tuples(st.sampled_from(USER_ROLES), st.sampled_from(LISTS),
                        st.integers(0, teams - 1))
    return st.lists(st.one_of(single, listing), min_size=1, max_size=12)


def _expected(answer: Any, role: str, template: str, world: World,
              index: int) -> list[tuple[str, UUID | None, str]]:
    """The records a call should leave, worked out from its answer: a look at the citizen it
    showed, or, for a list, a search naming every citizen whose data it returned (or none)."""
    if answer.status_code != 200:
        return []
    if template in CITIZEN_ROUTES:
        return [(role, world.citizens[index], "read")]
    body = answer.json()
    items = body["alerts"] if "alerts" in body else body
    shown = {UUID(item["citizen_id"]) for item in items if item.get("citizen_id")}
    return [(role, citizen, "search") for citizen in shown] or [(role, None, "search")]


@settings(max_examples=10, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(plan=plans(), data=st.data())
def test_every_look_at_a_citizen_leaves_exactly_one_record(
        conn: Conn, client: TestClient, plan: Plan, data: st.DataObject) -> None:
    world = build(conn, plan)
    calls = data.draw(_calls(len(world.citizens), len(world.teams)))
    before = _last_id(conn)
    expected: Counter[tuple[str, UUID | None, str]] = Counter()
    for role, template, index in calls:
        path = template.format(
            citizen=world.citizens[index % len(world.citizens)],
            device=world.devices[index % len(world.devices)],
            alert=world.alerts[index % len(world.alerts)],
            team=world.teams[index % len(world.teams)])
        answer = client.get(path, headers=as_user(world.users[role]))
        assert answer.status_code in (200, 404), (role, path, answer.text)
        expected.update(_expected(answer, role, template, world, index))
    assert _records_after(conn, before) == expected


def test_a_change_is_recorded_as_a_change_with_the_purpose_given(
        conn: Conn, client: TestClient) -> None:
    world = build(conn, Plan(teams=1, citizen_teams=[0], nurse_teams=frozenset({0}),
                             own_citizen=0, proxies=[]))
    before = _last_id(conn)
    nurse = {**as_user(world.users["nurse"]), "Telecare-Purpose": "quality"}
    answer = client.post(f"/v1/citizens/{world.citizens[0]}/pauses", headers=nurse,
                         json={"reason": "holiday", "start": NOW.isoformat()})
    assert answer.status_code == 201, answer.text
    rows = conn.execute("SELECT role, action, what, purpose, route, username FROM audit_log "
                        "WHERE id > %s", (before,)).fetchall()
    assert rows == [("nurse", "change", "care", "quality",
                     f"POST /v1/citizens/{world.citizens[0]}/pauses",
                     world.users["nurse"].username)]
    problem(client.get(READINGS.format(citizen=world.citizens[0]),
                       headers={**nurse, "Telecare-Purpose": "curiosity"}), 422, "invalid_purpose")


def test_a_read_whose_record_cannot_be_written_fails_and_shows_nothing(
        conn: Conn, client: TestClient) -> None:
    world = build(conn, Plan(teams=1, citizen_teams=[0], nurse_teams=frozenset({0}),
                             own_citizen=0, proxies=[]))
    path = READINGS.format(citizen=world.citizens[0])
    headers = as_user(world.users["nurse"])
    assert client.get(path, headers=headers).status_code == 200
    conn.execute("REVOKE INSERT ON audit_log FROM telecare_api")
    try:
        answer = client.get(path, headers=headers)
        body = problem(answer, 503, "audit_unavailable")
        assert set(body) <= {"type", "title", "status", "detail", "instance"}, body
        assert "130" not in answer.text  # the stored value
    finally:
        conn.execute("GRANT INSERT ON audit_log TO telecare_api")
    assert client.get(path, headers=headers).status_code == 200


@pytest.mark.parametrize("statement", [
    "UPDATE audit_log SET purpose = 'care'",
    "DELETE FROM audit_log",
    "TRUNCATE audit_log",
])
def test_the_api_role_cannot_rewrite_or_remove_records(
        conn: Conn, database: str, statement: str) -> None:
    world = build(conn, Plan(teams=1, citizen_teams=[0], nurse_teams=frozenset(),
                             own_citizen=0, proxies=[]))
    login = f"audit_probe_{uuid.uuid4().hex[:8]}"
    # A login that is a member of the API's role only, as in a deployment.
    conn.execute(f"CREATE ROLE {login} LOGIN IN ROLE telecare_api")
    try:
        dsn = psycopg.conninfo.make_conninfo(database, user=login)
        with psycopg.connect(dsn, autocommit=True) as api:
            api.execute(
                "INSERT INTO audit_log (at, request_id, role, action, what, citizen_id, purpose,"
                " route) VALUES (%s, %s, 'nurse', 'read', 'readings', %s, 'care', 'test')",
                (NOW, uuid.uuid4(), world.citizens[0]))
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                api.execute(statement)
    finally:
        conn.execute(f"DROP OWNED BY {login}")
        conn.execute(f"DROP ROLE {login}")


def test_no_one_rewrites_a_record_not_even_the_owner(conn: Conn) -> None:
    conn.execute("INSERT INTO audit_log (at, request_id, role, action, what, purpose, route)"
                 " VALUES (%s, %s, 'nurse', 'search', 'alerts', 'care', 'test')",
                 (NOW, uuid.uuid4()))
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
        conn.execute("UPDATE audit_log SET purpose = 'quality'")


def test_every_table_has_privileges_on_purpose(conn: Conn) -> None:
    assert unlisted_tables(conn) == []
    rows = conn.execute(
        "SELECT grantee, table_name, privilege_type FROM information_schema.role_table_grants"
        " WHERE grantee = ANY(%s) AND table_schema = 'public'", (list(ROLES.values()),)).fetchall()
    granted = {(grantee, table, privilege) for grantee, table, privilege in rows}
    letters = {"SELECT": "r", "INSERT": "a", "UPDATE": "w", "DELETE": "d"}
    for grantee, table, privilege in granted:
        index = list(ROLES.values()).index(grantee)
        assert letters.get(privilege, "?") in PRIVILEGES[table][index], (grantee, table, privilege)
    assert ("telecare_api", "audit_log", "INSERT") in granted
    assert ("telecare_ingest", "users", "SELECT") not in granted


def test_a_citizen_sees_when_and_why_their_data_was_looked_at_but_not_by_whom(
        conn: Conn, client: TestClient) -> None:
    world = build(conn, Plan(teams=1, citizen_teams=[0, 0], nurse_teams=frozenset({0}),
                             own_citizen=0, proxies=[Proxy(0, frozenset({"readings"}), 2, None,
                                                           False)]))
    own, other = world.citizens
    for role in ("nurse", "relative"):
        assert client.get(READINGS.format(citizen=own),
                          headers=as_user(world.users[role])).status_code == 200
    citizen = as_user(world.users["citizen"])
    entries = client.get(f"/v1/citizens/{own}/audit", headers=citizen).json()
    looks = [(e["role"], e["purpose"], e["what"]) for e in entries if e["what"] != "audit"]
    assert looks == [("relative", "proxy", "readings"), ("nurse", "care", "readings")]
    assert all(e["username"] is None and e["user_id"] is None for e in entries)
    problem(client.get(f"/v1/citizens/{other}/audit", headers=citizen), 404)
    for role in ("nurse", "relative", "project_lead"):
        problem(client.get(f"/v1/citizens/{own}/audit", headers=as_user(world.users[role])), 404)
    admin = as_user(world.users["administrator"])
    full = client.get(f"/v1/citizens/{own}/audit", headers=admin).json()
    assert {e["username"] for e in full} >= {world.users["nurse"].username,
                                             world.users["relative"].username}
    by_user = client.get("/v1/audit", params={"user_id": str(world.users["nurse"].id)},
                         headers=admin).json()
    assert [e["citizen_id"] for e in by_user] == [str(own)]
    problem(client.get("/v1/audit", headers=citizen), 403, "forbidden")


@pytest.mark.parametrize(("sqlstate", "code"), [("23514", "not_committed"),
                                               ("40001", "unavailable")])
def test_a_read_whose_commit_fails_fails_and_keeps_no_record(
        conn: Conn, client: TestClient, sqlstate: str, code: str) -> None:
    world = build(conn, Plan(teams=1, citizen_teams=[0], nurse_teams=frozenset({0}),
                             own_citizen=0, proxies=[]))
    citizen = world.citizens[0]
    name = f"test_fail_commit_{uuid.uuid4().hex[:8]}"
    # Raises at COMMIT, after the route has its answer ready: the answer must not go out.
    conn.execute(f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                 f"IF NEW.citizen_id = '{citizen}' THEN RAISE EXCEPTION 'no' USING ERRCODE = "
                 f"'{sqlstate}'; END IF; RETURN NULL; END $$")
    conn.execute(f"CREATE CONSTRAINT TRIGGER {name} AFTER INSERT ON audit_log DEFERRABLE "
                 f"INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION {name}()")
    try:
        answer = client.get(READINGS.format(citizen=citizen),
                            headers=as_user(world.users["nurse"]))
        problem(answer, 503, code)
        assert "130" not in answer.text
        assert conn.execute("SELECT count(*) FROM audit_log WHERE citizen_id = %s",
                            (citizen,)).fetchone() == (0,)
    finally:
        conn.execute(f"DROP TRIGGER {name} ON audit_log")
        conn.execute(f"DROP FUNCTION {name}()")
