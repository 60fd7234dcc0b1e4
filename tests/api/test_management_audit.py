"""Every management change over the API is in the audit log: enrolment and discharge, a team
given, devices given and taken back (with a validity interval), proxies granted and revoked,
pilot enrolments, a citizen user linked, a nurse's team membership (docs/access.md). A sequence
of such calls, run against the real database as an administrator, leaves exactly one `change`
record per call and citizen it names (a membership: one without a citizen), each with the
call's own request, and a refused call none."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from uuid import UUID

import psycopg
from fastapi.testclient import TestClient

from api.auth.models import User
from tests.alerts.delivery_data import care_team
from tests.api.conftest import NOW, insert_user
from tests.api.test_access import as_user
from tests.conftest import only_on

pytestmark = only_on("postgres")  # the audit log does not depend on the storage backend

Conn = psycopg.Connection[Any]


def _user(conn: Conn, role: str) -> User:
    return insert_user(conn, role, NOW)


@dataclass
class State:
    """What the calls made so far created, for the calls after them."""

    teams: list[UUID]
    nurse: str
    relative: str
    citizen_user: str
    device: str
    pilot: str = ""
    citizens: list[UUID] | None = None
    proxy: int = 0
    enrolment: int = 0


# A call: (method, path, body) from the state, its expected status, the citizens it names
# (indexes into State.citizens; None: a record without a citizen), what its records say was
# changed, and what to keep of the answer.
Call = tuple[Callable[[State], tuple[str, str, dict[str, Any] | None]], int, list[int | None],
             str, Callable[[State, Any], None] | None]


def _keep_citizen(state: State, answer: Any) -> None:
    assert state.citizens is not None
    state.citizens.append(UUID(answer.json()["id"]))


def _c(state: State, index: int) -> str:
    assert state.citizens is not None
    return str(state.citizens[index])


CALLS: list[Call] = [
    (lambda s: ("POST", "/v1/citizens", {"display_name": "A", "conditions": ["copd"],
                                          "care_team_id": str(s.teams[0])}),
     201, [0], "registry", _keep_citizen),
    (lambda s: ("POST", "/v1/citizens", {"display_name": "B"}),
     201, [1], "registry", _keep_citizen),
    (lambda s: ("PUT", f"/v1/citizens/{_c(s, 1)}/team", {"care_team_id": str(s.teams[1])}),
     200, [1], "registry", None),
    (lambda s: ("PUT", f"/v1/devices/{s.device}/holder",
                {"citizen_id": _c(s, 0), "valid_from": (NOW - timedelta(days=5)).isoformat()}),
     200, [0], "devices", None),
    # Given to another citizen: both records change (what it sent since then moves).
    (lambda s: ("PUT", f"/v1/devices/{s.device}/holder",
                {"citizen_id": _c(s, 1), "valid_from": (NOW - timedelta(days=2)).isoformat()}),
     200, [1, 0], "devices", None),
    (lambda s: ("DELETE", f"/v1/devices/{s.device}/holder", None), 204, [1], "devices", None),
    (lambda s: ("DELETE", f"/v1/devices/{s.device}/holder", None),
     409, [], "", None),  # none open
    (lambda s: ("PUT", f"/v1/teams/{s.teams[0]}/members/{s.nurse}", None),
     204, [None], "team_members", None),
    (lambda s: ("DELETE", f"/v1/teams/{s.teams[0]}/members/{s.nurse}", None),
     204, [None], "team_members", None),
    (lambda s: ("POST", f"/v1/citizens/{_c(s, 0)}/proxies",
                {"relative": s.relative, "kinds": ["readings"]}),
     201, [0], "access", lambda s, a: setattr(s, "proxy", a.json()["id"])),
    (lambda s: ("DELETE", f"/v1/citizens/{_c(s, 0)}/proxies/{s.proxy}", None),
     200, [0], "access", None),
    (lambda s: ("POST", f"/v1/pilots/{s.pilot}/enrolments", {"citizen_id": _c(s, 1)}),
     201, [1], "pilots", lambda s, a: setattr(s, "enrolment", a.json()["id"])),
    (lambda s: ("GET", f"/v1/pilots/{s.pilot}/enrolments", None), 200, [1], "pilots", None),
    (lambda s: ("DELETE", f"/v1/pilots/{s.pilot}/enrolments/{s.enrolment}", None),
     204, [1], "pilots", None),
    (lambda s: ("PUT", f"/v1/users/{s.citizen_user}/citizen", {"citizen_id": _c(s, 1)}),
     200, [1], "access", None),
    (lambda s: ("POST", f"/v1/citizens/{_c(s, 0)}/discharge", {}), 200, [0], "registry", None),
    (lambda s: ("POST", f"/v1/citizens/{_c(s, 0)}/discharge", {}),
     409, [], "", None),  # already discharged
]


def test_each_management_call_leaves_one_record_per_citizen_it_names(
        conn: Conn, signed_in_client: TestClient) -> None:
    client = signed_in_client
    admin = as_user(_user(conn, "administrator"))
    device = f"audit-bp-{uuid.uuid4().hex[:8]}"
    registered = client.post("/v1/devices", json={"id": device, "kind": "bp_monitor",
                                                  "model": "M", "serial": device}, headers=admin)
    assert registered.status_code == 201, registered.text
    pilot = client.post("/v1/pilots", json={"name": f"pilot {uuid.uuid4().hex[:8]}",
                                            "starts_at": (NOW - timedelta(days=30)).isoformat()},
                        headers=admin)
    assert pilot.status_code == 201, pilot.text
    state = State(teams=[care_team(conn), care_team(conn)], nurse=_user(conn, "nurse").username,
                  relative=_user(conn, "relative").username,
                  citizen_user=_user(conn, "citizen").username, device=device,
                  pilot=pilot.json()["id"], citizens=[])
    for make, status, named, what, keep in CALLS:
        method, path, body = make(state)
        before = _last_id(conn)
        answer = client.request(method, path, json=body, headers=admin)
        assert answer.status_code == status, (method, path, answer.text)
        if keep is not None:
            keep(state, answer)
        rows = conn.execute(
            "SELECT request_id, action, citizen_id, route, what FROM audit_log WHERE id > %s"
            " ORDER BY id", (before,)).fetchall()
        assert state.citizens is not None
        expected = sorted(str(None if i is None else state.citizens[i]) for i in named)
        assert sorted(str(row[2]) for row in rows) == expected, (method, path, rows)
        assert len({row[0] for row in rows}) <= 1, rows  # one request
        assert all(row[3] == f"{method} {path}" for row in rows), rows
        assert all(row[1] == ("search" if method == "GET" else "change") for row in rows), rows
        assert all(row[4] == what for row in rows), rows


def _last_id(conn: Conn) -> int:
    row = conn.execute("SELECT coalesce(max(id), 0) FROM audit_log").fetchone()
    assert row is not None
    return int(row[0])
