"""The ingest worker: paho receives, one writer thread batches, commits, then acknowledges.

Threads: paho's network thread only stamps and enqueues each message (the MQTT client is the
bottleneck, so it does nothing else); the writer thread decodes, writes one transaction per
batch, and only after COMMIT sends the PUBACKs and the application acks. The queue never drops:
the broker may have at most Receive Maximum messages un-acknowledged in flight to us, and a
full queue blocks the network thread (TCP backpressure) rather than losing anything."""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import paho.mqtt.client as paho
import psycopg
from paho.mqtt.reasoncodes import ReasonCode

from core.clock import Clock, system_clock
from core.db import connect
from core.settings import Settings
from devices import dead_letters
from devices import repository as devices_repo
from ingest.decode import Inbound, dead_letter
from ingest.mqtt import connect_async, new_client
from ingest.pipeline import BatchOutcome, LastSeen, Limits, process_batch
from ingest.wire import CHANNELS, parse_topic, topic

log = logging.getLogger(__name__)

# Errors that say "the database is not there right now", not "this data is wrong".
TRANSIENT = (psycopg.OperationalError, psycopg.InterfaceError)
PARTITION_CHECK_EVERY_S = 6 * 3600


@dataclass(frozen=True, slots=True)
class Delivery:
    topic: str
    payload: bytes
    received: float  # time.time(): cheaper than a datetime on the network thread
    mid: int
    qos: int
    session: int  # which connection delivered it: a PUBACK is only valid on that one

    def inbound(self) -> Inbound:
        return Inbound(self.topic, self.payload, datetime.fromtimestamp(self.received, UTC))


@dataclass
class Counters:
    received: int = 0
    readings_stored: int = 0
    dead_letters: int = 0
    batches: int = 0
    db_retries: int = 0


class IngestWorker:
    """One ingest worker; run several with the same share group to spread the load."""

    def __init__(self, settings: Settings, clock: Clock = system_clock) -> None:
        self._settings = settings
        self._clock = clock
        self._limits = Limits(
            topic_root=settings.topic_root,
            max_payload_bytes=settings.max_payload_bytes,
            late_after=timedelta(seconds=settings.late_after_s),
            max_clock_ahead=timedelta(seconds=settings.max_clock_ahead_s),
        )
        self._queue: queue.Queue[Delivery] = queue.Queue(maxsize=2 * settings.receive_maximum)
        self._session = 0
        self._connected = threading.Event()
        self._conn: psycopg.Connection[Any] | None = None
        self._partitions_checked = 0.0
        self._last_seen = LastSeen()
        self.counters = Counters()
        self._client = new_client(settings, settings.ingest_client_id, manual_ack=True)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._client.on_subscribe = self._on_subscribe

    # --- paho's network thread: keep it short -------------------------------------------

    def _on_connect(self, client: paho.Client, _u: Any, _f: Any, reason: ReasonCode,
                    _p: Any) -> None:
        if reason.is_failure:
            log.error("broker refused the connection: %s", reason)
            return
        self._session += 1
        group, root = self._settings.share_group, self._settings.topic_root
        prefix = f"$share/{group}/" if group else ""
        client.subscribe([(prefix + topic(root, "+", channel), 1) for channel in CHANNELS])

    def _on_subscribe(self, _c: paho.Client, _u: Any, _m: int, reasons: list[ReasonCode],
                      _p: Any) -> None:
        if any(reason.is_failure for reason in reasons):
            log.error("the broker refused a subscription: %s", reasons)
            return
        self._connected.set()
        log.info("connected to the broker and subscribed (session %d)", self._session)

    def _on_disconnect(self, _c: paho.Client, _u: Any, _f: Any, reason: ReasonCode,
                       _p: Any) -> None:
        self._connected.clear()
        log.warning("disconnected from the broker: %s", reason)

    def _on_message(self, _c: paho.Client, _u: Any, msg: paho.MQTTMessage) -> None:
        self._queue.put(Delivery(msg.topic, bytes(msg.payload), time.time(), msg.mid, msg.qos,
                                 self._session))

    # --- the writer thread ----------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Consume until `stop` is set; then finish what was received and disconnect."""
        connect_async(self._client, self._settings,
                      receive_maximum=self._settings.receive_maximum)
        self._client.loop_start()
        try:
            while not stop.is_set() or not self._queue.empty():
                self._maintain_partitions()
                batch = self._next_batch(stop)
                if not batch:
                    continue
                outcome = self._store(batch, stop)
                if outcome is None:
                    break  # stopping during an outage: unacknowledged, so the broker redelivers
                self._acknowledge(batch, outcome)
        finally:
            self._client.disconnect()
            self._client.loop_stop()
            if self._conn is not None:
                self._conn.close()
            log.info("ingest stopped: %s", self.counters)

    def wait_connected(self, timeout: float) -> bool:
        """True once connected and subscribed (for tests and the demo)."""
        return self._connected.wait(timeout)

    def _next_batch(self, stop: threading.Event) -> list[Delivery]:
        try:
            first = self._queue.get(timeout=0.2)
        except queue.Empty:
            return []
        batch = [first]
        deadline = time.monotonic() + self._settings.batch_wait_ms / 1000
        while len(batch) < self._settings.batch_max:
            try:
                batch.append(self._queue.get_nowait())
            except queue.Empty:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or stop.is_set():
                    break
                try:
                    batch.append(self._queue.get(timeout=remaining))
                except queue.Empty:
                    break
        self.counters.received += len(batch)
        return batch

    def _store(self, batch: list[Delivery], stop: threading.Event) -> BatchOutcome | None:
        """Commit the batch, retrying with back-off while the database is unavailable."""
        delay = 0.2
        while True:
            try:
                return self._commit([d.inbound() for d in batch])
            except TRANSIENT as exc:
                self._drop_connection()
                self.counters.db_retries += 1
                log.warning("database unavailable (%s); retrying %d messages in %.1fs",
                            type(exc).__name__, len(batch), delay)
            except psycopg.Error as exc:
                # The data, not the database: find the culprit so the rest is stored. (The
                # error's detail can quote a reading, so only its class and code are logged.)
                log.error("batch of %d rejected by the database (%s %s); isolating", len(batch),
                          type(exc).__name__, exc.sqlstate)
                try:
                    return self._commit_one_by_one(batch)
                except psycopg.Error as again:
                    # Even a dead letter could not be written: hold everything and retry.
                    log.error("could not isolate the rejected message (%s %s); retrying",
                              type(again).__name__, again.sqlstate)
                    self._drop_connection()
                    self.counters.db_retries += 1
            if stop.wait(delay):
                return None
            delay = min(delay * 2, 10.0)

    def _commit(self, inbound: list[Inbound]) -> BatchOutcome:
        conn = self._connection()
        with conn.transaction():
            return process_batch(conn, inbound, self._limits, self._last_seen)

    def _commit_one_by_one(self, batch: list[Delivery]) -> BatchOutcome:
        total = BatchOutcome()
        for delivery in batch:
            try:
                outcome = self._commit([delivery.inbound()])
            except TRANSIENT:
                raise
            except psycopg.Error as exc:
                self._drop_connection()
                route = parse_topic(self._settings.topic_root, delivery.topic)
                letter = dead_letter(delivery.inbound(), "storage_rejected",
                                     f"{type(exc).__name__}: {exc}",
                                     device_id=route[0] if route else None)
                conn = self._connection()
                with conn.transaction():
                    dead_letters.insert_dead_letters(conn, [letter])
                total.dead_letters += 1
                continue
            total.add(outcome)
        return total

    def _acknowledge(self, batch: list[Delivery], outcome: BatchOutcome) -> None:
        """After COMMIT: PUBACK to the broker, then the application ack to each device."""
        session = self._session
        for delivery in batch:
            # A PUBACK on a newer connection could acknowledge a different message that reused
            # the packet id; the broker redelivers these instead, and they are stored once.
            if delivery.session == session and delivery.qos > 0:
                self._client.ack(delivery.mid, delivery.qos)
        # QoS 0: a lost application ack costs one resend by the device, which is stored once
        # and acknowledged again; QoS 1 would double the packets this thread must handle.
        for device_id, ack in outcome.acks.items():
            self._client.publish(topic(self._settings.topic_root, device_id, "commands"),
                                 ack.model_dump_json(), qos=0)
        self.counters.batches += 1
        self.counters.readings_stored += outcome.readings_stored
        self.counters.dead_letters += outcome.dead_letters

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = connect(self._settings.database_dsn())
            self._conn.autocommit = True  # transactions are explicit: conn.transaction()
            devices_repo.prepare_reading_stage(self._conn)
        return self._conn

    def _drop_connection(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._conn = None

    def _maintain_partitions(self) -> None:
        """Keep monthly partitions ahead of time (plain PostgreSQL); retried on the next loop."""
        if time.monotonic() - self._partitions_checked < PARTITION_CHECK_EVERY_S:
            return
        now = self._clock()
        try:
            created = devices_repo.ensure_partitions(self._connection(),
                                                     now - timedelta(days=31),
                                                     now + timedelta(days=92))
        except TRANSIENT:
            self._drop_connection()
            return
        self._partitions_checked = time.monotonic()
        if created:
            log.info("created %d reading partitions", created)
