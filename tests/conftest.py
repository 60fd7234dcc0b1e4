"""Fixtures on the machine's real PostgreSQL and Mosquitto. A missing service fails the run
loudly: nothing here passes because a server was absent."""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import paho.mqtt.client as paho
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from core.migrations import migrate
from core.settings import Settings
from devices import service
from devices.models import Device
from ingest.worker import IngestWorker

ADMIN_DSN = os.environ.get("TELECARE_TEST_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
MQTT_HOST = os.environ.get("TELECARE_TEST_MQTT_HOST", "127.0.0.1")
MQTT_PORT = int(os.environ.get("TELECARE_TEST_MQTT_PORT", "1883"))
PAIRED_SINCE = datetime(2020, 1, 1, tzinfo=UTC)


def _dsn_for(name: str) -> str:
    return ADMIN_DSN.rsplit("/", 1)[0] + f"/{name}"


@pytest.fixture(scope="session")
def database() -> Iterator[str]:
    """A fresh database for the session, built by the real migrations."""
    name = f"telecare_test_{uuid.uuid4().hex[:8]}"
    try:
        admin = psycopg.connect(ADMIN_DSN, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL is required at {ADMIN_DSN} and is not reachable: {exc}",
                    pytrace=False)
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    dsn = _dsn_for(name)
    migrate(dsn, storage="postgres")
    yield dsn
    with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def broker() -> tuple[str, int]:
    """The machine's Mosquitto; fails the run when it is not there."""
    try:
        with socket.create_connection((MQTT_HOST, MQTT_PORT), timeout=3):
            pass
    except OSError as exc:
        pytest.fail(f"an MQTT broker is required at {MQTT_HOST}:{MQTT_PORT}: {exc}",
                    pytrace=False)
    return MQTT_HOST, MQTT_PORT


@pytest.fixture
def conn(database: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(database, autocommit=True) as connection:
        yield connection


@pytest.fixture
def settings(database: str, broker: tuple[str, int]) -> Settings:
    """Settings isolated per test: own topic root, share group and client id on the broker."""
    tag = uuid.uuid4().hex[:8]
    return Settings(database_url=database, mqtt_host=broker[0], mqtt_port=broker[1],
                    topic_root=f"t{tag}", share_group=f"g{tag}",
                    ingest_client_id=f"ingest-{tag}", session_expiry_s=600)


@pytest.fixture
def make_device(conn: psycopg.Connection[Any]) -> Callable[..., tuple[str, uuid.UUID]]:
    """Register a device paired to a new citizen since 2020; returns (device_id, citizen_id)."""

    def make(kind: str = "bp_monitor", citizen: uuid.UUID | None = None) -> tuple[str, uuid.UUID]:
        device_id = f"{kind[:4]}-{uuid.uuid4().hex[:10]}"
        citizen_id = citizen or service.enrol_citizen(conn, "Test Citizen", ["hypertension"])
        service.register_device(conn, Device(id=device_id, kind=kind, model="M",  # type: ignore[arg-type]
                                             serial=f"S-{device_id}"))
        service.pair_device(conn, device_id, citizen_id, PAIRED_SINCE)
        return device_id, citizen_id

    return make


@contextmanager
def running_worker(settings: Settings) -> Iterator[IngestWorker]:
    """An ingest worker in a thread, subscribed; afterwards stopped and checked for errors."""
    worker = IngestWorker(settings)
    stop = threading.Event()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            worker.run(stop)
        except BaseException as exc:
            errors.append(exc)
            raise

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        assert worker.wait_connected(10), "ingest worker did not connect and subscribe"
        yield worker
    finally:
        stop.set()
        thread.join(30)
    assert not thread.is_alive(), "ingest worker did not stop"
    assert not errors, f"ingest worker raised: {errors!r}"


@pytest.fixture
def worker(settings: Settings) -> Iterator[IngestWorker]:
    """An ingest worker running in a thread on the real broker and database."""
    with running_worker(settings) as running:
        yield running


class Publisher:
    """A device-side MQTT client that publishes at QoS 1 and collects command messages."""

    def __init__(self, host: str, port: int, root: str, protocol: int = paho.MQTTv5) -> None:
        self.root = root
        self.commands: list[tuple[str, bytes]] = []
        self.client = paho.Client(CallbackAPIVersion.VERSION2, protocol=protocol)
        self.client.on_message = lambda _c, _u, m: self.commands.append((m.topic, m.payload))
        self.client.connect(host, port)
        self.client.loop_start()
        self.client.subscribe(f"{root}/v1/+/commands", qos=1)

    def publish(self, device_id: str, channel: str, payload: bytes | str) -> None:
        info = self.client.publish(f"{self.root}/v1/{device_id}/{channel}", payload, qos=1)
        info.wait_for_publish(10)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def publisher(settings: Settings) -> Iterator[Publisher]:
    assert settings.mqtt_host is not None
    pub = Publisher(settings.mqtt_host, settings.mqtt_port, settings.topic_root)
    time.sleep(0.1)
    yield pub
    pub.close()


def wait_for(predicate: Callable[[], bool], timeout: float = 15.0, what: str = "condition") -> None:
    """Poll until `predicate` holds; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def count(conn: psycopg.Connection[Any], query: str, *params: Any) -> int:
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return int(row[0])


def reading_message(device_id: str, seqs: range | list[int], *, start: datetime | None = None,
                    step: timedelta = timedelta(seconds=1), systolic: float = 130.0) -> str:
    """A blood-pressure readings message, one reading per sequence number, `step` apart."""
    import json

    start = start or datetime.now(UTC) - timedelta(days=2)
    readings = [{"seq": s, "measured_at": (start + s * step).isoformat(),
                 "type": "blood_pressure",
                 "values": {"systolic": systolic, "diastolic": 80, "pulse": 70}} for s in seqs]
    return json.dumps({"v": 1, "device_id": device_id, "readings": readings})
