"""The ingest worker on the real broker and database.

Some tests put an MqttTap between the worker and the broker: a TCP proxy that sees every
PUBLISH the broker delivers and every PUBACK the worker sends, per connection, and can cut a
connection. Database faults are real: a lock held by the test, a role whose privileges the test
revokes, a trigger that raises a chosen SQLSTATE."""

from __future__ import annotations

import hashlib
import json
import math
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import paho.mqtt.client as paho
import psycopg
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as examples
from hypothesis import strategies as st
from paho.mqtt.enums import CallbackAPIVersion
from psycopg import sql
from psycopg.conninfo import make_conninfo
from pydantic import SecretStr

from core.roles import ROLES
from core.settings import Settings
from ingest import pipeline
from ingest.worker import IngestWorker, Transit
from tests.conftest import Publisher, count, reading_message, running_worker, wait_for
from tests.ingest.test_decode import CORPUS

MakeDevice = Callable[..., tuple[str, UUID]]
CONNACK, PUBLISH, PUBACK = 2, 3, 4


# --- the tap: what crosses the wire between worker and broker -------------------------------

@dataclass
class Delivered:
    mid: int
    topic: str
    payload: bytes
    dup: bool


@dataclass
class TapConnection:
    index: int
    delivered: list[Delivered] = field(default_factory=list)
    pubacks: list[int] = field(default_factory=list)
    unacked: dict[int, Delivered] = field(default_factory=dict)
    sockets: list[socket.socket] = field(default_factory=list)


class MqttTap:
    """A proxy on a free port in front of the broker. It records each connection's PUBLISH
    packets (broker to worker) and PUBACKs (worker to broker); a PUBACK for a packet id not
    delivered, or already acknowledged, on the same connection is a violation. `on_puback` runs
    before the PUBACK is passed on, so it sees the state the PUBACK claims."""

    def __init__(self, broker: tuple[str, int], *, v5: bool = True,
                 on_puback: Callable[[Delivered], None] | None = None,
                 connack_delay_s: float = 0.0) -> None:
        self._broker, self._v5, self._on_puback = broker, v5, on_puback
        self._connack_delay_s = connack_delay_s  # a slow broker (or network) at connect
        self.connections: list[TapConnection] = []
        self.violations: list[str] = []
        self._lock = threading.Lock()
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def pubacks(self) -> int:
        with self._lock:
            return sum(len(c.pubacks) for c in self.connections)

    def cut(self) -> None:
        """Close the current connection on both sides, as a network fault would."""
        with self._lock:
            for sock in self.connections[-1].sockets:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()

    def close(self) -> None:
        self._server.close()
        for connection in self.connections:
            for sock in connection.sockets:
                sock.close()

    def _accept(self) -> None:
        while True:
            try:
                worker, _ = self._server.accept()
            except OSError:
                return
            broker = socket.create_connection(self._broker)
            with self._lock:
                connection = TapConnection(len(self.connections) + 1, sockets=[worker, broker])
                self.connections.append(connection)
            threading.Thread(target=self._pump, args=(broker, worker, connection, True),
                             daemon=True).start()
            threading.Thread(target=self._pump, args=(worker, broker, connection, False),
                             daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, connection: TapConnection,
              from_broker: bool) -> None:
        buffer = bytearray()
        while True:
            try:
                data = source.recv(65536)
            except OSError:
                data = b""
            if not data:
                for sock in (source, sink):
                    sock.close()
                return
            buffer += data
            for first, body in _packets(buffer):
                if from_broker and first >> 4 == CONNACK:
                    time.sleep(self._connack_delay_s)
                if from_broker and first >> 4 == PUBLISH:
                    self._delivered(connection, first, body)
                elif not from_broker and first >> 4 == PUBACK:
                    self._puback(connection, int.from_bytes(body[:2], "big"))
            try:
                sink.sendall(data)
            except OSError:
                return

    def _delivered(self, connection: TapConnection, first: int, body: bytes) -> None:
        qos = (first >> 1) & 3
        length = int.from_bytes(body[:2], "big")
        name = body[2:2 + length].decode()
        position = 2 + length
        if qos == 0:
            return
        mid = int.from_bytes(body[position:position + 2], "big")
        position += 2
        if self._v5:
            props, used = _varint(body, position)
            position += used + props
        packet = Delivered(mid, name, body[position:], bool(first & 0x08))
        with self._lock:
            connection.delivered.append(packet)
            connection.unacked[mid] = packet

    def _puback(self, connection: TapConnection, mid: int) -> None:
        with self._lock:
            connection.pubacks.append(mid)
            packet = connection.unacked.pop(mid, None)
            if packet is None:
                self.violations.append(f"PUBACK {mid} on connection {connection.index}, which "
                                       "has no un-acknowledged PUBLISH with that packet id")
        if packet is not None and self._on_puback is not None:
            self._on_puback(packet)


def _varint(data: bytes | bytearray, position: int) -> tuple[int, int]:
    """(value, bytes used) of an MQTT variable byte integer at `position`."""
    value, used = 0, 0
    while True:
        if position + used >= len(data):
            raise IndexError("incomplete")
        byte = data[position + used]
        value += (byte & 0x7F) << (7 * used)
        used += 1
        if not byte & 0x80:
            return value, used


def _packets(buffer: bytearray) -> Iterator[tuple[int, bytes]]:
    """Complete packets at the start of `buffer` (consumed), as (first byte, body)."""
    while len(buffer) >= 2:
        try:
            length, used = _varint(buffer, 1)
        except IndexError:
            return
        end = 1 + used + length
        if len(buffer) < end:
            return
        yield buffer[0], bytes(buffer[1 + used:end])
        del buffer[:end]


@contextmanager
def tapped(settings: Settings, **kwargs: Any) -> Iterator[tuple[MqttTap, Settings]]:
    """A tap in front of the test's broker, and settings that make a worker connect through it."""
    assert settings.mqtt_host is not None
    tap = MqttTap((settings.mqtt_host, settings.mqtt_port),
                  v5=settings.mqtt_protocol == "5", **kwargs)
    try:
        yield tap, settings.model_copy(update={"mqtt_host": "127.0.0.1", "mqtt_port": tap.port})
    finally:
        tap.close()


# --- database faults ------------------------------------------------------------------------

@contextmanager
def table_locked(database: str, table: str) -> Iterator[Callable[[], None]]:
    """Hold a SHARE lock on `table` (writes to it wait) until the yielded release is called."""
    holder = psycopg.connect(database)
    holder.execute(sql.SQL("LOCK TABLE {} IN SHARE MODE").format(sql.Identifier(table)))
    released = False

    def release() -> None:
        nonlocal released
        if not released:
            holder.commit()
            holder.close()
            released = True

    try:
        yield release
    finally:
        release()


def writer_waits_for_lock(conn: psycopg.Connection[Any]) -> bool:
    return count(conn, "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                 " AND wait_event_type = 'Lock'") > 0


@pytest.fixture
def worker_role(conn: psycopg.Connection[Any], database: str) -> Iterator[tuple[str, str]]:
    """A login that is a member of ingest's database role only, as in a deployment (not a
    superuser, so a revoked privilege bites); yields (login, dsn)."""
    role = f"ingest_{uuid.uuid4().hex[:8]}"
    ident = sql.Identifier(role)
    conn.execute(sql.SQL("CREATE ROLE {} LOGIN IN ROLE {}").format(
        ident, sql.Identifier(ROLES["ingest"])))
    try:
        yield role, make_conninfo(database, user=role)
    finally:
        conn.execute(sql.SQL("DROP OWNED BY {}").format(ident))
        conn.execute(sql.SQL("DROP ROLE {}").format(ident))


@contextmanager
def raising_trigger(conn: psycopg.Connection[Any], marker: str, sqlstate: str) -> Iterator[None]:
    """Events whose answer is `marker` make the database raise `sqlstate` (a deploy or a
    database the worker does not know about, in one controllable row)."""
    name = sql.Identifier(f"test_raise_{uuid.uuid4().hex[:8]}")
    conn.execute(sql.SQL(
        "CREATE FUNCTION {}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "IF NEW.data->>'answer' = {} THEN "
        "RAISE EXCEPTION 'a value the detail must not quote' USING ERRCODE = {}; END IF; "
        "RETURN NEW; END $$").format(name, sql.Literal(marker), sql.Literal(sqlstate)))
    conn.execute(sql.SQL("CREATE TRIGGER {} BEFORE INSERT ON device_events FOR EACH ROW "
                         "EXECUTE FUNCTION {}()").format(name, name))
    try:
        yield
    finally:
        conn.execute(sql.SQL("DROP TRIGGER {} ON device_events").format(name))
        conn.execute(sql.SQL("DROP FUNCTION {}()").format(name))


# --- messages -------------------------------------------------------------------------------

def answer_message(device_id: str, seq: int, answer: str) -> str:
    return json.dumps({"v": 1, "device_id": device_id, "events": [{
        "seq": seq, "measured_at": "2026-01-20T09:00:00+00:00", "type": "questionnaire_answer",
        "data": {"questionnaire": "daily", "question": "q1", "answer": answer}}]})


def bulky_answers(device_id: str, first_seq: int, count_: int = 60) -> str:
    """About 210 KB: a few of these fill a 1 MiB inbox without thousands of rows."""
    filler = {f"note{n}": "x" * 200 for n in range(13)}
    return json.dumps({"v": 1, "device_id": device_id, "events": [{
        "seq": seq, "measured_at": (datetime(2026, 1, 20, tzinfo=UTC)
                                    + timedelta(seconds=seq)).isoformat(),
        "type": "questionnaire_answer",
        "data": {"questionnaire": "daily", "question": "q1", "answer": "fine", **filler}}
        for seq in range(first_seq, first_seq + count_)]})


def acks_for(publisher: Publisher, device: str) -> list[dict[str, Any]]:
    return [json.loads(p) for t, p in list(publisher.commands) if f"/{device}/" in t]


def stored_events(conn: psycopg.Connection[Any], device: str) -> int:
    return count(conn, "SELECT count(DISTINCT seq) FROM device_events WHERE device_id = %s",
                 device)


def stored_readings(conn: psycopg.Connection[Any], device: str) -> int:
    return count(conn, "SELECT count(*) FROM readings WHERE device_id = %s", device)


def dead_letter_reasons(conn: psycopg.Connection[Any], device: str) -> list[tuple[str, str]]:
    return [(r, d) for r, d in conn.execute(
        "SELECT reason, detail FROM dead_letters WHERE device_id = %s ORDER BY id",
        (device,)).fetchall()]


# --- how long a message in hand may have waited (max_transit for the pipeline) -------------

def test_transit_is_unknown_at_start_then_small_once_the_worker_keeps_up(
        settings: Settings) -> None:
    transit = Transit(settings, started=1000.0)
    steady = timedelta(seconds=2 * settings.batch_wait_ms / 1000 + 5)
    expiry = timedelta(seconds=settings.session_expiry_s)
    assert transit.bound(1010.0) == expiry + timedelta(seconds=10) + steady  # history unknown
    transit.observe(True, 1010.0)
    transit.observe(True, 1010.5)
    assert transit.bound(1010.5) > expiry  # not yet a second of keeping up
    transit.observe(True, 1011.0)
    assert transit.bound(1011.0) == steady


def test_transit_after_a_disruption_counts_from_its_start_until_caught_up(
        settings: Settings) -> None:
    transit = Transit(settings, started=0.0)
    for at in (1.0, 2.0):
        transit.observe(True, at)
    steady = transit.bound(2.0)
    transit.disrupted(100.0)  # a disconnection, a database outage, deferred messages
    transit.disrupted(130.0)  # a second one inside the first: the earliest start counts
    assert transit.bound(160.0) == timedelta(seconds=60) + steady
    transit.observe(True, 160.0)
    transit.observe(False, 160.5)  # still behind: the inbox was not empty
    transit.observe(True, 161.0)
    assert transit.bound(161.9) == timedelta(seconds=61.9) + steady
    transit.observe(True, 162.0)
    assert transit.bound(162.0) == steady


# --- storing and acknowledging --------------------------------------------------------------

def test_published_readings_are_stored_and_acknowledged_to_the_device(
        worker: IngestWorker, publisher: Publisher, conn: psycopg.Connection[Any],
        make_device: MakeDevice) -> None:
    device, citizen = make_device()
    publisher.publish(device, "readings", reading_message(device, range(1, 11)))
    wait_for(lambda: bool(acks_for(publisher, device)), what="application ack")
    assert count(conn, "SELECT count(*) FROM readings WHERE device_id = %s AND citizen_id = %s",
                 device, citizen) == 30
    assert acks_for(publisher, device) == [
        {"v": 1, "type": "ack", "stored": list(range(1, 11)), "rejected": []}]


def test_qos0_readings_are_stored(worker: IngestWorker, publisher: Publisher,
                                  conn: psycopg.Connection[Any], make_device: MakeDevice) -> None:
    device, _ = make_device()
    for seq in range(1, 6):
        publisher.client.publish(f"{publisher.root}/v1/{device}/readings",
                                 reading_message(device, [seq]), qos=0)
    wait_for(lambda: stored_readings(conn, device) == 15, what="QoS 0 readings stored")


def test_a_corpus_of_malformed_payloads_is_dead_lettered_between_valid_messages(
        settings: Settings, publisher: Publisher, conn: psycopg.Connection[Any],
        make_device: MakeDevice) -> None:
    device, _ = make_device()
    # The corpus's size case is over the decode tests' 4 KiB limit.
    with running_worker(settings.model_copy(update={"max_payload_bytes": 4096})) as worker:
        for index, (bad, _reason) in enumerate(CORPUS):
            publisher.publish(device, "readings", reading_message(device, [index]))
            publisher.publish(device, "readings", bad.replace(b"bp-1", device.encode()))
        wait_for(lambda: count(conn, "SELECT count(*) FROM dead_letters WHERE device_id = %s",
                               device) >= len(CORPUS), what="dead letters")
        assert count(conn, "SELECT count(DISTINCT seq) FROM readings WHERE device_id = %s",
                     device) == len(CORPUS)
        assert worker.counters.dead_letters == len(CORPUS)


@given(payloads=st.lists(st.binary(max_size=200) | st.sampled_from([p for p, _ in CORPUS]),
                         min_size=1, max_size=8))
@examples(max_examples=15, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_any_bytes_through_the_broker_end_stored_or_dead_lettered(
        worker: IngestWorker, publisher: Publisher, conn: psycopg.Connection[Any],
        make_device: MakeDevice, payloads: list[bytes]) -> None:
    device, _ = make_device()
    topic = f"{publisher.root}/v1/{device}/readings"
    valid = reading_message(device, [1]).encode()
    for payload in [*payloads, valid]:
        publisher.publish(device, "readings", payload)

    def accounted(payload: bytes) -> bool:
        digest = hashlib.sha256(payload).digest()
        return payload == valid or count(
            conn, "SELECT count(*) FROM dead_letters WHERE topic = %s AND payload_sha256 = %s",
            topic, digest) > 0

    wait_for(lambda: count(conn, "SELECT count(*) FROM readings WHERE device_id = %s",
                           device) == 3, what="the valid message")
    wait_for(lambda: all(accounted(p) for p in payloads), what="every payload dead-lettered")


def test_misaddressed_messages_are_dead_lettered_and_the_downlink_is_not_ingested(
        worker: IngestWorker, publisher: Publisher, conn: psycopg.Connection[Any],
        make_device: MakeDevice) -> None:
    device, _ = make_device()
    root = publisher.root
    wrong = [f"{root}/v1/{device}/readings/extra", f"{root}/v2/{device}/readings",
             f"{root}/v1/{device}/reading", f"{root}/readings"]
    body = reading_message(device, [1])
    for name in wrong:
        publisher.client.publish(name, body, qos=1).wait_for_publish(10)
    # Looks like our own ack on the downlink: the worker must neither store nor count it.
    publisher.client.publish(f"{root}/v1/{device}/commands", body, qos=1).wait_for_publish(10)
    publisher.publish(device, "readings", reading_message(device, [2]))
    wait_for(lambda: stored_readings(conn, device) == 3, what="the well-addressed reading")
    wait_for(lambda: count(conn, "SELECT count(*) FROM dead_letters WHERE topic = ANY(%s) "
                           "AND reason = 'invalid_topic'", wrong) == len(wrong),
             what="an invalid_topic dead letter for each misaddressed message")
    assert count(conn, "SELECT count(*) FROM dead_letters WHERE topic LIKE %s",
                 f"%{device}/commands") == 0
    # Every message taken was one of those published uplink: not the downlink, not our acks.
    assert worker.counters.received == len(wrong) + 1


def test_ingest_speaks_mqtt_3_1_1_too(settings: Settings, publisher: Publisher,
                                      conn: psycopg.Connection[Any],
                                      make_device: MakeDevice) -> None:
    with running_worker(settings.model_copy(update={"mqtt_protocol": "3.1.1"})):
        device, _ = make_device()
        publisher.publish(device, "readings", reading_message(device, range(1, 6)))
        wait_for(lambda: count(conn, "SELECT count(*) FROM readings WHERE device_id = %s",
                               device) == 15, what="readings over MQTT 3.1.1")


def test_a_last_will_in_the_same_batch_as_a_reading_leaves_the_device_offline(
        settings: Settings, conn: psycopg.Connection[Any], make_device: MakeDevice) -> None:
    device, _ = make_device()
    status = f"{settings.topic_root}/v1/{device}/status"
    # A long batch window, so that the reading and the will are written in one transaction.
    with running_worker(settings.model_copy(update={"batch_wait_ms": 3000})) as worker:
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=device, protocol=paho.MQTTv5)
        client.will_set(status, json.dumps({"v": 1, "device_id": device, "online": False}),
                        qos=1, retain=False)
        client.connect(str(settings.mqtt_host), settings.mqtt_port)
        client.loop_start()
        client.publish(f"{settings.topic_root}/v1/{device}/readings",
                       reading_message(device, [1]), qos=1).wait_for_publish(5)
        client.loop_stop()
        sock = client.socket()
        assert sock is not None
        sock.close()  # gone without DISCONNECT: the broker publishes the will
        wait_for(lambda: worker.counters.commits >= 1, what="the batch committed")
        assert (worker.counters.received, worker.counters.batches) == (2, 1)
    row = conn.execute("SELECT online FROM device_status WHERE device_id = %s",
                       (device,)).fetchone()
    assert row == (False,)
    assert stored_readings(conn, device) == 3


# --- one message that cannot be stored never blocks the rest --------------------------------

@pytest.mark.parametrize("poison_at", [0, 63])
def test_one_refused_message_in_a_batch_of_64_costs_a_logarithmic_number_of_commits(
        settings: Settings, publisher: Publisher, conn: psycopg.Connection[Any],
        make_device: MakeDevice, poison_at: int) -> None:
    screen, _ = make_device("home_screen")
    bp, _ = make_device()
    marker = f"poison-{uuid.uuid4().hex[:6]}"
    messages = [(bp, "readings", reading_message(bp, [n + 1])) for n in range(63)]
    messages.insert(poison_at, (screen, "events", answer_message(screen, 1, marker)))
    wide = settings.model_copy(update={"batch_max": 64, "batch_wait_ms": 5000})
    with raising_trigger(conn, marker, "23514"), running_worker(wide) as worker:
        for device, channel, payload in messages:
            publisher.client.publish(f"{publisher.root}/v1/{device}/{channel}", payload, qos=1)
        wait_for(lambda: count(conn, "SELECT count(*) FROM dead_letters WHERE device_id = %s",
                               screen) == 1, what="the refused message dead-lettered")
        wait_for(lambda: stored_readings(conn, bp) == 3 * 63, what="the other 63 stored")
        assert (worker.counters.received, worker.counters.batches) == (64, 1)  # one batch
        transactions = worker.counters.commits + worker.counters.rollbacks
        assert transactions <= 2 * math.log2(64) + 2, worker.counters
    assert dead_letter_reasons(conn, screen) == [("storage_rejected", "CheckViolation 23514")]
    wait_for(lambda: bool(acks_for(publisher, screen)), what="the screen told")
    assert acks_for(publisher, screen)[0]["rejected"] == [{"seq": 1,
                                                           "reason": "storage_rejected"}]


def test_a_message_the_code_cannot_process_is_dead_lettered_and_the_worker_lives(
        worker: IngestWorker, publisher: Publisher, conn: psycopg.Connection[Any],
        make_device: MakeDevice, monkeypatch: pytest.MonkeyPatch) -> None:
    bp, _ = make_device()
    other, _ = make_device()
    # A defect in processing, for one message only (the pipeline once overflowed on a clock
    # far off: fixed, so it is injected here). Any such exception once killed the worker,
    # and every worker of the group on the redelivery.
    real = pipeline.metric_values

    def defective(kind: str, measurement: str, values: Any) -> Any:
        if values.get("systolic") == 66.6:
            raise OverflowError("a defect")
        return real(kind, measurement, values)

    monkeypatch.setattr(pipeline, "metric_values", defective)
    poison = reading_message(bp, [7], systolic=66.6)
    publisher.publish(other, "readings", reading_message(other, [1]))
    publisher.publish(bp, "readings", poison)
    publisher.publish(other, "readings", reading_message(other, [2]))
    wait_for(lambda: bool(dead_letter_reasons(conn, bp)), what="the poison dead-lettered")
    assert dead_letter_reasons(conn, bp) == [("processing_failed", "OverflowError")]
    wait_for(lambda: bool(acks_for(publisher, bp)), what="the device told")
    assert acks_for(publisher, bp)[0]["rejected"] == [{"seq": 7, "reason": "processing_failed"}]
    publisher.publish(other, "readings", reading_message(other, [3]))  # and the worker lives
    wait_for(lambda: stored_readings(conn, other) == 9, what="the others stored")


DATA_ERRORS = ["22023", "23514", "54000"]
# A missing column after a bad deploy, a read-only replica, out of disk/memory, a rollback,
# an I/O error, an internal error, a connection failure.
SYSTEM_ERRORS = ["42703", "25006", "53100", "40001", "58030", "XX000", "08006"]


@pytest.mark.parametrize("sqlstate", DATA_ERRORS)
def test_a_data_error_isolates_the_message(
        worker: IngestWorker, publisher: Publisher, conn: psycopg.Connection[Any],
        make_device: MakeDevice, sqlstate: str) -> None:
    screen, _ = make_device("home_screen")
    marker = f"poison-{uuid.uuid4().hex[:6]}"
    with raising_trigger(conn, marker, sqlstate):
        publisher.publish(screen, "events", answer_message(screen, 1, "fine"))
        publisher.publish(screen, "events", answer_message(screen, 2, marker))
        publisher.publish(screen, "events", answer_message(screen, 3, "fine"))
        wait_for(lambda: bool(dead_letter_reasons(conn, screen)), what="a dead letter")
        wait_for(lambda: stored_events(conn, screen) == 2, what="the other two stored")
    [(reason, detail)] = dead_letter_reasons(conn, screen)
    assert reason == "storage_rejected" and detail.endswith(f" {sqlstate}")
    assert "quote" not in detail  # the database's text can quote the row: never kept


@pytest.mark.parametrize("sqlstate", SYSTEM_ERRORS)
def test_a_system_error_holds_everything_unacknowledged_until_it_is_gone(
        settings: Settings, publisher: Publisher, conn: psycopg.Connection[Any],
        make_device: MakeDevice, sqlstate: str) -> None:
    screen, _ = make_device("home_screen")
    marker = f"broken-{uuid.uuid4().hex[:6]}"
    one_batch = settings.model_copy(update={"batch_wait_ms": 2000})
    with tapped(one_batch) as (tap, via_tap), running_worker(via_tap) as worker:
        with raising_trigger(conn, marker, sqlstate):
            publisher.publish(screen, "events", answer_message(screen, 1, "fine"))
            publisher.publish(screen, "events", answer_message(screen, 2, marker))
            wait_for(lambda: worker.counters.db_retries >= 2, what="the worker backing off")
            assert worker.counters.batches == 1
            assert stored_events(conn, screen) == 0  # the batch is held whole
            assert dead_letter_reasons(conn, screen) == []
            assert tap.pubacks() == 0 and acks_for(publisher, screen) == []
        wait_for(lambda: stored_events(conn, screen) == 2, timeout=20,
                 what="everything stored once the fault is gone")
        wait_for(lambda: tap.pubacks() == 2, what="both acknowledged")
    assert dead_letter_reasons(conn, screen) == []
    assert not tap.violations


def _held_until_fixed(conn: psycopg.Connection[Any], settings: Settings, publisher: Publisher,
                      device: str, fault: Callable[[], object], fix: Callable[[], object]) -> None:
    """Readings sent while `fault` is in force are neither stored, dead-lettered nor
    acknowledged; once fixed, all are stored, once, and the device's last-seen is written."""
    with tapped(settings) as (tap, via_tap), running_worker(via_tap) as worker:
        fault()
        for seq in range(1, 4):
            publisher.publish(device, "readings", reading_message(device, [seq]))
        wait_for(lambda: worker.counters.db_retries >= 2, what="the worker backing off")
        assert stored_readings(conn, device) == 0
        assert dead_letter_reasons(conn, device) == []
        assert tap.pubacks() == 0 and acks_for(publisher, device) == []
        fix()
        wait_for(lambda: stored_readings(conn, device) == 9, timeout=20,
                 what="stored once the fault is gone")
        wait_for(lambda: tap.pubacks() == 3, what="all acknowledged")
    assert count(conn, "SELECT count(*) FROM readings WHERE device_id = %s", device) == 9
    assert dead_letter_reasons(conn, device) == []
    assert not tap.violations
    # The last-seen write rolled back with every failed attempt; the commit must still make it.
    assert count(conn, "SELECT count(*) FROM device_status WHERE device_id = %s "
                 "AND last_seen_at IS NOT NULL", device) == 1


def test_a_revoked_privilege_holds_the_readings_until_granted_again(
        settings: Settings, publisher: Publisher, conn: psycopg.Connection[Any],
        make_device: MakeDevice, worker_role: tuple[str, str]) -> None:
    _, dsn = worker_role
    device, _ = make_device()
    # In this database only: grants are per database, the role is the cluster's.
    grant = sql.SQL("GRANT INSERT ON readings TO {}").format(sql.Identifier(ROLES["ingest"]))
    revoke = sql.SQL("REVOKE INSERT ON readings FROM {}").format(sql.Identifier(ROLES["ingest"]))
    _held_until_fixed(conn, settings.model_copy(update={"database_url": SecretStr(dsn)}), publisher, device,
                      lambda: conn.execute(revoke), lambda: conn.execute(grant))


def test_a_read_only_database_holds_the_readings_until_writable(
        settings: Settings, publisher: Publisher, conn: psycopg.Connection[Any],
        make_device: MakeDevice, worker_role: tuple[str, str]) -> None:
    role, dsn = worker_role
    device, _ = make_device()
    ident = sql.Identifier(role)
    # What a failover to a replica looks like to new connections (the worker reconnects after
    # a system error): every transaction is read-only.
    read_only = sql.SQL("ALTER ROLE {} SET default_transaction_read_only = on").format(ident)
    writable = sql.SQL("ALTER ROLE {} RESET default_transaction_read_only").format(ident)

    def fault() -> None:
        conn.execute(read_only)
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                     "WHERE usename = %s", (role,))

    _held_until_fixed(conn, settings.model_copy(update={"database_url": SecretStr(dsn)}), publisher, device,
                      fault, lambda: conn.execute(writable))


def test_a_commit_that_fails_is_retried_with_its_last_seen_write(
        worker: IngestWorker, publisher: Publisher, conn: psycopg.Connection[Any],
        make_device: MakeDevice) -> None:
    device, _ = make_device()
    name = sql.Identifier(f"test_fail_commit_{uuid.uuid4().hex[:8]}")
    # Fails the first two COMMITs that write this device's status (a serialization failure
    # at commit, say); a sequence counts the attempts because a rollback cannot undo it.
    conn.execute(sql.SQL("CREATE SEQUENCE {}").format(name))
    conn.execute(sql.SQL(
        "CREATE FUNCTION {}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "IF NEW.device_id = {} AND nextval({}) <= 2 THEN "
        "RAISE EXCEPTION 'fail at commit' USING ERRCODE = '40001'; END IF; "
        # As its owner: the worker's role has no use of the test's sequence.
        "RETURN NULL; END $$ SECURITY DEFINER").format(name, sql.Literal(device),
                                                       sql.Literal(name.as_string())))
    conn.execute(sql.SQL("CREATE CONSTRAINT TRIGGER {} AFTER INSERT OR UPDATE ON device_status "
                         "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION {}()")
                 .format(name, name))
    try:
        publisher.publish(device, "readings", reading_message(device, [1]))
        wait_for(lambda: stored_readings(conn, device) == 3, what="stored after two retries")
        # The rolled-back attempts wrote the device's last-seen too: the cache must not
        # believe it written.
        assert count(conn, "SELECT count(*) FROM device_status WHERE device_id = %s "
                     "AND last_seen_at IS NOT NULL", device) == 1
        assert worker.counters.db_retries == 2
    finally:
        conn.execute(sql.SQL("DROP TRIGGER {} ON device_status").format(name))
        conn.execute(sql.SQL("DROP FUNCTION {}()").format(name))
        conn.execute(sql.SQL("DROP SEQUENCE {}").format(name))


# --- PUBACK: after COMMIT, on the connection that delivered --------------------------------

def test_each_puback_comes_strictly_after_the_commit_of_its_message(
        settings: Settings, publisher: Publisher, conn: psycopg.Connection[Any],
        database: str, make_device: MakeDevice) -> None:
    screen, _ = make_device("home_screen")
    seen: list[tuple[int, int]] = []  # (seq, rows visible to another session at the PUBACK)

    def at_puback(packet: Delivered) -> None:
        seq = json.loads(packet.payload)["events"][0]["seq"]
        with psycopg.connect(database, autocommit=True) as observer:
            seen.append((seq, count(observer, "SELECT count(*) FROM device_events "
                                    "WHERE device_id = %s AND seq = %s", screen, seq)))

    with tapped(settings, on_puback=at_puback) as (tap, via_tap), running_worker(via_tap):
        with table_locked(database, "device_events") as release:
            for seq in range(1, 6):
                publisher.publish(screen, "events", answer_message(screen, seq, "fine"))
            wait_for(lambda: writer_waits_for_lock(conn), what="the transaction held open")
            assert tap.pubacks() == 0  # inside an open transaction: nothing acknowledged
            release()
            wait_for(lambda: tap.pubacks() == 5, what="five PUBACKs")
    assert sorted(seen) == [(seq, 1) for seq in range(1, 6)]  # each committed before its ack
    assert not tap.violations


def test_a_slow_connack_is_waited_for_not_answered_with_reconnects(
        settings: Settings, publisher: Publisher, conn: psycopg.Connection[Any],
        make_device: MakeDevice) -> None:
    device, _ = make_device()
    with tapped(settings, connack_delay_s=0.8) as (tap, via_tap), \
            running_worker(via_tap) as worker:
        publisher.publish(device, "readings", reading_message(device, [1]))
        wait_for(lambda: stored_readings(conn, device) == 3, what="stored")
        assert worker.counters.reconnects == 0 and len(tap.connections) == 1


def test_no_puback_on_a_new_connection_for_a_message_of_the_old_one(
        settings: Settings, publisher: Publisher, conn: psycopg.Connection[Any],
        database: str, make_device: MakeDevice) -> None:
    screen, _ = make_device("home_screen")
    one_at_a_time = settings.model_copy(update={"batch_max": 1})
    with tapped(one_at_a_time) as (tap, via_tap), running_worker(via_tap) as worker:
        with table_locked(database, "device_events") as release:
            publisher.publish(screen, "events", answer_message(screen, 1, "fine"))
            publisher.publish(screen, "events", answer_message(screen, 2, "fine"))
            # Message 1 is in the writer's open transaction, message 2 waits in the inbox.
            wait_for(lambda: writer_waits_for_lock(conn) and len(worker.inbox) == 1,
                     what="one message in hand and one queued")
            tap.cut()
            wait_for(lambda: worker.subscribed_session == 2, what="the worker reconnected")
            # The broker delivers both again on the new connection; the queued copy of the old
            # one is dropped, and the one in hand is committed but not acknowledged.
            wait_for(lambda: len(tap.connections[1].delivered) == 2, what="both redelivered")
            assert all(p.dup for p in tap.connections[1].delivered)
            release()
            wait_for(lambda: stored_events(conn, screen) == 2, what="both stored")
            wait_for(lambda: len(tap.connections[1].pubacks) == 2, what="PUBACKs on the new one")
        assert worker.counters.purged == 1
    assert not tap.violations
    assert tap.connections[0].pubacks == []
    assert sorted(tap.connections[1].pubacks) == sorted(p.mid for p in tap.connections[1].delivered)
    assert count(conn, "SELECT count(*) FROM device_events WHERE device_id = %s", screen) == 2


# --- a full inbox: the network thread never blocks, nothing is lost -------------------------

def small_inbox(settings: Settings, **more: Any) -> Settings:
    return settings.model_copy(update={"inbox_max_bytes": 1024 * 1024, "batch_max": 2, **more})


# Neither QoS 0 nor MQTT 3.1.1 is bounded by Receive Maximum: the inbox's own bounds are.
@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_a_full_inbox_defers_qos1_and_the_broker_redelivers_it(
        settings: Settings, publisher: Publisher, conn: psycopg.Connection[Any],
        database: str, make_device: MakeDevice, protocol: str) -> None:
    screen, _ = make_device("home_screen")
    messages = 20  # ~4 MB against a 1 MiB inbox
    small = small_inbox(settings, mqtt_protocol=protocol)
    with tapped(small) as (tap, via_tap), running_worker(via_tap) as worker:
        with table_locked(database, "device_events") as release:
            for n in range(messages):
                publisher.publish(screen, "events", bulky_answers(screen, 1 + 60 * n))
            wait_for(lambda: worker.counters.deferred > 0, what="deliveries deferred")
            assert worker.inbox.bytes <= 1024 * 1024
            # The network thread still serves the broker: cut, it reconnects and resubscribes.
            tap.cut()
            wait_for(lambda: worker.subscribed_session == 2, what="reconnected during the outage")
            release()
            wait_for(lambda: stored_events(conn, screen) == 60 * messages, timeout=30,
                     what="every deferred message redelivered and stored")
        assert worker.counters.reconnects >= 1
        assert worker.counters.shed == 0
    assert count(conn, "SELECT count(*) FROM device_events WHERE device_id = %s",
                 screen) == 60 * messages
    assert not tap.violations


def test_a_full_inbox_sheds_and_counts_qos0(
        settings: Settings, publisher: Publisher, conn: psycopg.Connection[Any],
        database: str, make_device: MakeDevice) -> None:
    screen, _ = make_device("home_screen")
    messages = 20
    with running_worker(small_inbox(settings)) as worker:
        with table_locked(database, "device_events") as release:
            for n in range(messages):
                publisher.client.publish(f"{publisher.root}/v1/{screen}/events",
                                         bulky_answers(screen, 1 + 60 * n), qos=0)
            wait_for(lambda: worker.counters.shed > 0, what="QoS 0 messages shed")
            wait_for(lambda: worker.counters.shed + worker.counters.received
                     + len(worker.inbox) == messages, what="every message received or shed")
            release()
            kept = messages - worker.counters.shed
            wait_for(lambda: stored_events(conn, screen) == 60 * kept, what="the rest stored")
        assert worker.counters.deferred == 0


Fault = Callable[[str, psycopg.Connection[Any], str], Any]


@contextmanager
def events_locked(database: str, _conn: psycopg.Connection[Any], _role: str) -> Iterator[None]:
    """The writer's query waits on a lock: only cancelling it ends the transaction."""
    with table_locked(database, "device_events"):
        yield


@contextmanager
def events_revoked(_database: str, conn: psycopg.Connection[Any], _login: str) -> Iterator[None]:
    """Every attempt fails at once: the writer backs off and retries."""
    role = sql.Identifier(ROLES["ingest"])
    conn.execute(sql.SQL("REVOKE INSERT ON device_events FROM {}").format(role))
    try:
        yield
    finally:
        conn.execute(sql.SQL("GRANT INSERT ON device_events TO {}").format(role))


@pytest.mark.parametrize("fault", [events_locked, events_revoked])
def test_a_stop_with_a_full_inbox_during_an_outage_is_quick_and_loses_nothing(
        settings: Settings, publisher: Publisher, conn: psycopg.Connection[Any],
        database: str, make_device: MakeDevice, worker_role: tuple[str, str],
        fault: Fault) -> None:
    role, dsn = worker_role
    screen, _ = make_device("home_screen")
    messages = 12
    stopping = small_inbox(settings, stop_timeout_s=2.0, database_url=SecretStr(dsn))
    with fault(database, conn, role):
        with running_worker(stopping) as worker:
            for n in range(messages):
                publisher.publish(screen, "events", bulky_answers(screen, 1 + 60 * n))
            wait_for(lambda: worker.counters.deferred > 0, what="a full inbox")
            stop_requested = time.monotonic()
        stopped_in = time.monotonic() - stop_requested  # running_worker joined the thread
        assert stored_events(conn, screen) == 0
    assert stopped_in < stopping.stop_timeout_s + 3, stopped_in
    with running_worker(stopping):  # the same session: the broker delivers what was not acked
        wait_for(lambda: stored_events(conn, screen) == 60 * messages, timeout=30,
                 what="everything stored after the restart")
    assert count(conn, "SELECT count(*) FROM device_events WHERE device_id = %s",
                 screen) == 60 * messages


# --- payloads over the limit: never copied, never sent to us -------------------------------

def test_a_payload_over_the_limit_is_dead_lettered_with_its_size_and_no_copy(
        worker: IngestWorker, publisher: Publisher, conn: psycopg.Connection[Any],
        settings: Settings, make_device: MakeDevice) -> None:
    device, _ = make_device()
    size = settings.max_payload_bytes + 100  # over the limit, within the packet size we allow
    publisher.publish(device, "readings", b"x" * size)
    wait_for(lambda: bool(dead_letter_reasons(conn, device)), what="the dead letter")
    row = conn.execute("SELECT reason, payload_bytes, length(payload) FROM dead_letters "
                       "WHERE device_id = %s", (device,)).fetchone()
    assert row == ("payload_too_large", size, 0)


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


ELEVEN_MB = 11 * 1024 * 1024


@pytest.mark.slow
@pytest.mark.parametrize(("protocol", "letters"), [
    ("5", []),  # over our Maximum Packet Size: the broker never sends it
    ("3.1.1", [("payload_too_large", ELEVEN_MB)]),  # no such limit: read, sized, not kept
])
def test_an_11_mb_message_does_not_grow_the_worker_for_good(
        settings: Settings, publisher: Publisher, conn: psycopg.Connection[Any],
        make_device: MakeDevice, tmp_path: Path, protocol: str,
        letters: list[tuple[str, int]]) -> None:
    device, _ = make_device()
    log = tmp_path / "ingest.log"
    env = {**os.environ, "TELECARE_DATABASE_URL": settings.database_dsn(),
           "TELECARE_MQTT_HOST": str(settings.mqtt_host),
           "TELECARE_MQTT_PORT": str(settings.mqtt_port),
           "TELECARE_MQTT_PROTOCOL": protocol, "TELECARE_TOPIC_ROOT": settings.topic_root,
           "TELECARE_SHARE_GROUP": settings.share_group,
           "TELECARE_INGEST_CLIENT_ID": settings.ingest_client_id,
           "TELECARE_SESSION_EXPIRY_S": "600"}
    worker = subprocess.Popen([sys.executable, "-m", "telecare.cli", "ingest"], env=env,
                              stdout=log.open("ab"), stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: b"subscribed" in log.read_bytes(), what="worker subscribed")
        publisher.publish(device, "readings", reading_message(device, [1]))
        wait_for(lambda: stored_readings(conn, device) == 3, what="a first reading")
        before = _rss_kib(worker.pid)
        publisher.publish(device, "readings", b"x" * ELEVEN_MB)
        publisher.publish(device, "readings", reading_message(device, [2]))
        wait_for(lambda: stored_readings(conn, device) == 6, what="the reading after it")
        after = _rss_kib(worker.pid)
    finally:
        worker.terminate()
        worker.wait(20)
    print(f"\nMQTT {protocol}: worker RSS {before} KiB before an 11 MB message, {after} KiB "
          f"after (+{after - before} KiB)")
    assert conn.execute("SELECT reason, payload_bytes FROM dead_letters WHERE device_id = %s",
                        (device,)).fetchall() == letters
    assert after - before < 4 * 1024  # KiB


def test_a_live_retained_status_checks_the_device_clock(
        worker: IngestWorker, publisher: Publisher, conn: psycopg.Connection[Any],
        make_device: MakeDevice) -> None:
    """Statuses are published retained; live ones must still count as news about the clock
    (only the stored copies the broker replays on subscribing are old)."""
    device, _ = make_device("scale")
    topic = f"{publisher.root}/v1/{device}/status"
    behind = (datetime.now(UTC) - timedelta(hours=3)).isoformat()
    publisher.client.publish(topic, json.dumps({"v": 1, "device_id": device, "online": True,
                                                "reported_at": behind}),
                             qos=1, retain=True).wait_for_publish(5)
    try:
        wait_for(lambda: conn.execute("SELECT clock_suspect FROM device_status WHERE "
                                      "device_id = %s", (device,)).fetchone() == (True,),
                 what="the clock found three hours behind")
    finally:
        publisher.client.publish(topic, b"", qos=1, retain=True).wait_for_publish(5)
