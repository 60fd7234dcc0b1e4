"""The alert stream carries only what its caller may see now, by the same relation as every
other route (api/access.py `visible`), and records each citizen it pushes once per stream in
the audit log, before their first event goes out: over a real HTTP server (uvicorn), the real
database and the API's role. A nurse's stream drops a citizen who left her teams and everyone
once she leaves the team; a new password ends it; a relative's view is clipped to the proxy;
the local operator (sign-in off) sees every event of the team."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest
from pydantic import SecretStr

from alerts import delivery_repository as repo
from api.auth import service as auth_service
from api.auth.models import User
from api.auth.tokens import issue_access_token
from api.deps import Caller
from api.routes import alert_stream
from api.routes.alert_stream import StreamView, _event
from core.db import open_pool
from core.roles import process_dsn
from tests.alerts import delivery_data as data
from tests.api.conftest import insert_user
from tests.api.test_alert_stream import NOW, Server, StreamClient, serving
from tests.conftest import only_on, wait_for

pytestmark = only_on("postgres")  # the stream does not depend on the storage backend

KEY = "s" * 40
REFRESH_S = 0.3
Conn = psycopg.Connection[Any]


@pytest.fixture
def signed_in(database: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    """The API under uvicorn, sign-in required, its streams reading the relation again every
    0.3 s (heartbeats every 0.2 s)."""
    monkeypatch.setattr(alert_stream, "VIEW_REFRESH_S", REFRESH_S)
    with serving(database, lambda: NOW, auth_required=True,
                 auth_signing_key=SecretStr(KEY)) as running:
        yield running


@pytest.fixture
def operator(database: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    """The same with sign-in off: a call without a token is the local operator."""
    monkeypatch.setattr(alert_stream, "VIEW_REFRESH_S", REFRESH_S)
    with serving(database, lambda: NOW) as running:
        yield running


def _user(conn: Conn, role: str) -> User:
    return insert_user(conn, role, NOW)


def _team_nurse(conn: Conn, team: UUID) -> User:
    nurse = _user(conn, "nurse")
    conn.execute("INSERT INTO team_members (user_id, care_team_id, added_at) VALUES (%s, %s, %s)",
                 (nurse.id, team, NOW))
    return nurse


def _bearer(user: User) -> dict[str, str]:
    return {"Authorization": "Bearer " + issue_access_token(user, KEY, NOW, timedelta(hours=1))}


def _stream_records(conn: Conn, team: UUID) -> list[tuple[Any, ...]]:
    """(request, citizen, action, what) of the records of this team's streams."""
    return conn.execute(
        "SELECT request_id, citizen_id, action, what FROM audit_log WHERE route = %s"
        " ORDER BY id", (f"GET /v1/teams/{team}/alerts/stream",)).fetchall()


def test_a_nurse_stream_carries_only_the_citizens_she_may_see_now_each_recorded_once(
        signed_in: Server, conn: Conn) -> None:
    team, elsewhere = data.care_team(conn), data.care_team(conn)
    stays, moves = data.team_citizen(conn, team), data.team_citizen(conn, team)
    stays_alert, moves_alert = (data.open_alert(conn, c, team, NOW) for c in (stays, moves))
    nurse = _team_nurse(conn, team)
    stream = StreamClient(f"{signed_in.url}/v1/teams/{team}/alerts/stream",
                          _bearer(nurse)).start()
    try:
        sent = [data.history(conn, stays_alert, team, NOW, "opened"),
                data.history(conn, moves_alert, team, NOW, "opened"),
                data.history(conn, stays_alert, team, NOW, "worsened")]
        wait_for(lambda: stream.ids() == sent, what="both citizens' events")
        # The citizen moves to a team the nurse does not work in: their changes still land on
        # this team's stream (the history row names it), but she may no longer see them.
        conn.execute("UPDATE citizens SET care_team_id = %s WHERE id = %s", (elsewhere, moves))
        time.sleep(2 * REFRESH_S)
        data.history(conn, moves_alert, team, NOW, "repeated")
        sent.append(data.history(conn, stays_alert, team, NOW, "repeated"))
        wait_for(lambda: stream.ids() == sent, what="the staying citizen's event")
        # She leaves the team: nothing more, though the stream is still open.
        conn.execute("DELETE FROM team_members WHERE user_id = %s", (nurse.id,))
        time.sleep(2 * REFRESH_S)
        data.history(conn, stays_alert, team, NOW, "escalated")
        time.sleep(1.0)
        assert not stream.ended.is_set()
        assert stream.ids() == sent
    finally:
        stream.close()
    records = _stream_records(conn, team)
    assert len({r[0] for r in records}) == 1  # the stream's own request
    assert sorted(str(r[1]) for r in records) == sorted([str(None), str(stays), str(moves)])
    assert {(r[2], r[3]) for r in records} == {("search", "alert_stream")}


def test_a_new_password_ends_the_users_stream(signed_in: Server, conn: Conn) -> None:
    team = data.care_team(conn)
    alert = data.open_alert(conn, data.team_citizen(conn, team), team, NOW)
    nurse = _team_nurse(conn, team)
    stream = StreamClient(f"{signed_in.url}/v1/teams/{team}/alerts/stream",
                          _bearer(nurse)).start()
    try:
        first = data.history(conn, alert, team, NOW, "opened")
        wait_for(lambda: stream.ids() == [first], what="the first event")
        auth_service.set_password(conn, nurse.username, "a new password, long enough", NOW)
        wait_for(stream.ended.is_set, what="the stream to end")
        assert stream.ids() == [first]
    finally:
        stream.close()


def test_the_local_operator_sees_every_event_of_the_team(operator: Server, conn: Conn) -> None:
    team, elsewhere = data.care_team(conn), data.care_team(conn)
    citizen = data.team_citizen(conn, team)
    alert = data.open_alert(conn, citizen, team, NOW)
    conn.execute("UPDATE citizens SET care_team_id = %s WHERE id = %s", (elsewhere, citizen))
    stream = StreamClient(f"{operator.url}/v1/teams/{team}/alerts/stream").start()
    try:
        sent = [data.history(conn, alert, team, NOW, a) for a in ("opened", "worsened")]
        wait_for(lambda: stream.ids() == sent, what="the events")
    finally:
        stream.close()
    records = _stream_records(conn, team)
    assert sorted(str(r[1]) for r in records) == sorted([str(None), str(citizen)])


def test_a_relatives_view_of_a_stream_is_clipped_to_the_proxy(database: str, conn: Conn) -> None:
    """Relatives cannot open a team's stream (404, tests/api/test_access.py); the view filters
    by the relation all the same, so a relative's events would be what the proxy grants."""
    team = data.care_team(conn)
    granted, readings_only, stranger = (data.team_citizen(conn, team) for _ in range(3))
    relative = _user(conn, "relative")
    for citizen, kinds in ((granted, ["alerts"]), (readings_only, ["readings"])):
        conn.execute("INSERT INTO proxies (citizen_id, relative_id, kinds, valid, granted_by,"
                     " granted_at) VALUES (%s, %s, %s, tstzrange(%s, NULL), 'test', %s)",
                     (citizen, relative.id, kinds, NOW - timedelta(days=1), NOW))
    before = data.open_alert(conn, granted, team, NOW - timedelta(days=2))
    within = data.open_alert(conn, granted, team, NOW - timedelta(hours=1),
                             rule="threshold:systolic_bp")
    others = [data.open_alert(conn, c, team, NOW) for c in (readings_only, stranger)]
    ids = [data.history(conn, alert, team, NOW) for alert in (before, within, *others, within)]
    events = [_event(row) for row in repo.events_by_id(conn, ids)]
    caller = Caller(subject=str(relative.id), role="relative", username=relative.username,
                    token_generation=0, request_id=uuid4(), route="GET test-stream",
                    purpose="proxy")
    pool = open_pool(process_dsn(database, "api"), max_size=2)
    try:
        view = StreamView(pool, caller, lambda: NOW)
        assert [e["data"]["history_id"] for e in view.admit(events)] == [ids[1], ids[4]]
        assert view.admit(events[1:2]) == events[1:2]  # cached: no second record
    finally:
        pool.close()
    rows = conn.execute("SELECT citizen_id, action, what FROM audit_log WHERE request_id = %s",
                        (caller.request_id,)).fetchall()
    assert rows == [(granted, "search", "alert_stream")]


def test_a_stream_ends_when_the_token_that_opened_it_expires(database: str, conn: Conn) -> None:
    team = data.care_team(conn)
    nurse = _team_nurse(conn, team)
    alert = data.open_alert(conn, data.team_citizen(conn, team), team, NOW)
    events = [_event(row) for row in repo.events_by_id(
        conn, [data.history(conn, alert, team, NOW)])]
    now = [NOW]
    caller = Caller(subject=str(nurse.id), role="nurse", username=nurse.username,
                    token_expires_at=NOW + timedelta(hours=1), token_generation=0,
                    request_id=uuid4(), route="GET test-stream", purpose="care")
    pool = open_pool(process_dsn(database, "api"), max_size=2)
    try:
        view = StreamView(pool, caller, lambda: now[0])
        assert view.admit(events) == events
        now[0] = NOW + timedelta(minutes=59, seconds=59)
        assert view.admit([]) == []  # a heartbeat within the token's life
        now[0] = NOW + timedelta(hours=1)
        with pytest.raises(alert_stream.StreamEnded, match="token_expired"):
            view.admit([])
    finally:
        pool.close()
