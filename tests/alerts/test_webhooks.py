"""Webhooks from the outbox to a real local HTTP receiver: signed, retried with back-off after a
500 and accepted, every attempt recorded, never sent twice at once, nothing lost by a restart."""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import psycopg
import pytest

from alerts.webhooks import (
    DELIVERY_HEADER,
    EVENT_HEADER,
    SIGNATURE_HEADER,
    RetryPolicy,
    WebhookSender,
    deliver_due_webhooks,
    sign,
    verify,
)
from core.roles import process_dsn
from tests.alerts import delivery_data as data
from tests.conftest import only_on, wait_for

# Delivery does not depend on the storage backend: its tests run on one.
PG = only_on("postgres")

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
SECRET = "s3cret"


class Receiver:
    """A real HTTP server in a thread: answers the statuses given in turn (the last one from
    then on) and keeps every request it got."""

    def __init__(self, statuses: list[int], delay_s: float = 0.0) -> None:
        self.statuses, self.delay_s = list(statuses), delay_s
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                time.sleep(receiver.delay_s)
                with receiver._lock:
                    receiver.requests.append((dict(self.headers), body))
                    status = (receiver.statuses.pop(0) if len(receiver.statuses) > 1
                              else receiver.statuses[0])
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def database(fresh_database: str) -> str:
    """A database of the test's own: the sender delivers whatever is due, and other tests of
    the session leave pending deliveries in the shared one."""
    return fresh_database


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=5) as http:
        yield http


def _outbox(conn: psycopg.Connection[Any], url: str, n: int = 1, at: datetime = NOW
            ) -> tuple[list[int], list[int]]:
    """`n` alert changes of a new team with a webhook to `url`: (delivery ids, history ids).
    One transaction, as the service writes a change with its deliveries: a sender woken by
    the history row's notification finds its delivery there."""
    with conn.transaction():
        team = data.care_team(conn)
        citizen = data.team_citizen(conn, team)
        hook = data.webhook(conn, team, url, SECRET)
        deliveries, changes = [], []
        for i in range(n):
            alert = data.open_alert(conn, citizen, team, at, rule=f"threshold:metric_{i}")
            changes.append(data.history(conn, alert, team, at))
            deliveries.append(data.delivery(conn, hook, changes[-1], at))
    return deliveries, changes


def _delivery(conn: psycopg.Connection[Any], delivery_id: int) -> dict[str, Any]:
    row = conn.execute("SELECT state, attempts, next_attempt_at, delivered_at FROM "
                       "webhook_deliveries WHERE id = %s", (delivery_id,)).fetchone()
    assert row is not None
    return dict(zip(("state", "attempts", "next_attempt_at", "delivered_at"), row, strict=True))


def _attempts(conn: psycopg.Connection[Any], delivery_id: int) -> list[tuple[Any, ...]]:
    return conn.execute("SELECT attempted_at, status_code, error, duration_ms FROM "
                        "webhook_attempts WHERE delivery_id = %s ORDER BY id",
                        (delivery_id,)).fetchall()


@PG
def test_a_500_is_retried_after_back_off_and_the_signed_delivery_accepted(
        conn: psycopg.Connection[Any], client: httpx.Client) -> None:
    receiver = Receiver([500, 200])
    try:
        (delivery,), (change,) = _outbox(conn, receiver.url)
        assert deliver_due_webhooks(conn, client, NOW) == 1
        first = _delivery(conn, delivery)
        assert first["state"] == "pending" and first["attempts"] == 1
        # 1 s after the first failure, stretched by at most the jitter.
        assert NOW + timedelta(seconds=1) <= first["next_attempt_at"] <= NOW + timedelta(
            seconds=1.25)
        assert deliver_due_webhooks(conn, client, NOW + timedelta(milliseconds=900)) == 0
        later = NOW + timedelta(seconds=2)
        assert deliver_due_webhooks(conn, client, later) == 1
        done = _delivery(conn, delivery)
        assert done["state"] == "delivered" and done["delivered_at"] == later
        assert deliver_due_webhooks(conn, client, later + timedelta(hours=1)) == 0
    finally:
        receiver.close()
    attempts = _attempts(conn, delivery)
    assert [(a[0], a[1], a[2]) for a in attempts] == [(NOW, 500, "HTTP 500"), (later, 200, None)]
    assert all(a[3] > 0 for a in attempts)
    assert len(receiver.requests) == 2
    for (headers, body), at in zip(receiver.requests, (NOW, later), strict=True):
        assert verify(SECRET, body, headers[SIGNATURE_HEADER], at)
        assert headers[SIGNATURE_HEADER] == sign(SECRET, body, int(at.timestamp()))
        assert headers[DELIVERY_HEADER] == str(delivery)
        assert headers[EVENT_HEADER] == "opened"
        assert headers["Content-Type"] == "application/json"
    event = json.loads(receiver.requests[1][1])
    assert event["history_id"] == change and event["action"] == "opened"
    assert event["rule"] == "threshold:metric_0" and event["severity"] == "red"
    assert event["pushed"] is True and event["is_current"] is True


@PG
def test_a_receiver_that_never_accepts_is_given_up_after_the_last_attempt(
        conn: psycopg.Connection[Any], client: httpx.Client) -> None:
    receiver = Receiver([503])
    policy = RetryPolicy(max_attempts=3)
    try:
        (delivery,), _ = _outbox(conn, receiver.url)
        at = NOW
        for _ in range(5):
            deliver_due_webhooks(conn, client, at, policy=policy)
            at += timedelta(minutes=1)
    finally:
        receiver.close()
    assert _delivery(conn, delivery)["state"] == "failed"
    assert [a[1] for a in _attempts(conn, delivery)] == [503, 503, 503]


@PG
def test_an_unreachable_receiver_is_an_attempt_with_its_error(
        conn: psycopg.Connection[Any], client: httpx.Client) -> None:
    receiver = Receiver([200])
    url = receiver.url
    receiver.close()  # nothing listens there now
    (delivery,), _ = _outbox(conn, url)
    assert deliver_due_webhooks(conn, client, NOW) == 1
    ((_, status, error, _),) = _attempts(conn, delivery)
    assert status is None and error == "ConnectError"
    assert _delivery(conn, delivery)["state"] == "pending"


@PG
def test_a_url_the_client_cannot_encode_is_a_failed_attempt_and_holds_up_no_other(
        conn: psycopg.Connection[Any], client: httpx.Client) -> None:
    """httpx raises UnicodeError (no HTTPError) for a host label over 63 characters: it must
    not roll the attempt back and leave that delivery first in line for ever."""
    (bad,), _ = _outbox(conn, f"http://{'a' * 64}.example/hook")
    receiver = Receiver([200])
    try:
        (good,), _ = _outbox(conn, receiver.url, at=NOW + timedelta(seconds=1))
        assert deliver_due_webhooks(conn, client, NOW + timedelta(seconds=1)) == 2
        ((_, status, error, _),) = _attempts(conn, bad)
        assert status is None and error == "UnicodeError"
        assert _delivery(conn, bad)["state"] == "pending"
        assert _delivery(conn, good)["state"] == "delivered"
    finally:
        receiver.close()


def test_the_back_off_doubles_from_one_second_up_to_its_cap_with_bounded_jitter() -> None:
    policy = RetryPolicy()
    rng = random.Random(7)
    for attempts in range(1, 40):
        base = min(600.0, 2.0 ** (attempts - 1))
        delay = policy.delay(attempts, rng).total_seconds()
        assert base <= delay <= base * 1.25


def test_a_signature_fails_for_another_body_secret_or_an_old_timestamp() -> None:
    body = b'{"history_id":1}'
    header = sign(SECRET, body, int(NOW.timestamp()))
    assert verify(SECRET, body, header, NOW + timedelta(seconds=10))
    assert not verify(SECRET, body + b" ", header, NOW)
    assert not verify("other", body, header, NOW)
    assert not verify(SECRET, body, header, NOW + timedelta(minutes=10))
    assert not verify(SECRET, body, "v1=abc", NOW)


@PG
def test_two_senders_at_once_send_each_delivery_once(
        conn: psycopg.Connection[Any], database: str) -> None:
    receiver = Receiver([200], delay_s=0.2)
    try:
        deliveries, _ = _outbox(conn, receiver.url, n=6)
        results: list[int] = []

        def send() -> None:
            with psycopg.connect(database, autocommit=True) as own, httpx.Client(timeout=5) as http:
                results.append(deliver_due_webhooks(own, http, NOW))

        senders = [threading.Thread(target=send) for _ in range(2)]
        for sender in senders:
            sender.start()
        for sender in senders:
            sender.join(30)
    finally:
        receiver.close()
    sent = sorted(int(headers[DELIVERY_HEADER]) for headers, _ in receiver.requests)
    assert sent == sorted(deliveries)
    assert sum(results) == 6 and all(results)  # both took part, neither sent one twice
    assert all(_delivery(conn, d)["state"] == "delivered" for d in deliveries)


@PG
def test_the_sender_loop_delivers_on_commit_and_a_restart_loses_nothing(
        conn: psycopg.Connection[Any], database: str) -> None:
    receiver = Receiver([200])
    try:
        first_run = _run_sender(database)
        (first,), _ = _outbox(conn, receiver.url, at=datetime.now(UTC))
        written = time.monotonic()
        wait_for(lambda: len(receiver.requests) == 1, 10, "the first webhook")
        latency = time.monotonic() - written
        first_run.stop()
        # Written while no sender runs: the next sender delivers it.
        (second,), _ = _outbox(conn, receiver.url, at=datetime.now(UTC))
        time.sleep(0.3)
        assert len(receiver.requests) == 1
        second_run = _run_sender(database)
        wait_for(lambda: len(receiver.requests) == 2, 10, "the webhook written while stopped")
        second_run.stop()
    finally:
        receiver.close()
    assert [int(h[DELIVERY_HEADER]) for h, _ in receiver.requests] == [first, second]
    assert latency < 1.0, f"commit -> webhook took {latency:.3f} s"  # woken by LISTEN, not polling


class _Running:
    def __init__(self, sender: WebhookSender) -> None:
        self.event = threading.Event()
        self.thread = threading.Thread(target=sender.run, args=(self.event,), daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.event.set()
        started = time.monotonic()
        self.thread.join(5)
        assert not self.thread.is_alive(), "sender did not stop"
        assert time.monotonic() - started < 2.0, "stop took too long"


def _run_sender(database: str) -> _Running:
    # A long poll: only the notification can make the delivery fast.
    return _Running(WebhookSender(process_dsn(database, "alerts"), lambda: datetime.now(UTC),
                                  poll_s=30.0))
