"""The ingest worker: paho receives, one writer thread batches, commits, then acknowledges.

Threads: paho's network thread only stamps each message and offers it to the inbox (the MQTT
client is the bottleneck, so it does nothing else, and it never blocks: it must keep answering
the broker whatever the database does). The writer thread decodes, writes one transaction per
batch, and only after COMMIT sends the PUBACKs and the application acks.

Nothing is lost when the inbox is full: a QoS 0 message is shed and counted (at most once is
what QoS 0 means), a QoS > 0 message is left without PUBACK. The broker never redelivers on the
same connection, so once the writer has drained what it holds, the worker reconnects and the
resumed session brings the deferred messages again."""

from __future__ import annotations

import ctypes
import logging
import threading
import time
import traceback
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import paho.mqtt.client as paho
import psycopg
from paho.mqtt.reasoncodes import ReasonCode
from psycopg.pq import TransactionStatus

from core.db import cancel_when_stop_overruns, connect, describe_error
from core.settings import Settings
from devices import dead_letters
from devices import repository as devices_repo
from devices.dead_letters import DeadLetter
from ingest.decode import Decoded, dead_letter, decode
from ingest.inbox import Delivery, Inbox
from ingest.mqtt import connect_async, new_client, subscriptions
from ingest.pipeline import BatchOutcome, LastSeen, Limits, process_batch
from ingest.wire import AckCommandV1, Rejected, is_downlink, parse_topic, topic

log = logging.getLogger(__name__)

# SQLSTATE classes that say "this data is wrong": data exception, integrity constraint
# violation, program limit exceeded (a value too large for an index row, say). Every other
# class (42 a bad deploy or permission, 25 a read-only replica, 08 connection, 40 rollback,
# 53/57/58/XX the server) says the database cannot store anything now: hold and retry.
DATA_ERROR_CLASSES = frozenset({"22", "23", "54"})
# Until the inbox has been empty this long while connected, the worker is catching up after
# a disruption: a message in hand may have waited since the disruption began.
CATCH_UP_S = 1.0
NETWORK_STOP_TIMEOUT_S = 5.0
M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter
LARGE_BUFFER_BYTES = 1024 * 1024


def is_data_error(exc: psycopg.Error) -> bool:
    """Whether the database refused these data (isolate the message) rather than being unable
    to store anything (back off, acknowledge nothing)."""
    if exc.sqlstate is not None:
        return exc.sqlstate[:2] in DATA_ERROR_CLASSES
    # Refused by psycopg before the server saw it (a value it cannot send, e.g. NUL in text).
    return isinstance(exc, psycopg.DataError | psycopg.IntegrityError)


def return_large_buffers_to_the_os() -> None:
    """glibc raises its mmap threshold each time it frees a large mmapped buffer, so the next
    ones come from the heap and stay in the process for good: one 11 MB message over MQTT 3.1.1
    (no Maximum Packet Size there; paho reads it whole before we can refuse it) kept the worker
    11-21 MB larger. A fixed threshold keeps every buffer over 1 MiB mmapped and returned when
    freed; payloads we keep are at most 256 KiB, so normal traffic is not affected."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return  # not glibc: nothing to tune
    mallopt(M_MMAP_THRESHOLD, LARGE_BUFFER_BYTES)


class _Outage(Exception):
    """The database cannot store anything now (unreachable, read-only, a bad deploy)."""


class _Refused(Exception):
    """These messages cannot be stored as they are: find which and dead-letter them."""

    def __init__(self, reason: str, cause: BaseException) -> None:
        super().__init__(reason)
        self.reason = reason
        self.cause = cause


@dataclass
class Counters:
    received: int = 0
    readings_stored: int = 0
    dead_letters: int = 0
    batches: int = 0  # taken from the inbox
    commits: int = 0  # transactions committed
    rollbacks: int = 0  # transactions the database or the pipeline refused
    db_retries: int = 0
    shed: int = 0  # QoS 0 messages dropped: the inbox was full
    deferred: int = 0  # QoS > 0 messages left un-acknowledged for the broker to redeliver
    purged: int = 0  # queued deliveries of a dead connection, dropped (redelivered instead)
    reconnects: int = 0  # forced, so the broker redelivers what was deferred


class Transit:
    """How long a message in hand may have waited for Telecare, at the broker or in the worker:
    since the current disruption began (a disconnection, a database outage, deferred
    messages), and at start for as long as the broker keeps a session (the history is
    unknown); a small bound once the worker keeps up again."""

    def __init__(self, settings: Settings, started: float) -> None:
        self._steady = timedelta(seconds=2 * settings.batch_wait_ms / 1000 + 5)
        self._unknown_history = timedelta(seconds=settings.session_expiry_s)
        self._since: float | None = started
        self._history_known = False
        self._calm_since: float | None = None
        self._lock = threading.Lock()

    def disrupted(self, at: float) -> None:
        with self._lock:
            self._since = at if self._since is None else min(self._since, at)
            self._calm_since = None

    def observe(self, keeping_up: bool, at: float) -> None:
        """Called by the writer between batches; `keeping_up`: connected with an empty inbox."""
        with self._lock:
            if not keeping_up or self._since is None:
                self._calm_since = None
            elif self._calm_since is None:
                self._calm_since = at
            elif at - self._calm_since >= CATCH_UP_S:
                self._since, self._calm_since, self._history_known = None, None, True

    def bound(self, at: float) -> timedelta:
        with self._lock:
            if self._since is None:
                return self._steady
            waited = timedelta(seconds=max(0.0, at - self._since)) + self._steady
            return waited if self._history_known else waited + self._unknown_history


class IngestWorker:
    """One ingest worker; run several with the same share group to spread the load."""

    def __init__(self, settings: Settings) -> None:
        settings = settings.for_process("ingest")
        self._settings = settings
        self._limits = Limits(
            topic_root=settings.topic_root,
            max_payload_bytes=settings.max_payload_bytes,
            late_after=timedelta(seconds=settings.late_after_s),
            max_clock_ahead=timedelta(seconds=settings.max_clock_ahead_s),
            max_transit=timedelta(seconds=settings.session_expiry_s),
        )
        # Receive Maximum bounds QoS > 0 in flight on one connection (MQTT 5), but loosely:
        # draining a 30,000-message backlog, Mosquitto 2.0.11 had up to 2,818 un-acknowledged
        # with a maximum of 1,000, and a count bound of 2x made the worker defer and reconnect
        # for 5,709 redeliveries in one drain. The count bound has that margin, plus QoS 0 (not
        # bounded by it) and stragglers of the previous connection; the byte bound is the one
        # that holds memory.
        self._inbox = Inbox(max_count=10 * settings.receive_maximum,
                            max_bytes=settings.inbox_max_bytes)
        self._transit = Transit(settings, time.time())
        # Which connection is up: a PUBACK is valid only on the connection that delivered the
        # message. Guarded by _ack_lock, so no PUBACK slips onto a newer connection.
        self._ack_lock = threading.Lock()
        self._session = 0
        self._live = False
        # The session in which a QoS > 0 delivery was left un-acked, and the one in which a
        # QoS 0 delivery was shed (logged once); sessions count from 1, so none before the
        # first connection (else a slow CONNACK would look like deferring and reconnect).
        self._deferring = -1
        self._shedding = -1
        self._closing = False
        self._stop_deadline = 0.0
        self.subscribed_session = 0
        self._connected = threading.Event()
        self._finished = threading.Event()
        self._conn: psycopg.Connection[Any] | None = None
        self._last_seen = LastSeen()
        self.counters = Counters()
        self._client = new_client(settings, settings.ingest_client_id, manual_ack=True)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._client.on_subscribe = self._on_subscribe

    # --- paho's network thread: keep it short, never block -------------------------------

    def _on_connect(self, client: paho.Client, _u: Any, _f: Any, reason: ReasonCode,
                    _p: Any) -> None:
        if reason.is_failure:
            log.error("broker refused the connection: %s", reason)
            return
        with self._ack_lock:
            self._session += 1
            self._live = True
        self.counters.purged += self._inbox.purge_before(self._session)
        client.subscribe(subscriptions(self._settings))

    def _on_subscribe(self, _c: paho.Client, _u: Any, _m: int, reasons: list[ReasonCode],
                      _p: Any) -> None:
        if any(reason.is_failure for reason in reasons):
            log.error("the broker refused a subscription: %s", reasons)
            return
        self.subscribed_session = self._session
        self._connected.set()
        log.info("connected to the broker and subscribed (session %d)", self._session)

    def _on_disconnect(self, _c: paho.Client, _u: Any, _f: Any, reason: ReasonCode,
                       _p: Any) -> None:
        with self._ack_lock:
            self._live = False
        self._connected.clear()
        self._transit.disrupted(time.time())
        log.warning("disconnected from the broker: %s", reason)

    def _on_message(self, _c: paho.Client, _u: Any, msg: paho.MQTTMessage) -> None:
        name = msg.topic
        if is_downlink(self._settings.topic_root, name):
            return  # our own application acks: the subscription to the whole root sees them
        session = self._session
        if msg.qos > 0 and (self._closing or self._deferring == session):
            # Once one is deferred, defer the rest of this connection too: the reconnect
            # brings them all again, in order.
            self.counters.deferred += 1
            return
        size = len(msg.payload)
        # Too large: keep only the size (decode dead-letters it), never a copy. (bytes() of
        # the bytes paho hands over is the same object, no copy.)
        payload = bytes(msg.payload) if size <= self._settings.max_payload_bytes else b""
        delivery = Delivery(name, payload, size, time.time(), msg.mid, msg.qos, msg.retain,
                            session)
        if not self._closing and self._inbox.offer(delivery):
            return
        if msg.qos == 0:
            self.counters.shed += 1
            if self._shedding != session:
                self._shedding = session
                log.warning("inbox full: shedding QoS 0 messages (session %d)", session)
            return
        self.counters.deferred += 1
        self._deferring = session
        self._transit.disrupted(delivery.received)
        log.warning("inbox full (%d messages, %d bytes): deferring QoS 1 messages of session %d "
                    "until it drains", len(self._inbox), self._inbox.bytes, session)

    # --- the writer thread ----------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Consume until `stop` is set; then finish what is in hand (within the stop timeout),
        and disconnect. What is not committed by then is not acknowledged: redelivered."""
        return_large_buffers_to_the_os()
        self._start_network()
        threading.Thread(target=cancel_when_stop_overruns, name="ingest-stop-watch", daemon=True,
                         args=(stop, self._finished, self._settings.stop_timeout_s,
                               lambda: self._conn)).start()
        try:
            while not self._done(stop):
                batch = self._next_batch(stop)
                if batch and not self._store(batch, stop):
                    break  # stopping during an outage: unacknowledged, so the broker redelivers
                self._after_batch()
        finally:
            self._finished.set()
            self._client.disconnect()
            self._stop_network()
            if self._conn is not None:
                self._conn.close()
            log.info("ingest stopped: %s", self.counters)

    def wait_connected(self, timeout: float) -> bool:
        """True once connected and subscribed (for tests and the demo)."""
        return self._connected.wait(timeout)

    @property
    def inbox(self) -> Inbox:
        return self._inbox

    def _start_network(self) -> None:
        connect_async(self._client, self._settings,
                      receive_maximum=self._settings.receive_maximum)
        self._client.loop_start()

    def _stop_network(self, timeout: float | None = NETWORK_STOP_TIMEOUT_S) -> None:
        """Stop paho's thread, waiting at most `timeout` seconds (None: until it has)."""
        # loop_stop joins the network thread without a timeout; it cannot block for ever
        # (on_message never blocks) but a peer that stops reading holds it up to the keepalive.
        stopper = threading.Thread(target=self._client.loop_stop, daemon=True)
        stopper.start()
        stopper.join(timeout)
        if stopper.is_alive():
            log.error("the MQTT network thread did not stop within %.0f s", timeout)

    def _done(self, stop: threading.Event) -> bool:
        if not stop.is_set():
            return False
        if not self._closing:
            # Take nothing new; what is in the inbox is stored while the stop timeout lasts.
            self._closing = True
            self._stop_deadline = time.monotonic() + self._settings.stop_timeout_s
            log.info("stopping: storing the %d messages in hand", len(self._inbox))
        return len(self._inbox) == 0 or time.monotonic() >= self._stop_deadline

    def _next_batch(self, stop: threading.Event) -> list[Delivery]:
        linger = 0.0 if stop.is_set() else self._settings.batch_wait_ms / 1000
        batch = self._inbox.take_batch(self._settings.batch_max, timeout=0.2, linger=linger)
        if batch:
            self.counters.received += len(batch)
            self.counters.batches += 1
        return batch

    def _after_batch(self) -> None:
        self._transit.observe(self._connected.is_set() and len(self._inbox) == 0, time.time())
        session = self._session
        if (self._deferring == session and not self._closing
                and not self._inbox.holds_session(session)):
            self._reconnect()

    def _reconnect(self) -> None:
        """Everything taken from this connection is settled: reconnect, so that the broker
        delivers what we deferred (MQTT 5 forbids redelivery on the same connection)."""
        log.info("reconnecting so the broker redelivers %d deferred messages",
                 self.counters.deferred)
        self.counters.reconnects += 1
        self._client.disconnect()
        self._stop_network(timeout=None)  # a second network thread would share paho's state
        with self._ack_lock:
            self._live = False
        self._start_network()

    # --- storing: commit, or isolate what cannot be stored ---------------------------------

    def _store(self, batch: list[Delivery], stop: threading.Event) -> bool:
        """Commit and acknowledge the whole batch, retrying with back-off while the database
        cannot store anything; False when asked to stop before that."""
        pending = batch
        delay = 0.2
        while True:
            settled: set[int] = set()
            try:
                self._settle(pending, settled)
                return True
            except _Outage as outage:
                self._drop_connection()
                self.counters.db_retries += 1
                self._transit.disrupted(time.time())
                pending = [d for d in pending if id(d) not in settled]
                log.warning("database cannot store (%s); retrying %d messages in %.1f s",
                            describe_error(outage.__cause__ or outage), len(pending), delay)
            if stop.wait(delay):
                return False
            delay = min(delay * 2, 10.0)

    def _settle(self, batch: list[Delivery], settled: set[int]) -> None:
        """Commit the batch; if it is refused, bisect it: commit the halves the database takes
        and dead-letter only single messages it refuses (O(k log n) commits for k of them)."""
        letters: list[tuple[Delivery, DeadLetter, _Refused]] = []
        if not self._try(batch, letters, settled):
            log.error("batch of %d refused; %d message(s) isolated (%s)", len(batch),
                      len(letters), ", ".join(sorted({describe_error(r.cause) for *_, r in letters})))
        self._commit_letters(letters, settled)

    def _try(self, part: list[Delivery], letters: list[tuple[Delivery, DeadLetter, _Refused]],
             settled: set[int]) -> bool:
        """True when `part` committed whole; else its refused messages are in `letters`."""
        try:
            self._commit_and_ack(part, settled)
            return True
        except _Refused as refused:
            if len(part) == 1:
                letters.append(self._letter(part[0], refused))
            else:
                self._split(part, letters, settled)
            return False

    def _split(self, part: list[Delivery], letters: list[tuple[Delivery, DeadLetter, _Refused]],
               settled: set[int]) -> None:
        """`part` holds a refused message. When its first half commits whole, the refusal is
        in the second, which is split without being tried whole again."""
        middle = len(part) // 2
        left, right = part[:middle], part[middle:]
        if self._try(left, letters, settled) and len(right) > 1:
            self._split(right, letters, settled)
        else:
            self._try(right, letters, settled)

    def _commit_and_ack(self, part: list[Delivery], settled: set[int]) -> None:
        outcome = self._commit(part)
        self._acknowledge(part, outcome)
        settled.update(id(d) for d in part)

    def _commit(self, part: list[Delivery]) -> BatchOutcome:
        """One transaction for `part`; _Refused when these data cannot be stored, _Outage when
        nothing can be."""
        conn = self._connection()
        try:
            with conn.transaction():
                outcome = process_batch(conn, [d.inbound() for d in part], self._limits,
                                        self._last_seen,
                                        max_transit=self._transit.bound(time.time()))
        except psycopg.Error as exc:
            self.counters.rollbacks += 1
            if is_data_error(exc):
                raise _Refused("storage_rejected", exc) from exc
            raise _Outage() from exc
        except Exception as exc:
            # Not the database: a message the code cannot handle. It must not kill the worker
            # (every worker of the group would crash-loop on its redelivery). The traceback
            # without its message text: that may quote a value.
            self.counters.rollbacks += 1
            log.error("processing failed (%s) at\n%s", type(exc).__name__,
                      "".join(traceback.format_tb(exc.__traceback__)))
            if conn.info.transaction_status != TransactionStatus.IDLE:
                self._drop_connection()
            raise _Refused("processing_failed", exc) from exc
        self.counters.commits += 1
        self._last_seen.mark(outcome.last_seen)  # only now: a rollback must write it again
        return outcome

    def _letter(self, delivery: Delivery, refused: _Refused) -> tuple[Delivery, DeadLetter,
                                                                       _Refused]:
        route = parse_topic(self._settings.topic_root, delivery.topic)
        letter = dead_letter(delivery.inbound(), refused.reason, describe_error(refused.cause),
                             device_id=route[0] if route else None)
        return delivery, letter, refused

    def _commit_letters(self, letters: list[tuple[Delivery, DeadLetter, _Refused]],
                        settled: set[int]) -> None:
        """Keep the refused messages as dead letters, in one transaction, then acknowledge them
        and tell each device its items are refused (else it would resend them for ever)."""
        if not letters:
            return
        conn = self._connection()
        try:
            with conn.transaction():
                dead_letters.insert_dead_letters(conn, [letter for _, letter, _ in letters])
        except Exception as exc:
            # Even the dead letter cannot be written: hold everything and retry.
            self.counters.rollbacks += 1
            raise _Outage() from exc
        self.counters.commits += 1
        outcome = BatchOutcome(dead_letters=len(letters))
        for delivery, _, refused in letters:
            outcome.add(self._refusal_ack(delivery, refused.reason))
        self._acknowledge([d for d, _, _ in letters], outcome)
        settled.update(id(d) for d, _, _ in letters)

    def _refusal_ack(self, delivery: Delivery, reason: str) -> BatchOutcome:
        try:
            decoded = decode(delivery.inbound(), topic_root=self._settings.topic_root,
                             max_payload_bytes=self._settings.max_payload_bytes)
        except Exception:  # noqa: BLE001 (what could not be processed may not decode either)
            return BatchOutcome()
        if not isinstance(decoded, Decoded) or not decoded.items:
            return BatchOutcome()
        rejected = [Rejected(seq=item.seq, reason=reason) for _, item in decoded.items]
        return BatchOutcome(acks={decoded.device_id: AckCommandV1(stored=[], rejected=rejected)})

    def _acknowledge(self, part: list[Delivery], outcome: BatchOutcome) -> None:
        """After COMMIT: PUBACK to the broker, then the application ack to each device."""
        with self._ack_lock:
            # A delivery of an older connection is not acknowledged: the broker redelivers it
            # on this one (stored once), and its packet id may now name another message.
            if self._live:
                for delivery in part:
                    if delivery.qos > 0 and delivery.session == self._session:
                        self._client.ack(delivery.mid, delivery.qos)
        # QoS 0: a lost application ack costs one resend by the device, which is stored once
        # and acknowledged again; QoS 1 would double the packets this thread must handle.
        for device_id, ack in outcome.acks.items():
            self._client.publish(topic(self._settings.topic_root, device_id, "commands"),
                                 ack.model_dump_json(), qos=0)
        self.counters.readings_stored += outcome.readings_stored
        self.counters.dead_letters += outcome.dead_letters

    def _connection(self) -> psycopg.Connection[Any]:
        """The writer's connection; any failure to get one is an outage, never the data's."""
        if self._conn is None or self._conn.closed:
            try:
                self._conn = connect(self._settings.database_dsn())
                self._conn.autocommit = True  # transactions are explicit: conn.transaction()
                devices_repo.prepare_reading_stage(self._conn)
            except psycopg.Error as exc:
                self._drop_connection()
                raise _Outage() from exc
        return self._conn

    def _drop_connection(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._conn = None
