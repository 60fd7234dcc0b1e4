"""The ingest worker on the real broker and database."""

import hashlib
import json
from collections.abc import Callable
from typing import Any
from uuid import UUID

import paho.mqtt.client as paho
import psycopg
from hypothesis import HealthCheck, given
from hypothesis import settings as examples
from hypothesis import strategies as st
from paho.mqtt.enums import CallbackAPIVersion

from core.settings import Settings
from ingest.worker import IngestWorker
from tests.conftest import Publisher, count, reading_message, running_worker, wait_for
from tests.ingest.test_decode import CORPUS

MakeDevice = Callable[..., tuple[str, UUID]]


def test_published_readings_are_stored_and_acknowledged_to_the_device(
        worker: IngestWorker, publisher: Publisher, conn: psycopg.Connection[Any],
        make_device: MakeDevice) -> None:
    device, citizen = make_device()
    publisher.publish(device, "readings", reading_message(device, range(1, 11)))
    wait_for(lambda: any(device in t for t, _ in publisher.commands), what="application ack")
    assert count(conn, "SELECT count(*) FROM readings WHERE device_id = %s AND citizen_id = %s",
                 device, citizen) == 30
    ack = json.loads(next(p for t, p in publisher.commands if device in t))
    assert ack == {"v": 1, "type": "ack", "stored": list(range(1, 11)), "rejected": []}


def test_a_corpus_of_malformed_payloads_is_dead_lettered_between_valid_messages(
        worker: IngestWorker, publisher: Publisher, conn: psycopg.Connection[Any],
        make_device: MakeDevice) -> None:
    device, _ = make_device()
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


def test_a_device_that_vanishes_is_marked_offline_by_its_last_will(
        worker: IngestWorker, settings: Settings, conn: psycopg.Connection[Any],
        make_device: MakeDevice) -> None:
    device, _ = make_device("scale")
    status = f"{settings.topic_root}/v1/{device}/status"
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=device, protocol=paho.MQTTv5)
    client.will_set(status, json.dumps({"v": 1, "device_id": device, "online": False}),
                    qos=1, retain=True)
    client.connect(str(settings.mqtt_host), settings.mqtt_port)
    client.loop_start()
    client.publish(status, json.dumps({"v": 1, "device_id": device, "online": True,
                                       "battery_pct": 80}), qos=1, retain=True).wait_for_publish(5)

    def online() -> object:
        row = conn.execute("SELECT online FROM device_status WHERE device_id = %s",
                           (device,)).fetchone()
        return row[0] if row else None

    wait_for(lambda: online() is True, what="device online")
    client.loop_stop()
    client.socket().close()  # gone without DISCONNECT: the broker publishes the will
    wait_for(lambda: online() is False, what="device offline by last will")
    client.publish(status, b"", retain=True)  # clear the retained status on the broker


def test_ingest_speaks_mqtt_3_1_1_too(settings: Settings, publisher: Publisher,
                                      conn: psycopg.Connection[Any],
                                      make_device: MakeDevice) -> None:
    with running_worker(settings.model_copy(update={"mqtt_protocol": "3.1.1"})):
        device, _ = make_device()
        publisher.publish(device, "readings", reading_message(device, range(1, 6)))
        wait_for(lambda: count(conn, "SELECT count(*) FROM readings WHERE device_id = %s",
                               device) == 15, what="readings over MQTT 3.1.1")


def test_a_message_the_database_refuses_is_isolated_and_the_rest_stored(
        worker: IngestWorker, publisher: Publisher, conn: psycopg.Connection[Any],
        make_device: MakeDevice) -> None:
    screen, _ = make_device("home_screen")
    bp, _ = make_device()
    # A rule the database enforces and ingest does not know: stands for any such mismatch.
    conn.execute("ALTER TABLE device_events ADD CONSTRAINT test_refuses_poison "
                 "CHECK (data->>'answer' IS DISTINCT FROM 'poison') NOT VALID")
    try:
        answer = {"v": 1, "device_id": screen, "events": [{
            "seq": 1, "measured_at": "2026-11-20T09:00:00+00:00", "type": "questionnaire_answer",
            "data": {"questionnaire": "daily", "question": "q1", "answer": "poison"}}]}
        worker_batch = [(bp, reading_message(bp, [1])), (screen, json.dumps(answer)),
                        (bp, reading_message(bp, [2]))]
        for device, payload in worker_batch:
            publisher.client.publish(f"{publisher.root}/v1/{device}/"
                                     f"{'events' if device == screen else 'readings'}",
                                     payload, qos=1)
        wait_for(lambda: count(conn, "SELECT count(*) FROM dead_letters WHERE device_id = %s "
                               "AND reason = 'storage_rejected'", screen) == 1,
                 what="the refused message dead-lettered")
        wait_for(lambda: count(conn, "SELECT count(DISTINCT seq) FROM readings "
                               "WHERE device_id = %s", bp) == 2, what=f"the others stored {bp}")
    finally:
        conn.execute("ALTER TABLE device_events DROP CONSTRAINT test_refuses_poison")
