"""Screen messages from the outbox to a simulated home screen over the real Mosquitto: sent to
the screen paired to the citizen now, marked sent only after the broker's PUBACK, sent again
when that does not come (or the sender restarts), shown once by the screen."""

from __future__ import annotations

import random
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg
import pytest

from core.settings import Settings
from devices import service
from devices.models import Device
from ingest.screen import NO_HOME_SCREEN, ScreenSender, screen_command
from ingest.wire import CommandV1, ScreenMessageCommandV1
from simulators.fleet import FleetReport, SimDevice
from simulators.groundtruth import GroundTruth
from simulators.population import build_fleet
from tests.alerts import delivery_data as data
from tests.conftest import PAIRED_SINCE, new_device, only_on, wait_for

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
PUBACK = 4
PG = only_on("postgres")  # delivery does not depend on the storage backend


class PubackHold:
    """A proxy in front of the real broker that can withhold the broker's PUBACKs from the
    sender (the broker still has and delivers the message: only its receipt is lost)."""

    def __init__(self, broker: tuple[str, int]) -> None:
        self.broker = broker
        self.hold = False
        self.held = 0
        self._sockets: list[socket.socket] = []
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.broker)
            self._sockets += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, True), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, from_broker: bool) -> None:
        buffer = bytearray()
        while True:
            try:
                chunk = source.recv(65536)
            except OSError:
                chunk = b""
            if not chunk:
                for sock in (source, sink):
                    sock.close()
                return
            buffer += chunk
            for packet in _packets(buffer):
                if from_broker and packet[0] >> 4 == PUBACK and self.hold:
                    self.held += 1
                    continue
                try:
                    sink.sendall(packet)
                except OSError:
                    return

    def close(self) -> None:
        self._server.close()
        for sock in self._sockets:
            with suppress(OSError):
                sock.close()


def _packets(buffer: bytearray) -> Iterator[bytes]:
    """Whole MQTT packets at the start of `buffer`, consumed."""
    while len(buffer) >= 2:
        length, used, complete = 0, 0, False
        while 1 + used < len(buffer):
            byte = buffer[1 + used]
            length += (byte & 0x7F) << (7 * used)
            used += 1
            if not byte & 0x80:
                complete = True
                break
        end = 1 + used + length
        if not complete or len(buffer) < end:
            return
        yield bytes(buffer[:end])
        del buffer[:end]


@pytest.fixture
def database(fresh_database: str) -> str:
    """A database of the test's own: a sender sends whatever is unsent, and other tests of the
    session leave screen messages in the shared one."""
    return fresh_database


@pytest.fixture
def screen(settings: Settings, conn: psycopg.Connection[Any], broker: tuple[str, int]
           ) -> Iterator[tuple[SimDevice, UUID]]:
    """A simulated home screen on the real broker, registered and paired to a new citizen."""
    spec = next(c for c in build_fleet(4, 1, prefix=f"s{uuid.uuid4().hex[:6]}")
                if any(d.kind == "home_screen" for d in c.devices))
    device = next(d for d in spec.devices if d.kind == "home_screen")
    citizen = service.enrol_citizen(conn, "Test Citizen", ["copd"])
    service.register_device(conn, Device(id=device.id, kind="home_screen",  # type: ignore[arg-type]
                                         model=device.model, serial=f"S-{device.id}"))
    service.pair_device(conn, device.id, citizen, PAIRED_SINCE)
    sim = SimDevice(device, spec, settings.topic_root, "5", FleetReport(), threading.Lock(),
                    random.Random(1), lambda: datetime.now(UTC), GroundTruth(None, run="test"))
    subscribed = threading.Event()
    sim.client.on_subscribe = lambda *_: subscribed.set()
    sim.connect(*broker)
    assert subscribed.wait(10), "screen not subscribed"
    yield sim, citizen
    sim.close()


@contextmanager
def sending(settings: Settings, **kwargs: Any) -> Iterator[ScreenSender]:
    sender = ScreenSender(settings, **kwargs)
    stop = threading.Event()
    thread = threading.Thread(target=sender.run, args=(stop,), daemon=True)
    thread.start()
    try:
        assert sender.wait_connected(10), "screen sender did not connect"
        yield sender
    finally:
        stop.set()
        started = time.monotonic()
        thread.join(10)
        assert not thread.is_alive() and time.monotonic() - started < 7, "sender did not stop"


def _shown(sim: SimDevice) -> dict[int, Any]:
    return sim.report.screen_messages.get(sim.spec.id, {})


def _state(conn: psycopg.Connection[Any], message_id: int) -> tuple[Any, Any]:
    row = conn.execute("SELECT sent_at, undeliverable FROM screen_messages WHERE id = %s",
                       (message_id,)).fetchone()
    assert row is not None
    return row[0], row[1]


@PG
def test_a_seen_message_reaches_the_citizens_home_screen_once(
        settings: Settings, conn: psycopg.Connection[Any],
        screen: tuple[SimDevice, UUID]) -> None:
    sim, citizen = screen
    body = {"text": "Your nurse has seen your measurement", "metric": "spo2",
            "measured_at": NOW.isoformat()}
    with sending(settings, clock=lambda: NOW) as sender:
        written = time.monotonic()
        message = data.screen_message(conn, citizen, NOW, "seen", body)
        wait_for(lambda: message in _shown(sim), 10, "the screen to show the message")
        latency = time.monotonic() - written
        wait_for(lambda: _state(conn, message)[0] is not None, 5, "sent_at")
    shown = _shown(sim)[message]
    assert shown.type == "seen" and shown.id == message and shown.created_at == NOW
    assert shown.text == body["text"]
    assert shown.data == {"metric": "spo2", "measured_at": NOW.isoformat()}
    assert _state(conn, message) == (NOW, None)
    assert sim.report.screen_repeats == 0 and sender.sent == 1
    # Polled every second at most: no notification came with this row (none is written here).
    assert latency < 3, f"outbox -> screen took {latency:.2f} s"


@PG
def test_a_citizen_without_a_home_screen_gets_the_message_marked_undeliverable(
        settings: Settings, conn: psycopg.Connection[Any]) -> None:
    _, citizen = new_device(conn, "bp_monitor")
    message = data.screen_message(conn, citizen, NOW, "reminder", {"metric": "systolic_bp"})
    with sending(settings, clock=lambda: NOW) as sender:
        wait_for(lambda: _state(conn, message)[1] is not None, 10, "undeliverable")
    assert _state(conn, message) == (None, NO_HOME_SCREEN)
    assert sender.sent == 0 and sender.undeliverable == 1


@PG
def test_without_a_puback_the_message_stays_unsent_is_sent_again_and_shown_once(
        settings: Settings, conn: psycopg.Connection[Any], broker: tuple[str, int],
        screen: tuple[SimDevice, UUID]) -> None:
    sim, citizen = screen
    proxy = PubackHold(broker)
    proxied = settings.model_copy(update={"mqtt_port": proxy.port})
    try:
        proxy.hold = True
        with sending(proxied, clock=lambda: NOW, poll_s=0.2, puback_timeout_s=0.3):
            message = data.screen_message(conn, citizen, NOW, "message", {"text": "Call us"})
            wait_for(lambda: message in _shown(sim), 10, "the screen to show the message")
            wait_for(lambda: sim.report.screen_repeats >= 1, 10, "a resend")
            assert _state(conn, message) == (None, None), "marked sent without a PUBACK"
        assert proxy.held >= 2
        # A new sender (a restart) sends it again; now the receipt arrives.
        proxy.hold = False
        with sending(proxied, clock=lambda: NOW + timedelta(minutes=1)):
            wait_for(lambda: _state(conn, message)[0] is not None, 10, "sent_at")
    finally:
        proxy.close()
    assert _state(conn, message)[0] == NOW + timedelta(minutes=1)
    assert list(_shown(sim)) == [message]  # shown once, however often it came


@PG
def test_the_message_goes_to_the_screen_paired_now(
        settings: Settings, conn: psycopg.Connection[Any],
        screen: tuple[SimDevice, UUID]) -> None:
    sim, citizen = screen
    # The citizen's earlier screen, handed back before: never the one written to.
    old_id = f"scr-{uuid.uuid4().hex[:8]}"
    service.register_device(conn, Device(id=old_id, kind="home_screen",  # type: ignore[arg-type]
                                         model="M", serial=f"S-{old_id}"))
    service.pair_device(conn, old_id, citizen, PAIRED_SINCE - timedelta(days=300))
    conn.execute("UPDATE device_pairings SET valid = tstzrange(%s, %s) WHERE device_id = %s",
                 (PAIRED_SINCE - timedelta(days=300), PAIRED_SINCE, old_id))
    message = data.screen_message(conn, citizen, NOW, "reminder", {"text": "Weigh yourself"})
    with sending(settings, clock=lambda: NOW):
        wait_for(lambda: message in _shown(sim), 10, "the current screen to show it")


def test_a_row_becomes_the_protocol_message() -> None:
    row = {"id": 7, "kind": "reminder", "alert_id": 3, "created_at": NOW,
           "body": {"text": "Measure your weight", "metric": "body_weight", "due": 2,
                    "nested": {"dropped": True}}}
    command = screen_command(row)
    assert command.model_dump(mode="json", exclude_none=True) == {
        "v": 1, "type": "reminder", "id": 7, "created_at": "2026-11-20T12:00:00Z",
        "text": "Measure your weight", "alert_id": 3,
        "data": {"metric": "body_weight", "due": 2}}


def test_the_protocol_documents_screen_messages_the_wire_model_accepts() -> None:
    text = (Path(__file__).parents[2] / "docs" / "protocol.md").read_text()
    section = text.split("## Messages to the home screen", 1)[1].split("\n## ", 1)[0]
    examples = [block.split("```", 1)[0] for block in section.split("```json")[1:]]
    commands = [CommandV1.model_validate_json(example).root for example in examples]
    assert all(isinstance(command, ScreenMessageCommandV1) for command in commands)
    assert [command.type for command in commands] == ["seen", "reminder"]
