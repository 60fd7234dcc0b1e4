"""Messages to citizens' home screens, from the screen_messages outbox to each screen's
commands topic at QoS 1.

A message is marked sent only after the broker's PUBACK, in the transaction that claimed it
(FOR UPDATE SKIP LOCKED, so two senders never send one at once); a sender stopped or killed
before that leaves it unsent, and the next one sends it again. Delivery is therefore at
least once, and the message carries its id so that the screen shows it once."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import Any

import paho.mqtt.client as paho
import psycopg
from pydantic import ValidationError

from alerts import delivery_repository as repo
from alerts.outbox import serve_outbox
from core.clock import Clock, system_clock
from core.settings import Settings
from ingest.mqtt import new_client
from ingest.wire import COMMANDS, ScreenMessageCommandV1, topic

log = logging.getLogger(__name__)

NO_HOME_SCREEN = "no_home_screen"
INVALID_BODY = "invalid_body"
STOP_SLICE_S = 0.5


def screen_command(row: dict[str, Any]) -> ScreenMessageCommandV1:
    """The wire message of a screen_messages row: `text` from the body shown as it is, its
    other plain values (names and sizes the protocol allows) as `data`."""
    body: dict[str, Any] = row["body"] or {}
    text = body.get("text")
    data = {key: value for key, value in body.items()
            if key != "text" and isinstance(value, str | bool | int | float)}
    return ScreenMessageCommandV1.model_validate({
        "v": 1, "type": row["kind"], "id": row["id"], "created_at": row["created_at"],
        "text": text if isinstance(text, str) else None, "alert_id": row["alert_id"],
        "data": data})


class ScreenSender:
    """The screen-message sender beside the alert engine; any number may run at once."""

    def __init__(self, settings: Settings, clock: Clock = system_clock, *,
                 client_id: str | None = None, poll_s: float = 1.0, batch: int = 100,
                 puback_timeout_s: float = 5.0) -> None:
        self._settings, self._clock = settings, clock
        self._poll_s, self._batch, self._puback_timeout_s = poll_s, batch, puback_timeout_s
        # Its own id per process: replicas must not take each other's connection.
        self._client = new_client(settings, client_id or f"telecare-screens-{uuid.uuid4().hex[:8]}")
        self._connected = threading.Event()
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = lambda *_: self._connected.clear()
        self.sent = 0
        self.undeliverable = 0

    def _on_connect(self, _c: paho.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            log.error("broker refused the screen sender: %s", reason)
            return
        self._connected.set()

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    def run(self, stop: threading.Event) -> None:
        """Send until `stop` is set; a stop waits at most for the PUBACKs in flight."""
        self._client.connect_async(self._settings.mqtt_host or "127.0.0.1",
                                   self._settings.mqtt_port, keepalive=30)
        self._client.loop_start()
        try:
            serve_outbox(self._settings.database_dsn(), "screen sender", self._serve, stop)
        finally:
            self._client.disconnect()
            self._client.loop_stop()
            log.info("screen sender stopped: %d sent, %d undeliverable", self.sent,
                     self.undeliverable)

    def _serve(self, conn: psycopg.Connection[Any], stop: threading.Event) -> None:
        while not stop.is_set():
            if not self._connected.is_set():
                stop.wait(0.1)  # nothing can be sent; the outbox keeps it
                continue
            if self.send_once(conn) < self._batch:
                self._wait(conn, stop)

    def send_once(self, conn: psycopg.Connection[Any]) -> int:
        """One batch: claim unsent messages, publish, mark sent those the broker acknowledged;
        returns how many were claimed."""
        with conn.transaction():
            rows = repo.claim_unsent_screen_messages(conn, self._clock(), self._batch)
            in_flight: list[tuple[int, paho.MQTTMessageInfo]] = []
            for row in rows:
                info = self._publish(conn, row)
                if info is not None:
                    in_flight.append((row["id"], info))
            acked = self._acknowledged(in_flight)
            if acked:
                repo.mark_screen_sent(conn, acked, self._clock())
        self.sent += len(acked)
        if len(acked) < len(in_flight):
            log.warning("screen sender: %d of %d messages not acknowledged by the broker; "
                        "resent later", len(in_flight) - len(acked), len(in_flight))
        return len(rows)

    def _publish(self, conn: psycopg.Connection[Any], row: dict[str, Any]
                 ) -> paho.MQTTMessageInfo | None:
        if row["device_id"] is None:
            repo.mark_screen_undeliverable(conn, row["id"], NO_HOME_SCREEN)
            self.undeliverable += 1
            log.info("screen message %d: citizen has no home screen", row["id"])
            return None
        try:
            command = screen_command(row)
        except ValidationError:
            repo.mark_screen_undeliverable(conn, row["id"], INVALID_BODY)
            self.undeliverable += 1
            log.error("screen message %d: body not sendable under protocol v1", row["id"])
            return None
        return self._client.publish(
            topic(self._settings.topic_root, row["device_id"], COMMANDS),
            command.model_dump_json(exclude_none=True), qos=1)

    def _acknowledged(self, in_flight: list[tuple[int, paho.MQTTMessageInfo]]) -> list[int]:
        """The ids whose PUBACK arrived within the timeout (all share one deadline)."""
        deadline = time.monotonic() + self._puback_timeout_s
        acked = []
        for message_id, info in in_flight:
            left = max(0.0, deadline - time.monotonic())
            try:
                info.wait_for_publish(left)
            except (RuntimeError, ValueError):
                continue  # not queued (no connection) or the queue was full: sent again later
            if info.is_published():
                acked.append(message_id)
        return acked

    def _wait(self, conn: psycopg.Connection[Any], stop: threading.Event) -> None:
        """Until an alert change is committed (screen messages are written with one) or
        `poll_s`, in slices short enough to see a stop."""
        deadline = time.monotonic() + self._poll_s
        while not stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            for _ in conn.notifies(timeout=min(left, STOP_SLICE_S), stop_after=1):
                return
