"""The care team's alert stream over a real HTTP server (uvicorn) and the real database: live
changes of the team only, resumption with Last-Event-ID, heartbeats, a slow client cut off
without holding up the others, 404 for an unknown team."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import httpx
import psycopg
import pytest
import uvicorn
from fastapi import FastAPI

from alerts import service as alerts_service
from alerts.webhooks import DELIVERY_HEADER, SIGNATURE_HEADER, verify
from api.app import create_app
from api.routes.alert_stream import AlertStreamHub
from core.clock import Clock, system_clock
from core.db import open_pool
from core.roles import process_dsn
from core.settings import Settings
from simulators.fleet import SimDevice
from telecare.alerting import run_alerting
from telecare.embedded import free_port
from tests.alerts import delivery_data as data
from tests.alerts.test_webhooks import Receiver
from tests.conftest import Publisher, new_device, only_on, wait_for
from tests.ingest.test_screen import screen  # noqa: F401 - a fixture used below

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
PG = only_on("postgres")  # the stream does not depend on the storage backend


@dataclass
class Server:
    url: str
    app: FastAPI


@pytest.fixture
def server(database: str) -> Iterator[Server]:
    """The API under uvicorn on a free port, its clock at NOW, with a hub that beats every
    0.2 s and lets a client fall at most 2,000 events behind."""
    with serving(database, lambda: NOW) as running:
        yield running


@contextmanager
def serving(database: str, clock: Clock, **settings: Any) -> Iterator[Server]:
    pool = open_pool(process_dsn(database, "api"), max_size=4)
    app = create_app(Settings(**{"database_url": database, "auth_required": False, **settings}),
                     pool=pool, clock=clock)
    app.state.alert_stream = AlertStreamHub(database, queue_max=2000, heartbeat_s=0.2)
    port = free_port()
    uv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                       lifespan="on"))
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    wait_for(lambda: uv.started, 10, "uvicorn to start")
    yield Server(f"http://127.0.0.1:{port}", app)
    uv.should_exit = True
    thread.join(10)
    pool.close()


@dataclass
class Event:
    id: int
    event: str
    data: dict[str, Any]
    received: float


@dataclass
class StreamClient:
    """Reads one SSE stream in a thread, keeping events and comment lines."""

    url: str
    headers: dict[str, str] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)
    ended: threading.Event = field(default_factory=threading.Event)
    status: int | None = None

    def start(self) -> StreamClient:
        threading.Thread(target=self._read, daemon=True).start()
        wait_for(lambda: bool(self.comments) or self.ended.is_set(), 10, "the stream to open")
        return self

    def _read(self) -> None:
        try:
            with httpx.Client(timeout=httpx.Timeout(30, read=None)) as http, \
                    http.stream("GET", self.url, headers=self.headers) as response:
                self.status = response.status_code
                fields: dict[str, str] = {}
                for line in response.iter_lines():
                    if self.ended.is_set():
                        return
                    if line.startswith(":"):
                        self.comments.append(line)
                    elif line == "":
                        if "id" in fields:
                            self.events.append(Event(int(fields["id"]), fields["event"],
                                                     json.loads(fields["data"]),
                                                     time.monotonic()))
                        fields = {}
                    else:
                        name, _, value = line.partition(": ")
                        fields[name] = value
        except httpx.HTTPError:
            pass
        finally:
            self.ended.set()

    def ids(self) -> list[int]:
        """The history ids of the events received (the event id is the stream position)."""
        return [e.data["history_id"] for e in self.events]

    def close(self) -> None:
        self.ended.set()


def _team_alert(conn: psycopg.Connection[Any]) -> tuple[UUID, int]:
    team = data.care_team(conn)
    citizen = data.team_citizen(conn, team)
    return team, data.open_alert(conn, citizen, team, NOW)


@PG
def test_an_unknown_team_is_a_404_problem(server: Server) -> None:
    response = httpx.get(f"{server.url}/v1/teams/{uuid4()}/alerts/stream", timeout=10)
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"


@PG
def test_a_negative_last_event_id_is_a_422_problem(server: Server,
                                                   conn: psycopg.Connection[Any]) -> None:
    team, _ = _team_alert(conn)
    response = httpx.get(f"{server.url}/v1/teams/{team}/alerts/stream",
                         headers={"Last-Event-ID": "-1"}, timeout=10)
    assert response.status_code == 422


@PG
def test_the_team_gets_its_changes_live_and_no_other_teams(
        server: Server, conn: psycopg.Connection[Any]) -> None:
    team, alert = _team_alert(conn)
    other_team, other_alert = _team_alert(conn)
    stream = StreamClient(f"{server.url}/v1/teams/{team}/alerts/stream").start()
    try:
        latencies = []
        ids = []
        for action, other in (("opened", True), ("worsened", False), ("acknowledged", True)):
            if other:
                data.history(conn, other_alert, other_team, NOW, action)
            committed = time.monotonic()
            ids.append(data.history(conn, alert, team, NOW, action,
                                    pushed=action != "acknowledged"))
            wait_for(lambda: len(stream.events) == len(ids), 5, f"the {action} event")
            latencies.append(stream.events[-1].received - committed)
        wait_for(lambda: len(stream.comments) >= 3, 5, "heartbeats")
    finally:
        stream.close()
    assert stream.status == 200
    assert stream.ids() == ids
    assert [e.event for e in stream.events] == ["opened", "worsened", "acknowledged"]
    first = stream.events[0].data
    assert first["alert_id"] == alert and first["history_id"] == ids[0]
    assert first["care_team_id"] == str(team) and first["rule"] == "emergency_button"
    assert first["severity"] == "red" and first["state"] == "open"
    assert first["is_current"] is True and first["pushed"] is True
    assert first["summary"] == "emergency_button raised" and first["at"] == NOW.isoformat()
    assert stream.events[2].data["pushed"] is False
    assert any(c.startswith(": heartbeat") for c in stream.comments)
    # Informal: commit -> event on the stream, on this machine.
    print(f"commit -> SSE latency: max {max(latencies) * 1000:.1f} ms")
    assert max(latencies) < 0.5


@PG
def test_a_reconnecting_client_gets_what_it_missed_then_live_changes_once(
        server: Server, conn: psycopg.Connection[Any]) -> None:
    team, alert = _team_alert(conn)
    first = StreamClient(f"{server.url}/v1/teams/{team}/alerts/stream").start()
    seen = data.history(conn, alert, team, NOW, "opened")
    wait_for(lambda: first.ids() == [seen], 5, "the first event")
    first.close()
    last = first.events[-1].id
    missed = [data.history(conn, alert, team, NOW, a) for a in ("repeated", "worsened")]
    for headers, url in (({"Last-Event-ID": str(last)}, ""), ({}, f"?last_event_id={last}")):
        again = StreamClient(f"{server.url}/v1/teams/{team}/alerts/stream{url}", headers).start()
        try:
            wait_for(lambda: again.ids() == missed, 5, "the missed events")  # noqa: B023
            live = data.history(conn, alert, team, NOW, "escalated")
            wait_for(lambda: again.ids() == [*missed, live], 5, "the live one")  # noqa: B023
            time.sleep(0.3)
            assert again.ids() == [*missed, live]  # nothing twice
        finally:
            again.close()
        missed = [*missed, live]


@PG
def test_a_change_that_commits_after_a_later_drawn_one_is_not_skipped_on_resume(
        server: Server, conn: psycopg.Connection[Any], database: str) -> None:
    """The history id is drawn at insert: here the slow transaction draws the smaller id and
    commits last. A client that saw the other change and resumes from it still gets this one."""
    team, alert = _team_alert(conn)
    first = StreamClient(f"{server.url}/v1/teams/{team}/alerts/stream").start()
    with psycopg.connect(database) as slow:  # a transaction of its own, open until commit()
        drawn_first = data.history(slow, alert, team, NOW, "acknowledged", pushed=False)
        committed_first = data.history(conn, alert, team, NOW, "repeated")
        assert drawn_first < committed_first
        wait_for(lambda: first.ids() == [committed_first], 5, "the committed change")
        first.close()
        slow.commit()
    again = StreamClient(f"{server.url}/v1/teams/{team}/alerts/stream",
                         {"Last-Event-ID": str(first.events[-1].id)}).start()
    try:
        wait_for(lambda: again.ids() == [drawn_first], 5, "the change committed last")
    finally:
        again.close()


@PG
def test_a_slow_client_is_cut_off_without_holding_up_the_others_and_resumes(
        server: Server, conn: psycopg.Connection[Any], database: str) -> None:
    team, alert = _team_alert(conn)
    fast = StreamClient(f"{server.url}/v1/teams/{team}/alerts/stream").start()
    slow = _silent_client(server, team)
    try:
        time.sleep(0.3)  # subscribed
        # Far more than the socket buffers hold, so that the slow client's queue overflows.
        rows = conn.execute(
            "INSERT INTO alert_history (alert_id, care_team_id, at, action, actor, severity,"
            " state, pushed) SELECT %s, %s, %s, 'repeated', 'engine', 'red', 'open', true"
            " FROM generate_series(1, 20000) RETURNING id", (alert, team, NOW)).fetchall()
        ids = [r[0] for r in rows]
        wait_for(lambda: len(fast.events) == len(ids), 60, "the fast client to get them all")
        assert fast.ids() == ids
        positions = [e.id for e in fast.events]
        assert positions == sorted(positions)
        # The slow one was cut off: its connection is closed by the server.
        slow.settimeout(30)
        total = 0
        while chunk := slow.recv(1 << 20):
            total += len(chunk)
        assert total > 0
    finally:
        fast.close()
        slow.close()
    resumed = StreamClient(f"{server.url}/v1/teams/{team}/alerts/stream",
                           {"Last-Event-ID": str(positions[9999])}).start()
    try:
        wait_for(lambda: len(resumed.events) == 10000, 30, "the resumed client's backlog")
        assert resumed.ids() == ids[10000:]
    finally:
        resumed.close()
    hub: AlertStreamHub = server.app.state.alert_stream
    wait_for(lambda: hub._task is None, 5, "the hub to stop listening once nobody listens")


def _silent_client(server: Server, team: UUID) -> socket.socket:
    """A client that asks for the stream and then reads nothing, with a small receive window."""
    host, port = server.url.removeprefix("http://").split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((host, int(port)))
    sock.sendall(f"GET /v1/teams/{team}/alerts/stream HTTP/1.1\r\nHost: {host}\r\n"
                 "Accept: text/event-stream\r\n\r\n".encode())
    return sock


# --- end to end: MQTT -> ingest -> engine -> SSE, webhook, screen ----------------------------

@PG
def test_end_to_end_button_and_breach_reach_the_stream_a_webhook_and_the_screen(
        settings: Settings, conn: psycopg.Connection[Any], database: str, worker: Any,
        publisher: Publisher, screen: tuple[SimDevice, UUID]) -> None:  # noqa: F811
    sim, citizen = screen
    now = system_clock()
    team = alerts_service.create_team(conn, f"team-{uuid4().hex[:8]}", now).id
    alerts_service.assign_citizen(conn, citizen, team)
    alerts_service.set_plan(conn, citizen, "hypertension", now - timedelta(days=1), "test", now)
    button, _ = new_device(conn, "emergency_button", citizen)
    bp, _ = new_device(conn, "bp_monitor", citizen)
    receiver = Receiver([500, 200])
    alerts_service.add_webhook(conn, team, receiver.url, "hook-secret", now)
    stop = threading.Event()
    alerting = threading.Thread(target=run_alerting,
                                args=(settings.model_copy(update={"alerts_tick_s": 1.0}), stop),
                                daemon=True)
    alerting.start()
    try:
        with serving(database, system_clock) as api:
            stream = StreamClient(f"{api.url}/v1/teams/{team}/alerts/stream").start()
            pressed = time.monotonic()
            at = system_clock()
            publisher.publish(button, "events", json.dumps({
                "v": 1, "device_id": button, "sent_at": at.isoformat(), "events": [
                    {"seq": 1, "measured_at": at.isoformat(), "type": "emergency_button",
                     "data": {}}]}))
            wait_for(lambda: _rules(stream) >= {"emergency_button"}, 20, "the button alert")
            button_latency = time.monotonic() - pressed
            at = system_clock()
            publisher.publish(bp, "readings", json.dumps({
                "v": 1, "device_id": bp, "sent_at": at.isoformat(), "readings": [
                    {"seq": 1, "measured_at": at.isoformat(), "type": "blood_pressure",
                     "values": {"systolic": 230, "diastolic": 95, "pulse": 80}}]}))
            wait_for(lambda: "threshold:blood_pressure" in _rules(stream), 20, "the breach alert")
            breach = next(e for e in stream.events if e.data["rule"] == "threshold:blood_pressure")
            # The webhook: the first change answered 500, retried after about a second, taken.
            # Waited for by that delivery's own id: other changes of the team (a tick's) may
            # be delivered meanwhile.
            wait_for(lambda: _retried_first(receiver.requests), 20, "the 500 retried")
            wait_for(lambda: _delivered(conn, team) >= 2, 20, "both webhooks delivered")
            # The nurse acknowledges the breach: the citizen's screen is told she has seen it.
            response = httpx.post(f"{api.url}/v1/alerts/{breach.data['alert_id']}/acknowledge",
                                  json={}, timeout=10)
            assert response.status_code == 200, response.text
            wait_for(lambda: any(m.type == "seen" for m in
                                 sim.report.screen_messages.get(sim.spec.id, {}).values()),
                     20, "the seen message on the screen")
            wait_for(lambda: "acknowledged" in [e.event for e in stream.events], 10, "the ack")
            stream.close()
    finally:
        stop.set()
        alerting.join(30)
        receiver.close()
    assert not alerting.is_alive()
    deliveries = [h[DELIVERY_HEADER] for h, _ in receiver.requests]
    assert deliveries.count(deliveries[0]) == 2, "the one answered 500 was not retried"
    for headers, body in receiver.requests:
        assert verify("hook-secret", body, headers[SIGNATURE_HEADER], system_clock())
    attempts = conn.execute("SELECT status_code FROM webhook_attempts WHERE delivery_id = %s"
                            " ORDER BY id", (int(deliveries[0]),)).fetchall()
    assert [a[0] for a in attempts] == [500, 200]
    seen = next(m for m in sim.report.screen_messages[sim.spec.id].values() if m.type == "seen")
    assert seen.alert_id == breach.data["alert_id"]
    print(f"emergency button -> SSE {button_latency * 1000:.0f} ms")


def _retried_first(requests: list[Any]) -> bool:
    deliveries = [headers[DELIVERY_HEADER] for headers, _ in list(requests)]
    return bool(deliveries) and deliveries.count(deliveries[0]) >= 2


def _delivered(conn: psycopg.Connection[Any], team: UUID) -> int:
    row = conn.execute("SELECT count(*) FROM webhook_deliveries d JOIN webhooks w ON"
                       " w.id = d.webhook_id WHERE w.care_team_id = %s AND d.state = 'delivered'",
                       (team,)).fetchone()
    assert row is not None
    return int(row[0])


def _rules(stream: StreamClient) -> set[str]:
    return {e.data["rule"] for e in stream.events if e.event == "opened"}


@PG
def test_a_stream_that_cannot_listen_is_a_503_problem(server: Server,
                                                      conn: psycopg.Connection[Any]) -> None:
    team, _ = _team_alert(conn)
    server.app.state.alert_stream = AlertStreamHub("postgresql://nobody@127.0.0.1:1/none")
    response = httpx.get(f"{server.url}/v1/teams/{team}/alerts/stream", timeout=20)
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["retry-after"] == "5"
