"""No loss, no duplicates: a worker killed mid-stream, and a database restart mid-stream (on a
PostgreSQL server of the test's own)."""

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg
import pytest
from pydantic import SecretStr

from core.settings import Settings
from tests.conftest import (
    OwnPostgres,
    Publisher,
    count,
    new_device,
    reading_message,
    running_worker,
    wait_for,
)

MakeDevice = Callable[..., tuple[str, UUID]]
STREAM = 3000  # messages, one reading (three metrics) each
# The machine's Mosquitto runs its default configuration, which holds at most 1,000 queued
# messages per session besides the 1,000 in flight: the outage must stay within that, or the
# broker itself drops. (deploy/mosquitto.conf lifts the bound for production.)
RATE = 300.0
pytestmark = pytest.mark.slow


def _stream(publisher: Publisher, devices: list[str], per_device: int, rate: float,
            halfway: threading.Event) -> None:
    """Publish seq 1..per_device for each device, round robin, at about `rate` messages/s."""
    sent = 0
    start = time.monotonic()
    for seq in range(1, per_device + 1):
        for device in devices:
            publisher.client.publish(f"{publisher.root}/v1/{device}/readings",
                                     reading_message(device, [seq]), qos=1)
            sent += 1
            if sent == STREAM // 3:
                halfway.set()
            pause = start + sent / rate - time.monotonic()
            if pause > 0:
                time.sleep(pause)


def _assert_exactly_once(conn: psycopg.Connection[Any], devices: list[str],
                         per_device: int) -> None:
    def stored() -> int:
        return count(conn, "SELECT count(*) FROM readings WHERE device_id = ANY(%s)", devices)

    try:
        wait_for(lambda: stored() >= 3 * STREAM, timeout=60, what="every reading stored")
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {stored() // 3} of {STREAM} readings stored") from None
    rows, distinct = conn.execute(
        "SELECT count(*), count(DISTINCT (device_id, seq)) FROM readings "
        "WHERE device_id = ANY(%s)", (devices,)).fetchone() or (0, 0)
    assert (rows, distinct) == (3 * STREAM, STREAM)
    seqs = conn.execute("SELECT device_id, array_agg(DISTINCT seq ORDER BY seq) FROM readings "
                        "WHERE device_id = ANY(%s) GROUP BY device_id", (devices,)).fetchall()
    assert {d: list(s) for d, s in seqs} == {d: list(range(1, per_device + 1)) for d in devices}


def _worker_process(settings: Settings, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "TELECARE_DATABASE_URL": settings.database_dsn(),
           "TELECARE_MQTT_HOST": str(settings.mqtt_host),
           "TELECARE_MQTT_PORT": str(settings.mqtt_port),
           "TELECARE_TOPIC_ROOT": settings.topic_root,
           "TELECARE_SHARE_GROUP": settings.share_group,
           "TELECARE_INGEST_CLIENT_ID": settings.ingest_client_id,
           "TELECARE_SESSION_EXPIRY_S": "600"}
    return subprocess.Popen([sys.executable, "-m", "telecare.cli", "ingest"], env=env,
                            stdout=log.open("ab"), stderr=subprocess.STDOUT)


def test_a_worker_killed_mid_stream_loses_and_duplicates_nothing(
        settings: Settings, publisher: Publisher, conn: psycopg.Connection[Any],
        make_device: MakeDevice, tmp_path: Path) -> None:
    devices = [make_device()[0] for _ in range(10)]
    log = tmp_path / "ingest.log"
    worker = _worker_process(settings, log)
    # Logged after SUBACK: from then on the broker holds the stream for the share group.
    wait_for(lambda: b"connected to the broker and subscribed" in log.read_bytes(),
             what="worker subscribed")
    halfway = threading.Event()
    streamer = threading.Thread(target=_stream, args=(publisher, devices, STREAM // 10, RATE,
                                                      halfway))
    streamer.start()
    assert halfway.wait(30)
    worker.send_signal(signal.SIGKILL)
    worker.wait(10)
    stored_at_kill = count(conn, "SELECT count(*) FROM readings WHERE device_id = ANY(%s)",
                           devices)
    restarted = _worker_process(settings, log)
    try:
        streamer.join(60)
        _assert_exactly_once(conn, devices, STREAM // 10)
    finally:
        restarted.send_signal(signal.SIGTERM)
        restarted.wait(20)
    assert 0 < stored_at_kill < 3 * STREAM  # the kill really fell in the middle of the stream


def test_a_database_restart_mid_stream_loses_and_duplicates_nothing(
        settings: Settings, publisher: Publisher, own_postgres: OwnPostgres) -> None:
    # The test's own server: restarting it disturbs no other test and no other user.
    own = settings.model_copy(update={"database_url": SecretStr(own_postgres.dsn)})
    with psycopg.connect(own_postgres.dsn, autocommit=True) as conn:
        devices = [new_device(conn)[0] for _ in range(10)]
    with running_worker(own) as worker:
        halfway = threading.Event()
        streamer = threading.Thread(target=_stream, args=(publisher, devices, STREAM // 10,
                                                          RATE, halfway))
        streamer.start()
        assert halfway.wait(30)
        with psycopg.connect(own_postgres.dsn, autocommit=True) as conn:
            stored_at_restart = count(conn, "SELECT count(*) FROM readings")
        own_postgres.restart()
        streamer.join(60)
        with psycopg.connect(own_postgres.dsn, autocommit=True) as conn:
            _assert_exactly_once(conn, devices, STREAM // 10)
        assert worker.counters.db_retries > 0  # the outage really hit the worker
    assert 0 < stored_at_restart < 3 * STREAM  # the restart really fell mid-stream
