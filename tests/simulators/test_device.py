"""A simulated device follows the protocol on the real broker: `sent_at` from its own clock on
every attempt, a backlog split into protocol-sized messages, refusals never sent again."""

from __future__ import annotations

import json
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from ingest.wire import MAX_ITEMS_PER_MESSAGE, ReadingsMessageV1, parse_wire_time
from simulators.fleet import FleetReport, SimDevice
from simulators.groundtruth import GroundTruth
from simulators.population import build_fleet

WALL = datetime(2026, 3, 29, 12, 0, tzinfo=UTC)
BP = {"systolic": 131.0, "diastolic": 82.0, "pulse": 71.0}


class Listener:
    """Collects what a device publishes, in order; sends it commands."""

    def __init__(self, host: str, port: int, root: str, device_id: str) -> None:
        self.root, self.device_id = root, device_id
        self.messages: list[tuple[str, dict[str, Any]]] = []
        self._changed = threading.Condition()
        subscribed = threading.Event()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *_: subscribed.set()
        self.client.connect(host, port)
        self.client.loop_start()
        self.client.subscribe(f"{root}/v1/{device_id}/+", qos=1)
        assert subscribed.wait(10), "listener not subscribed"

    def _on_message(self, _c: paho.Client, _u: Any, msg: paho.MQTTMessage) -> None:
        channel = msg.topic.rsplit("/", 1)[1]
        if channel != "commands":
            with self._changed:
                self.messages.append((channel, json.loads(msg.payload)))
                self._changed.notify_all()

    def wait_for(self, count: int, channel: str = "readings") -> list[dict[str, Any]]:
        def got() -> list[dict[str, Any]]:
            return [m for c, m in self.messages if c == channel]

        with self._changed:
            assert self._changed.wait_for(lambda: len(got()) >= count, timeout=10), got()
            return got()

    def command(self, payload: dict[str, Any]) -> None:
        info = self.client.publish(f"{self.root}/v1/{self.device_id}/commands",
                                   json.dumps(payload), qos=1)
        info.wait_for_publish(10)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def device(broker: tuple[str, int]) -> Iterator[tuple[SimDevice, Listener, list[datetime]]]:
    """A simulated blood-pressure monitor with a clock 7 minutes fast, on its own topic root."""
    root = f"t{uuid.uuid4().hex[:8]}"
    citizen = next(c for c in build_fleet(5, 1, prefix=f"d{uuid.uuid4().hex[:6]}")
                   if c.condition == "hypertension")
    wall = [WALL]

    def clock() -> datetime:
        return wall[0]

    sim = SimDevice(citizen.devices[0], citizen, root, "5", FleetReport(), threading.Lock(),
                    random.Random(1), clock, GroundTruth(None, run="test"))
    sim.skew = timedelta(minutes=7)
    listener = Listener(*broker, root, sim.spec.id)
    sim.connect(*broker)
    yield sim, listener, wall
    sim.close()
    listener.close()


def _until(condition: Callable[[], bool], timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        threading.Event().wait(0.02)
    return condition()


def test_every_attempt_carries_the_device_clock_and_the_same_items(
        device: tuple[SimDevice, Listener, list[datetime]]) -> None:
    sim, listener, wall = device
    measured = WALL - timedelta(hours=1)
    sim.record(measured, "blood_pressure", BP, is_event=False)
    first = listener.wait_for(1)[0]
    wall[0] += timedelta(seconds=30)
    sim.resend_after_s = 0
    sim.resend_overdue()
    again = listener.wait_for(2)[1]
    assert first["readings"] == again["readings"]
    assert parse_wire_time(first["readings"][0]["measured_at"]) == measured + sim.skew
    assert [parse_wire_time(m["sent_at"]) for m in (first, again)] == [
        WALL + sim.skew, WALL + timedelta(seconds=30) + sim.skew]
    sim.publish_status()
    status = listener.wait_for(1, "status")[0]
    assert parse_wire_time(status["reported_at"]) == wall[0] + sim.skew


def test_a_refusal_is_final_and_a_stored_ack_ends_resending(
        device: tuple[SimDevice, Listener, list[datetime]]) -> None:
    sim, listener, _ = device
    sim.resend_after_s = 0
    for minutes in (1, 2):
        sim.record(WALL - timedelta(minutes=minutes), "blood_pressure", BP, is_event=False)
    listener.wait_for(2)
    listener.command({"v": 1, "type": "ack", "stored": [2],
                      "rejected": [{"seq": 1, "reason": "conflicts_with_stored"}]})
    assert _until(lambda: not sim.pending)
    assert sim.report.rejected == {(sim.spec.id, 1): "conflicts_with_stored"}
    assert sim.report.stored == {(sim.spec.id, 2)}
    sim.resend_overdue()
    sim.record(WALL, "blood_pressure", BP, is_event=False)
    # Per-client order is kept: a resend of 1 or 2 would arrive before 3.
    third = listener.wait_for(3)[2]
    assert [r["seq"] for r in third["readings"]] == [3]


def test_a_backlog_after_an_outage_goes_out_in_protocol_sized_messages(
        device: tuple[SimDevice, Listener, list[datetime]], broker: tuple[str, int]) -> None:
    sim, listener, _ = device
    sim.go_offline(WALL + timedelta(hours=6))
    for minute in range(450):
        sim.record(WALL - timedelta(minutes=minute), "blood_pressure", BP, is_event=False)
    sim.come_back(*broker)
    messages = [ReadingsMessageV1.model_validate(m) for m in listener.wait_for(3)]
    assert all(len(m.readings) <= MAX_ITEMS_PER_MESSAGE for m in messages)
    assert sorted(r.seq for m in messages for r in m.readings) == list(range(1, 451))
