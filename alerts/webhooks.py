"""Webhook delivery from the outbox: signed POSTs of alert changes, every attempt recorded,
retried with exponential back-off and jitter, given up after a bound.

The outbox (webhook_deliveries) is written in the transaction of the alert change, so a
restart loses nothing: a delivery is pending until an attempt succeeds. Each delivery is
claimed FOR UPDATE SKIP LOCKED for the duration of its attempt, so two senders never send one
at the same time; a sender killed mid-attempt leaves it pending, and it is sent again (at
least once: receivers de-duplicate by X-Telecare-Delivery)."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import random
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
import psycopg

from alerts import delivery_repository as repo
from alerts.outbox import serve_outbox
from core.clock import Clock

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Telecare-Signature"
DELIVERY_HEADER = "X-Telecare-Delivery"
EVENT_HEADER = "X-Telecare-Event"
# 1 s, 2 s, 4 s ... up to 10 minutes; 12 attempts span about 40 minutes, then 'failed'.
FIRST_RETRY = timedelta(seconds=1)
MAX_RETRY = timedelta(minutes=10)
MAX_ATTEMPTS = 12
# Each delay is stretched by up to this share, at random, so that deliveries failed together
# (a receiver that was down) do not all retry in the same instant.
JITTER = 0.25
# A receiver verifying a signature should refuse a timestamp older than this (replays).
SIGNATURE_TOLERANCE_S = 300
# How often a waiting sender looks at its stop event.
STOP_SLICE_S = 0.5


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how far apart a delivery is attempted."""

    first: timedelta = FIRST_RETRY
    cap: timedelta = MAX_RETRY
    max_attempts: int = MAX_ATTEMPTS
    jitter: float = JITTER

    def delay(self, attempts: int, rng: random.Random) -> timedelta:
        """The wait after the `attempts`-th failed attempt (1-based)."""
        base: timedelta = min(self.cap, self.first * float(2 ** min(attempts - 1, 30)))
        return base * (1 + self.jitter * rng.random())


def new_webhook_secret() -> str:
    """A signing secret for a new webhook: 256 random bits, URL-safe text."""
    return secrets.token_urlsafe(32)


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """The signature header: `t=<unix>,v1=<hex HMAC-SHA256 of "<t>.<body>">` (Stripe's scheme)."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify(secret: str, body: bytes, header: str, now: datetime,
           tolerance_s: int = SIGNATURE_TOLERANCE_S) -> bool:
    """What a receiver checks: a v1 signature of this body with this secret, recently made."""
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    try:
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs(now.timestamp() - timestamp) > tolerance_s:
        return False
    expected = sign(secret, body, timestamp).split(",v1=", 1)[1]
    return hmac.compare_digest(expected, parts.get("v1", ""))


def deliver_due_webhooks(conn: psycopg.Connection[Any], client: httpx.Client, now: datetime, *,
                         limit: int = 50, policy: RetryPolicy | None = None,
                         rng: random.Random | None = None) -> int:
    """Attempt up to `limit` due deliveries, each in its own transaction (claimed, sent,
    recorded, committed); returns how many were attempted."""
    policy = policy or RetryPolicy()
    rng = rng or random.Random()
    attempted = 0
    while attempted < limit:
        with conn.transaction():
            delivery = repo.claim_due_delivery(conn, now)
            if delivery is None:
                return attempted
            _attempt(conn, client, delivery, now, policy, rng)
        attempted += 1
    return attempted


def _attempt(conn: psycopg.Connection[Any], client: httpx.Client, delivery: dict[str, Any],
             now: datetime, policy: RetryPolicy, rng: random.Random) -> None:
    attempts = delivery["attempts"] + 1
    if not delivery["active"]:
        # Switched off after the change was written: nothing to send it to.
        repo.record_attempt(conn, delivery["id"], now, None, "webhook inactive", 0.0)
        repo.settle_delivery(conn, delivery["id"], state="failed", attempts=attempts,
                             next_attempt_at=now, delivered_at=None)
        return
    event = repo.event_data(repo.events_by_id(conn, [delivery["history_id"]])[0])
    body = json.dumps(event, separators=(",", ":")).encode()
    status, error, duration_ms = _post(client, delivery, event["action"], body, now)
    repo.record_attempt(conn, delivery["id"], now, status, error, duration_ms)
    if status is not None and 200 <= status < 300:
        repo.settle_delivery(conn, delivery["id"], state="delivered", attempts=attempts,
                             next_attempt_at=now, delivered_at=now)
        log.info("webhook delivery %d delivered (attempt %d)", delivery["id"], attempts)
        return
    gave_up = attempts >= policy.max_attempts
    repo.settle_delivery(conn, delivery["id"], state="failed" if gave_up else "pending",
                         attempts=attempts, next_attempt_at=now + policy.delay(attempts, rng),
                         delivered_at=None)
    log.warning("webhook delivery %d attempt %d failed (%s)%s", delivery["id"], attempts,
                status if status is not None else error, "; giving up" if gave_up else "")


def _post(client: httpx.Client, delivery: dict[str, Any], action: str, body: bytes,
          now: datetime) -> tuple[int | None, str | None, float]:
    """(status code, error, duration in ms) of one POST; an error is a transport failure."""
    headers = {"Content-Type": "application/json",
               SIGNATURE_HEADER: sign(delivery["secret"], body, int(now.timestamp())),
               DELIVERY_HEADER: str(delivery["id"]),
               EVENT_HEADER: action,
               "User-Agent": "Telecare-Webhooks/1"}
    started = time.monotonic()
    try:
        response = client.post(delivery["url"], content=body, headers=headers)
    except Exception as exc:  # noqa: BLE001 - any failure is this delivery's, never the sender's
        # Not only httpx.HTTPError: a URL httpx cannot encode (a host label over 63 characters,
        # say) raises UnicodeError, which would roll the attempt back and leave this delivery
        # first in line for ever, holding up every team's. The class only: an error's text can
        # carry the URL with credentials in it.
        return None, type(exc).__name__, (time.monotonic() - started) * 1000
    duration_ms = (time.monotonic() - started) * 1000
    return response.status_code, None if response.is_success else f"HTTP {response.status_code}", \
        duration_ms


class WebhookSender:
    """The sender loop beside the alert engine: delivers what is due, wakes on every alert
    change (LISTEN) and at least every `poll_s`; any number may run at once."""

    def __init__(self, dsn: str, clock: Clock, *, client: httpx.Client | None = None,
                 timeout_s: float = 5.0, poll_s: float = 1.0,
                 policy: RetryPolicy | None = None) -> None:
        self._dsn, self._clock, self._poll_s = dsn, clock, poll_s
        self._client = client or httpx.Client(timeout=timeout_s, follow_redirects=False)
        self._policy = policy or RetryPolicy()
        self._rng = random.Random()
        self.attempted = 0

    def run(self, stop: threading.Event) -> None:
        """Deliver until `stop` is set; a stop waits at most for the attempt in flight (its
        HTTP timeout)."""
        serve_outbox(self._dsn, "webhook sender", self._serve, stop)
        log.info("webhook sender stopped after %d attempts", self.attempted)

    def _serve(self, conn: psycopg.Connection[Any], stop: threading.Event) -> None:
        while not stop.is_set():
            # One at a time, so that a stop is seen between attempts.
            if deliver_due_webhooks(conn, self._client, self._clock(), limit=1,
                                    policy=self._policy, rng=self._rng):
                self.attempted += 1
                continue
            self._wait(conn, stop)

    def _wait(self, conn: psycopg.Connection[Any], stop: threading.Event) -> None:
        """Until an alert change is committed, the next retry is due, or `poll_s`; in slices
        short enough to see a stop."""
        wait_s = self._poll_s
        due = repo.next_due(conn)
        if due is not None:
            # Never 0: a due delivery another sender holds would make this spin.
            wait_s = max(0.05, min(wait_s, (due - self._clock()).total_seconds()))
        deadline = time.monotonic() + wait_s
        while not stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            for _ in conn.notifies(timeout=min(left, STOP_SLICE_S), stop_after=1):
                return
