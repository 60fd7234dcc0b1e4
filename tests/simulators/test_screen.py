"""A simulated home screen on the real broker receives screen messages on its commands topic,
shows each id once however often it comes, and still takes acks; other devices ignore them."""

from __future__ import annotations

import json
import random
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from simulators.fleet import FleetReport, SimDevice
from simulators.groundtruth import GroundTruth
from simulators.population import build_fleet
from tests.conftest import wait_for

SEEN = {"v": 1, "type": "seen", "id": 12, "created_at": "2026-11-20T12:00:00Z",
        "text": "Your nurse has seen your measurement", "alert_id": 3,
        "data": {"metric": "spo2"}}


def _device(broker: tuple[str, int], root: str, kind: str) -> SimDevice:
    citizen = next(c for c in build_fleet(4, 1, prefix=f"q{uuid.uuid4().hex[:6]}")
                   if any(d.kind == kind for d in c.devices))
    spec = next(d for d in citizen.devices if d.kind == kind)
    sim = SimDevice(spec, citizen, root, "5", FleetReport(), threading.Lock(), random.Random(1),
                    lambda: datetime.now(UTC), GroundTruth(None, run="test"))
    subscribed = threading.Event()
    sim.client.on_subscribe = lambda *_: subscribed.set()
    sim.connect(*broker)
    assert subscribed.wait(10), "device not subscribed"
    return sim


@pytest.fixture
def telecare(broker: tuple[str, int]) -> Iterator[tuple[paho.Client, str]]:
    """Telecare's side: a client that publishes commands at QoS 1, on a topic root of its own."""
    client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    client.connect(*broker)
    client.loop_start()
    yield client, f"t{uuid.uuid4().hex[:8]}"
    client.disconnect()
    client.loop_stop()


def _send(client: paho.Client, root: str, device_id: str, payload: dict[str, Any]) -> None:
    client.publish(f"{root}/v1/{device_id}/commands", json.dumps(payload), qos=1
                   ).wait_for_publish(10)


def test_a_home_screen_shows_each_message_once_and_still_takes_acks(
        broker: tuple[str, int], telecare: tuple[paho.Client, str]) -> None:
    client, root = telecare
    sim = _device(broker, root, "home_screen")
    try:
        sim.record(datetime.now(UTC), "questionnaire_answer", {
            "questionnaire": "daily-check", "question": "more_breathless", "answer": "no"},
            is_event=True)
        for _ in range(3):  # resent: the broker's receipt was lost twice
            _send(client, root, sim.spec.id, SEEN)
        _send(client, root, sim.spec.id, {**SEEN, "id": 13, "type": "reminder"})
        _send(client, root, sim.spec.id, {"v": 1, "type": "ack", "stored": [sim.seq]})
        wait_for(lambda: (sim.spec.id, sim.seq) in sim.report.stored, 10, "the ack")
        wait_for(lambda: sim.report.screen_repeats == 2, 10, "the repeats")
    finally:
        sim.close()
    shown = sim.report.screen_messages[sim.spec.id]
    assert sorted(shown) == [12, 13]
    assert shown[12].type == "seen" and shown[12].text == SEEN["text"]
    assert shown[13].type == "reminder"
    assert not sim.pending


def test_a_device_that_is_not_a_screen_ignores_screen_messages(
        broker: tuple[str, int], telecare: tuple[paho.Client, str]) -> None:
    client, root = telecare
    sim = _device(broker, root, "bp_monitor")
    try:
        _send(client, root, sim.spec.id, SEEN)
        seq = sim.record(datetime.now(UTC), "blood_pressure",
                         {"systolic": 120.0, "diastolic": 80.0, "pulse": 70.0}, is_event=False)
        _send(client, root, sim.spec.id, {"v": 1, "type": "ack", "stored": [seq]})
        wait_for(lambda: (sim.spec.id, seq) in sim.report.stored, 10, "the ack")
    finally:
        sim.close()
    assert sim.report.screen_messages == {}
