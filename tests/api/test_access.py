"""Access scoping over the API on the real database: for generated care teams, citizens,
devices, alerts, users and proxies, every route that touches a citizen answers with data
exactly when the caller's relation to the citizen allows it, and otherwise exactly as for a
citizen that does not exist (404). The expected relation is worked out here, apart from
api/access.py, from the generated world."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from uuid import UUID

import psycopg
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from api.auth.errors import InvalidUser, UserConflict
from api.auth.models import User
from api.auth.tokens import issue_access_token
from devices import repository as devices_repo
from devices.repository import ReadingRow
from tests.alerts.delivery_data import care_team, open_alert, team_citizen
from tests.api.conftest import KEY, NOW, problem
from tests.conftest import new_device, only_on

pytestmark = only_on("postgres")  # the relation does not depend on the storage backend

KINDS = ("readings", "alerts", "devices", "care")
OLD = NOW - timedelta(days=10)  # each citizen has a reading then ...
RECENT = NOW - timedelta(hours=1)  # ... and one now
Conn = psycopg.Connection[Any]


@dataclass
class Proxy:
    citizen: int  # index into World.citizens
    kinds: frozenset[str]
    starts_days_ago: int  # negative: starts in the future
    ends_in_days: int | None  # None: open-ended; negative: ended
    revoked: bool

    def in_force(self) -> bool:
        return (not self.revoked and self.starts_days_ago >= 0
                and (self.ends_in_days is None or self.ends_in_days > 0))


@dataclass
class Plan:
    """A generated world: teams, citizens (each in a team or none), the nurse's teams, whose
    the citizen user is, the relative's proxies."""

    teams: int
    citizen_teams: list[int | None]
    nurse_teams: frozenset[int]
    own_citizen: int
    proxies: list[Proxy]


@st.composite
def plans(draw: st.DrawFn) -> Plan:
    teams = draw(st.integers(1, 3))
    citizen_teams = draw(st.lists(st.one_of(st.none(), st.integers(0, teams - 1)),
                                  min_size=1, max_size=4))
    proxies = draw(st.lists(st.builds(
        Proxy, citizen=st.integers(0, len(citizen_teams) - 1),
        kinds=st.frozensets(st.sampled_from(KINDS), min_size=1),
        starts_days_ago=st.sampled_from([-1, 2, 20]),
        ends_in_days=st.sampled_from([None, -1, 5]), revoked=st.booleans()), max_size=3))
    return Plan(teams, citizen_teams, draw(st.frozensets(st.integers(0, teams - 1))),
                draw(st.integers(0, len(citizen_teams) - 1)), proxies)


@dataclass
class World:
    plan: Plan
    teams: list[UUID] = field(default_factory=list)
    citizens: list[UUID] = field(default_factory=list)
    devices: list[str] = field(default_factory=list)
    alerts: list[int] = field(default_factory=list)
    users: dict[str, User] = field(default_factory=dict)

    def may_see(self, role: str, citizen: int, kind: str) -> bool:
        """The relation, as docs/access.md states it."""
        team = self.plan.citizen_teams[citizen]
        if role == "administrator":
            return True
        if role == "nurse":
            return team is not None and team in self.plan.nurse_teams
        if role == "citizen":
            return citizen == self.plan.own_citizen
        if role == "relative":
            return bool(self.proxy_window(citizen, kind))
        return False

    def proxy_window(self, citizen: int, kind: str) -> list[Proxy]:
        return [p for p in self.plan.proxies
                if p.citizen == citizen and kind in p.kinds and p.in_force()]

    def sees_old_reading(self, role: str, citizen: int) -> bool:
        if role != "relative":
            return self.may_see(role, citizen, "readings")
        return any(p.starts_days_ago > 10 for p in self.proxy_window(citizen, "readings"))

    def works_in(self, role: str, team: int) -> bool:
        return role == "administrator" or (role == "nurse" and team in self.plan.nurse_teams)


def _user(conn: Conn, role: str, citizen: UUID | None = None) -> User:
    username = f"{role[:5]}-{uuid.uuid4().hex[:10]}"
    row = conn.execute(
        "INSERT INTO users (username, display_name, role, password_hash, created_at, citizen_id)"
        " VALUES (%s, 'Test', %s, 'not-a-hash', %s, %s) RETURNING id",
        (username, role, NOW, citizen)).fetchone()
    assert row is not None
    return User(id=row[0], username=username, display_name="Test", role=role,  # type: ignore[arg-type]
                created_at=NOW, disabled_at=None)


def build(conn: Conn, plan: Plan) -> World:
    world = World(plan)
    world.teams = [care_team(conn) for _ in range(plan.teams)]
    for index, team in enumerate(plan.citizen_teams):
        citizen = team_citizen(conn, world.teams[team]) if team is not None else None
        device, citizen = new_device(conn, "bp_monitor", citizen)
        if team is None:
            conn.execute("UPDATE citizens SET care_team_id = NULL WHERE id = %s", (citizen,))
        devices_repo.prepare_reading_stage(conn)
        with conn.transaction():  # the stage is emptied at commit
            devices_repo.insert_readings(conn, [
                ReadingRow(device, "systolic_bp", at, seq, citizen, 130.0, at, None, False,
                           None, "valid", False) for seq, at in ((1, OLD), (2, RECENT))])
        world.citizens.append(citizen)
        world.devices.append(device)
        world.alerts.append(open_alert(conn, citizen, world.teams[team] if team is not None
                                       else None, RECENT - timedelta(minutes=index)))
    world.users["administrator"] = _user(conn, "administrator")
    nurse = world.users["nurse"] = _user(conn, "nurse")
    for team in plan.nurse_teams:
        conn.execute("INSERT INTO team_members (user_id, care_team_id, added_at) VALUES "
                     "(%s, %s, %s)", (nurse.id, world.teams[team], NOW))
    world.users["citizen"] = _user(conn, "citizen", world.citizens[plan.own_citizen])
    relative = world.users["relative"] = _user(conn, "relative")
    for proxy in plan.proxies:
        start = NOW - timedelta(days=proxy.starts_days_ago)
        end = None if proxy.ends_in_days is None else NOW + timedelta(days=proxy.ends_in_days)
        if end is not None and end <= start:
            end = start + timedelta(hours=1)  # an already ended proxy: not in force now
        conn.execute(
            "INSERT INTO proxies (citizen_id, relative_id, kinds, valid, granted_by, granted_at,"
            " revoked_at) VALUES (%s, %s, %s, tstzrange(%s, %s), 'test', %s, %s)",
            (world.citizens[proxy.citizen], relative.id, sorted(proxy.kinds), start, end, NOW,
             NOW if proxy.revoked else None))
    world.users["project_lead"] = _user(conn, "project_lead")
    world.users["service"] = _user(conn, "service")
    return world


@pytest.fixture
def client(signed_in_client: TestClient) -> TestClient:
    return signed_in_client


def as_user(user: User) -> dict[str, str]:
    return {"Authorization": "Bearer " + issue_access_token(user, KEY, NOW, timedelta(minutes=5))}


CITIZEN_ROUTES = {  # path template -> the kind of data it shows
    "/v1/citizens/{citizen}/readings?metric=systolic_bp&start=2026-11-01T00:00:00Z": "readings",
    "/v1/citizens/{citizen}/devices": "devices",
    "/v1/devices/{device}": "devices",
    "/v1/citizens/{citizen}/plans": "care",
    "/v1/citizens/{citizen}/thresholds": "care",
    "/v1/citizens/{citizen}/pauses": "care",
    "/v1/citizens/{citizen}/team": "care",
    "/v1/alerts/{alert}": "alerts",
    "/v1/alerts/{alert}/history": "alerts",
}
ROLES = ("administrator", "nurse", "citizen", "relative", "project_lead", "service")


def _check_citizen_routes(client: TestClient, world: World, role: str) -> None:
    headers = as_user(world.users[role])
    for index, citizen in enumerate(world.citizens):
        for template, kind in CITIZEN_ROUTES.items():
            path = template.format(citizen=citizen, device=world.devices[index],
                                   alert=world.alerts[index])
            answer = client.get(path, headers=headers)
            if world.may_see(role, index, kind):
                assert answer.status_code == 200, (role, path, answer.text)
            else:
                problem(answer, 404)
        if world.may_see(role, index, "readings"):
            seen = client.get(f"/v1/citizens/{citizen}/readings", headers=headers, params={
                "metric": "systolic_bp", "start": (OLD - timedelta(hours=1)).isoformat()})
            times = [r["measured_at"] for r in seen.json()["readings"]]
            assert len(times) == (2 if world.sees_old_reading(role, index) else 1), (role, times)


def _check_team_routes(client: TestClient, world: World, role: str) -> None:
    headers = as_user(world.users[role])
    for index, team in enumerate(world.teams):
        for path in (f"/v1/teams/{team}", f"/v1/teams/{team}/alerts",
                     f"/v1/teams/{team}/escalation-policy"):
            answer = client.get(path, headers=headers)
            if world.works_in(role, index):
                assert answer.status_code == 200, (role, path, answer.text)
            else:
                problem(answer, 404, "care_team_not_found")
    listed = {UUID(t["id"]) for t in client.get("/v1/teams", headers=headers).json()}
    assert listed & set(world.teams) == {team for index, team in enumerate(world.teams)
                                         if world.works_in(role, index)}
    devices = {d["id"] for d in client.get("/v1/devices", headers=headers).json()}
    assert devices & set(world.devices) == {
        device for index, device in enumerate(world.devices)
        if world.may_see(role, index, "devices")}


@settings(max_examples=12, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(plan=plans())
def test_every_route_answers_exactly_when_the_relation_allows(
        conn: Conn, client: TestClient, plan: Plan) -> None:
    world = build(conn, plan)
    for role in ROLES:
        _check_citizen_routes(client, world, role)
        _check_team_routes(client, world, role)


def test_a_looker_may_not_change_and_a_stranger_learns_nothing(
        conn: Conn, client: TestClient) -> None:
    world = build(conn, Plan(teams=1, citizen_teams=[0], nurse_teams=frozenset({0}),
                             own_citizen=0, proxies=[Proxy(0, frozenset(KINDS), 2, None, False)]))
    citizen, alert = world.citizens[0], world.alerts[0]
    pause = {"reason": "holiday", "start": NOW.isoformat()}
    ack = {"note": "seen"}
    for role in ("citizen", "relative"):
        headers = as_user(world.users[role])
        problem(client.post(f"/v1/citizens/{citizen}/pauses", json=pause, headers=headers),
                403, "forbidden")
        problem(client.post(f"/v1/alerts/{alert}/acknowledge", json=ack, headers=headers),
                403, "forbidden")
    stranger = as_user(world.users["project_lead"])
    problem(client.post(f"/v1/citizens/{citizen}/pauses", json=pause, headers=stranger), 404,
            "citizen_not_found")
    nurse = as_user(world.users["nurse"])
    assert client.post(f"/v1/citizens/{citizen}/pauses", json=pause,
                       headers=nurse).status_code == 201
    assert client.post(f"/v1/alerts/{alert}/acknowledge", json=ack,
                       headers=nurse).status_code == 200


def test_a_disabled_user_loses_access_at_once_whatever_token_they_hold(
        conn: Conn, client: TestClient) -> None:
    world = build(conn, Plan(teams=1, citizen_teams=[0], nurse_teams=frozenset({0}),
                             own_citizen=0, proxies=[]))
    headers = as_user(world.users["nurse"])
    path = f"/v1/citizens/{world.citizens[0]}/plans"
    assert client.get(path, headers=headers).status_code == 200
    conn.execute("UPDATE users SET disabled_at = %s WHERE id = %s",
                 (NOW, world.users["nurse"].id))
    problem(client.get(path, headers=headers), 401, "not_signed_in")


def test_an_administrator_demoted_acts_in_the_new_role_whatever_token_they_hold(
        conn: Conn, client: TestClient) -> None:
    admin = _user(conn, "administrator")
    headers = as_user(admin)
    assert client.get("/v1/dead-letters", headers=headers).status_code == 200
    conn.execute("UPDATE users SET role = 'relative' WHERE id = %s", (admin.id,))
    problem(client.get("/v1/dead-letters", headers=headers), 403, "forbidden")


def test_dead_letters_and_new_teams_are_for_administrators(
        conn: Conn, client: TestClient) -> None:
    nurse = as_user(_user(conn, "nurse"))
    problem(client.get("/v1/dead-letters", headers=nurse), 403, "forbidden")
    problem(client.post("/v1/teams", json={"name": f"t-{uuid.uuid4().hex[:8]}"}, headers=nurse),
            403, "forbidden")
    admin = as_user(_user(conn, "administrator"))
    assert client.get("/v1/dead-letters", headers=admin).status_code == 200


def test_relations_set_up_by_their_functions_open_exactly_that_access(
        conn: Conn, client: TestClient) -> None:
    from api import relations
    from api.auth import service as auth_service
    world = build(conn, Plan(teams=1, citizen_teams=[0, 0], nurse_teams=frozenset(),
                             own_citizen=1, proxies=[]))
    citizen, team = world.citizens[0], world.teams[0]
    names = {}
    for role in ("nurse", "relative", "citizen"):
        names[role] = f"{role}-{uuid.uuid4().hex[:8]}"
        auth_service.create_user(conn, names[role], "Test", role, "a long password", NOW)
    users = {u.username: u for u in auth_service.users(conn)}
    path = f"/v1/citizens/{citizen}/readings?metric=systolic_bp&start=2026-11-01T00:00:00Z"
    for role in names:
        problem(client.get(path, headers=as_user(users[names[role]])), 404)
    relations.add_member(conn, names["nurse"], team, NOW)
    relations.link_citizen(conn, names["citizen"], citizen)
    proxy = relations.grant_proxy(conn, citizen, names["relative"], ["readings"],
                                  NOW - timedelta(days=1), None, "test", NOW)
    for role in names:
        assert client.get(path, headers=as_user(users[names[role]])).status_code == 200, role
    relations.revoke_proxy(conn, citizen, proxy.id, NOW)
    problem(client.get(path, headers=as_user(users[names["relative"]])), 404)
    with pytest.raises(relations.InvalidProxy):
        relations.grant_proxy(conn, citizen, names["relative"], ["readings"], NOW,
                              NOW - timedelta(days=1), "test", NOW)
    with pytest.raises(InvalidUser):
        relations.grant_proxy(conn, citizen, names["nurse"], ["readings"], NOW, None, "t", NOW)
    with pytest.raises(UserConflict):  # one user per citizen
        relations.link_citizen(conn, world.users["citizen"].username, citizen)


def test_members_and_proxies_are_managed_over_the_api(conn: Conn, client: TestClient) -> None:
    world = build(conn, Plan(teams=1, citizen_teams=[0], nurse_teams=frozenset(),
                             own_citizen=0, proxies=[]))
    citizen, team = world.citizens[0], world.teams[0]
    admin, nurse = as_user(world.users["administrator"]), as_user(world.users["nurse"])
    relative = as_user(world.users["relative"])
    plans = f"/v1/citizens/{citizen}/plans"
    nurse_name, relative_name = world.users["nurse"].username, world.users["relative"].username
    problem(client.get(plans, headers=nurse), 404)
    problem(client.put(f"/v1/teams/{team}/members/{nurse_name}", headers=nurse), 403)
    assert client.put(f"/v1/teams/{team}/members/{nurse_name}", headers=admin).status_code == 204
    assert client.get(plans, headers=nurse).status_code == 200
    assert [m["username"] for m in client.get(f"/v1/teams/{team}/members",
                                                headers=nurse).json()] == [nurse_name]
    grant = {"relative": relative_name, "kinds": ["care"]}
    problem(client.post(f"/v1/citizens/{citizen}/proxies", json=grant, headers=relative), 404)
    problem(client.post(f"/v1/citizens/{citizen}/proxies", json={**grant, "relative": nurse_name},
                        headers=nurse), 422, "invalid_user")
    created = client.post(f"/v1/citizens/{citizen}/proxies", json=grant, headers=nurse)
    assert created.status_code == 201, created.text
    assert client.get(plans, headers=relative).status_code == 200
    problem(client.post(f"/v1/citizens/{citizen}/proxies", json=grant, headers=relative), 403)
    revoked = client.delete(f"/v1/citizens/{citizen}/proxies/{created.json()['id']}",
                            headers=nurse)
    assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
    problem(client.get(plans, headers=relative), 404)
    assert client.delete(f"/v1/teams/{team}/members/{nurse_name}", headers=admin).status_code == 204
    problem(client.get(plans, headers=nurse), 404)


def test_a_citizen_who_left_the_team_takes_their_alerts_out_of_its_queue(
        conn: Conn, client: TestClient) -> None:
    world = build(conn, Plan(teams=2, citizen_teams=[0, 0], nurse_teams=frozenset({0}),
                             own_citizen=0, proxies=[]))
    moved, stays = world.citizens
    # The moved citizen's alert was resolved in the old team (resolved alerts do not move).
    conn.execute("UPDATE alerts SET state = 'resolved', resolved_at = %s WHERE citizen_id = ANY(%s)",
                 (NOW, [moved, stays]))
    conn.execute("UPDATE citizens SET care_team_id = %s WHERE id = %s", (world.teams[1], moved))
    queue = client.get(f"/v1/teams/{world.teams[0]}/alerts", params={"state": "resolved"},
                       headers=as_user(world.users["nurse"])).json()
    assert {a["citizen_id"] for a in queue["alerts"]} == {str(stays)} and queue["total"] == 1
    admin = client.get(f"/v1/teams/{world.teams[0]}/alerts", params={"state": "resolved"},
                       headers=as_user(world.users["administrator"])).json()
    assert admin["total"] == 2  # administrators see every citizen
