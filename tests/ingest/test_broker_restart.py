"""A broker restart mid-stream, on a Mosquitto of the test's own: every reading stored exactly
once, and how long the workers were away.

Mosquitto 2.0.11 restores no shared subscription for an offline member after a restart: what
devices publish between the broker coming back and the workers resubscribing reaches nobody,
and only the devices' resends (of everything not application-acked) recover it. The test
measures that gap and how many readings it cost, and holds the workers to reconnecting fast."""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import paho.mqtt.client as paho
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from core.settings import Settings
from ingest.wire import MAX_ITEMS_PER_MESSAGE
from ingest.worker import IngestWorker
from telecare.embedded import MOSQUITTO_CONF, free_port
from tests.conftest import count, running_worker, wait_for

MakeDevice = Callable[..., tuple[str, UUID]]
pytestmark = pytest.mark.slow

MOSQUITTO = "/usr/sbin/mosquitto"
# The embedded template plus what issue 5 item 18 asks of a broker that restarts: state saved
# every second (and on a clean shutdown), and a log to read when a run goes wrong.
EXTRA_CONF = """\
autosave_interval 1
autosave_on_changes false
log_dest file {data}/mosquitto.log
log_type error
log_type warning
log_type notice
"""
DEVICES = 20
RATE_PER_DEVICE = 5.0  # readings a second, each its own message
RESEND_AFTER_S = 2.0  # a device resends what is not application-acked after this long
DOWN_S = 3.5  # how long the broker stays down (a container restart takes seconds)
# Workers must be subscribed again within this of the broker being back (paho's old default
# back-off of 1, 2, 4 s ... after a 3.5 s outage took 3.4 s).
MAX_GAP_S = 1.0


class Mosquitto:
    """A Mosquitto of our own on a free port, with persistence in `data`; restartable on the
    same port and data directory."""

    def __init__(self, data: Path) -> None:
        self.data = data
        self.port = free_port()
        self.conf = data / "mosquitto.conf"
        self.conf.write_text(MOSQUITTO_CONF.format(port=self.port, data=data.resolve())
                             + EXTRA_CONF.format(data=data.resolve()))
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> float:
        """Start it; returns the monotonic time it accepted a connection."""
        self._proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port),
                                                                        0.2):
                return time.monotonic()
            assert self._proc.poll() is None, f"mosquitto exited: {self.log()}"
            time.sleep(0.005)
        raise AssertionError(f"mosquitto did not listen on {self.port}: {self.log()}")

    def stop(self) -> None:
        """SIGTERM: a clean shutdown, which saves the persistence file."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            self._proc.wait(15)
        self._proc = None

    def log(self) -> str:
        path = self.data / "mosquitto.log"
        return path.read_text()[-2000:] if path.exists() else "(no log)"


@contextlib.contextmanager
def own_mosquitto(data: Path) -> Iterator[Mosquitto]:
    """A private Mosquitto for the block (fault tests must never touch the machine's)."""
    broker = Mosquitto(data)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@dataclass
class DeviceTally:
    generated: int = 0
    resent_items: int = 0
    messages: int = 0


class ProtocolDevice:
    """A device as docs/protocol.md says: QoS 1, a persistent session, every reading pending
    until an application ack lists it, resent (in messages of at most 200) when overdue."""

    def __init__(self, device_id: str, root: str, port: int) -> None:
        self.id, self.root = device_id, root
        self.tally = DeviceTally()
        self._seq = 0
        self._pending: dict[int, tuple[dict[str, Any], float, int]] = {}  # item, sent, sends
        self._lock = threading.Lock()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=device_id,
                                  protocol=paho.MQTTv5)
        self.client.on_connect = lambda c, *_: c.subscribe(f"{root}/v1/{device_id}/commands", 1)
        self.client.on_message = self._on_ack
        self.client.reconnect_delay_set(min_delay=1, max_delay=5)
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = 3600
        self.client.connect_async("127.0.0.1", port, keepalive=10, clean_start=False,
                                  properties=props)
        self.client.loop_start()

    def measure(self) -> None:
        with self._lock:
            self._seq += 1
            seq = self._seq
            item = {"seq": seq, "measured_at": datetime.now(UTC).isoformat(),
                    "type": "blood_pressure",
                    "values": {"systolic": 120.0 + seq % 20, "diastolic": 80.0, "pulse": 60.0}}
            self._pending[seq] = (item, time.monotonic(), 1)
            self.tally.generated += 1
        self._send([item])

    def resend_overdue(self) -> None:
        now = time.monotonic()
        with self._lock:
            overdue = sorted(s for s, (_, sent, _) in self._pending.items()
                             if now - sent > RESEND_AFTER_S)
            items = []
            for seq in overdue:
                item, _, sends = self._pending[seq]
                self._pending[seq] = (item, now, sends + 1)
                items.append(item)
            self.tally.resent_items += len(items)
        for start in range(0, len(items), MAX_ITEMS_PER_MESSAGE):
            self._send(items[start:start + MAX_ITEMS_PER_MESSAGE])

    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def _send(self, items: list[dict[str, Any]]) -> None:
        message = {"v": 1, "device_id": self.id, "sent_at": datetime.now(UTC).isoformat(),
                   "readings": items}
        self.client.publish(f"{self.root}/v1/{self.id}/readings", json.dumps(message), qos=1)
        with self._lock:
            self.tally.messages += 1

    def _on_ack(self, _c: paho.Client, _u: Any, msg: paho.MQTTMessage) -> None:
        ack = json.loads(msg.payload)
        with self._lock:
            for seq in ack["stored"] + [r["seq"] for r in ack["rejected"]]:
                self._pending.pop(seq, None)
        assert not ack["rejected"], ack


class Gap:
    """When each worker was subscribed again after the broker came back."""

    def __init__(self, workers: list[IngestWorker]) -> None:
        self._workers = workers
        self._before = [w.subscribed_session for w in workers]
        self.resubscribed: list[float | None] = [None] * len(workers)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stop.wait(0.002):
            for index, worker in enumerate(self._workers):
                if (self.resubscribed[index] is None
                        and worker.subscribed_session > self._before[index]):
                    self.resubscribed[index] = time.monotonic()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)


def _stream(devices: list[ProtocolDevice], seconds: float) -> None:
    """Every device measures at RATE_PER_DEVICE and resends what is overdue."""
    period = 1 / RATE_PER_DEVICE
    started = time.monotonic()
    ticks = 0
    while time.monotonic() - started < seconds:
        for device in devices:
            device.measure()
            device.resend_overdue()
        ticks += 1
        pause = started + ticks * period - time.monotonic()
        if pause > 0:
            time.sleep(pause)  # the pace of measuring, not a wait for anything


def test_a_broker_restart_mid_stream_loses_and_duplicates_nothing(
        settings: Settings, conn: psycopg.Connection[Any], make_device: MakeDevice,
        tmp_path: Path) -> None:
    ids = [make_device()[0] for _ in range(DEVICES)]
    with own_mosquitto(tmp_path) as broker, ExitStack() as stack:
        workers = [stack.enter_context(running_worker(settings.model_copy(update={
            "mqtt_host": "127.0.0.1", "mqtt_port": broker.port,
            "ingest_client_id": f"{settings.ingest_client_id}-{n}"}))) for n in range(2)]
        devices = [ProtocolDevice(d, settings.topic_root, broker.port) for d in ids]
        for device in devices:
            stack.callback(device.close)
        wait_for(lambda: all(d.client.is_connected() for d in devices), what="devices connected")

        _stream(devices, 3.0)
        broker.stop()
        streamer = threading.Thread(target=_stream, args=(devices, DOWN_S + 4.0))
        streamer.start()  # devices keep measuring while the broker is away
        time.sleep(DOWN_S)  # the outage itself, not a synchronisation
        gap = Gap(workers)
        back_up = broker.start()
        streamer.join(30)
        gap.close()

        # Devices resend until everything is acknowledged.
        def settled() -> bool:
            for device in devices:
                device.resend_overdue()
            return all(d.pending() == 0 for d in devices)

        wait_for(settled, timeout=60, what="every reading application-acked")
        generated = sum(d.tally.generated for d in devices)
        rows, distinct = conn.execute(
            "SELECT count(*), count(DISTINCT (device_id, seq)) FROM readings "
            "WHERE device_id = ANY(%s)", (ids,)).fetchone() or (0, 0)
        assert (rows, distinct) == (3 * generated, generated)
        assert count(conn, "SELECT count(*) FROM dead_letters WHERE device_id = ANY(%s)",
                     ids) == 0

        gaps = [None if t is None else round(t - back_up, 3) for t in gap.resubscribed]
        resent = sum(d.tally.resent_items for d in devices)
        # Every message a device published at QoS 1 reached the broker (paho retries until
        # PUBACK); what the workers never received, the broker dropped.
        dropped = sum(d.tally.messages for d in devices) - sum(w.counters.received
                                                                for w in workers)
        print(f"\nbroker restart: {generated} readings; workers resubscribed {gaps} s after the "
              f"broker was back; the broker dropped {dropped} messages, which only the "
              f"devices' resends recovered ({resent} items resent in all)")
        assert all(g is not None and g <= MAX_GAP_S for g in gaps), gaps
