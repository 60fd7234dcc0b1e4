"""The ingest worker on the real broker and database."""

import hashlib
import json
from collections.abc import Callable
from typing import Any
from uuid import UUID

import psycopg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest.worker import IngestWorker
from tests.conftest import Publisher, count, reading_message, wait_for
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
@settings(max_examples=15, deadline=None,
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
