"""Runs a simulated fleet over real MQTT: one client per device, its own identity, last will,
retries until Telecare acknowledges, and faults on demand."""

from __future__ import annotations

import heapq
import json
import logging
import random
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from ingest.wire import (
    AckCommandV1,
    EventsMessageV1,
    EventV1,
    ReadingsMessageV1,
    ReadingV1,
    StatusMessageV1,
    topic,
)
from simulators.population import CitizenSpec, DeviceSpec, build_fleet, measure, plan_episodes

log = logging.getLogger(__name__)

FAULTS = ("duplicates", "offline", "clock_skew", "low_battery", "malformed")
RESEND_AFTER_S = 4.0
MALFORMED = (b"{not json", b'{"v": 1, "device_id": "%s"}', b'{"v": 2, "device_id": "%s", "readings": []}',
             b"\xff\xfe\x00garbage")


@dataclass(frozen=True)
class FleetOptions:
    citizens: int = 10
    seed: int = 1
    speed: float = 60.0  # simulated seconds per real second
    days: float | None = None  # simulate this many days up to now, then stop; None: go live
    faults: tuple[str, ...] = ()
    ground_truth: str | None = None
    prefix: str = "sim"
    backfill_days: float = 1.0


@dataclass
class FleetReport:
    """What the fleet sent and what Telecare answered, for tests and the ground truth."""

    generated: dict[tuple[str, int], tuple[str, datetime, dict[str, float]]] = field(
        default_factory=dict)
    stored: set[tuple[str, int]] = field(default_factory=set)
    rejected: dict[tuple[str, int], str] = field(default_factory=dict)
    publishes: int = 0
    malformed_sent: int = 0

    def unanswered(self) -> int:
        return len(self.generated.keys() - self.stored - self.rejected.keys())


class SimClock:
    """Simulated time from `start` at `speed`, never ahead of the real time: a device cannot
    measure in the future, so an accelerated run replays the past and then goes live."""

    def __init__(self, start: datetime, speed: float) -> None:
        self.start, self.speed = start, speed
        self._real0 = time.monotonic()

    def _simulated(self) -> datetime:
        return self.start + timedelta(seconds=(time.monotonic() - self._real0) * self.speed)

    def seconds_until(self, at: datetime) -> float:
        """Real seconds until simulated time `at`; at real speed once caught up with now."""
        simulated, real = self._simulated(), datetime.now(UTC)
        if simulated >= real:
            return max(0.0, (at - real).total_seconds())
        return max(0.0, (at - simulated).total_seconds() / self.speed)


class SimDevice:
    """One device: a paho client with its own id, pending readings, and retries."""

    def __init__(self, spec: DeviceSpec, citizen: CitizenSpec, root: str, protocol: str,
                 report: FleetReport, lock: threading.Lock, rng: random.Random) -> None:
        self.spec, self.citizen, self.root = spec, citizen, root
        self.report, self.lock, self.rng = report, lock, rng
        self.seq = 0
        self.battery = 100.0
        self.skew = timedelta(0)
        self.offline_until: datetime | None = None
        self.pending: dict[int, tuple[ReadingV1 | EventV1, float]] = {}
        v5 = protocol == "5"
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=spec.id,
                                  protocol=paho.MQTTv5 if v5 else paho.MQTTv311,
                                  clean_session=None if v5 else False)
        self.client.will_set(topic(root, spec.id, "status"), StatusMessageV1(
            v=1, device_id=spec.id, online=False).model_dump_json(), qos=1, retain=True)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self._v5 = v5

    def connect(self, host: str, port: int) -> None:
        if self._v5:
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = 3600
            self.client.connect_async(host, port, keepalive=30, clean_start=False,
                                      properties=props)
        else:
            self.client.connect_async(host, port, keepalive=30)
        self.client.loop_start()

    def _on_connect(self, client: paho.Client, *_: Any) -> None:
        client.subscribe(topic(self.root, self.spec.id, "commands"), qos=1)

    def _on_message(self, _c: paho.Client, _u: Any, msg: paho.MQTTMessage) -> None:
        ack = AckCommandV1.model_validate_json(msg.payload)
        with self.lock:
            for seq in ack.stored:
                self.pending.pop(seq, None)
                self.report.stored.add((self.spec.id, seq))
            for rejected in ack.rejected:
                self.pending.pop(rejected.seq, None)
                self.report.rejected[(self.spec.id, rejected.seq)] = rejected.reason

    def record(self, at: datetime, kind: str, values: dict[str, Any], is_event: bool) -> None:
        """A new measurement or event at simulated time `at`; sent now unless offline."""
        self.seq += 1
        device_time = at + self.skew
        item: ReadingV1 | EventV1
        if is_event:
            item = EventV1(seq=self.seq, measured_at=device_time, type=kind,
                           data=values)
        else:
            item = ReadingV1(seq=self.seq, measured_at=device_time, type=kind, values=values)
            with self.lock:
                self.report.generated[(self.spec.id, self.seq)] = (kind, device_time, values)
        with self.lock:
            self.pending[self.seq] = (item, time.monotonic())
        if self.offline_until is None:
            self.send([item])

    def send(self, items: list[ReadingV1 | EventV1], duplicate: bool = False) -> None:
        readings = [i for i in items if isinstance(i, ReadingV1)]
        events = [i for i in items if isinstance(i, EventV1)]
        if readings:
            self._publish("readings", ReadingsMessageV1(v=1, device_id=self.spec.id,
                                                        readings=readings).model_dump_json(),
                          duplicate)
        if events:
            self._publish("events", EventsMessageV1(v=1, device_id=self.spec.id,
                                                    events=events).model_dump_json(), duplicate)

    def _publish(self, channel: str, payload: str | bytes, duplicate: bool) -> None:
        for _ in range(2 if duplicate else 1):
            self.client.publish(topic(self.root, self.spec.id, channel), payload, qos=1)
            with self.lock:
                self.report.publishes += 1

    def resend_overdue(self, duplicate: bool) -> None:
        """Send again what Telecare has not acknowledged in time, oldest first, in batches."""
        if self.offline_until is not None:
            return
        now = time.monotonic()
        with self.lock:
            overdue = [(s, item) for s, (item, sent) in sorted(self.pending.items())
                       if now - sent > RESEND_AFTER_S]
            for seq, item in overdue:
                self.pending[seq] = (item, now)
        for start in range(0, len(overdue), 100):
            self.send([item for _, item in overdue[start:start + 100]], duplicate)

    def publish_status(self, at: datetime) -> None:
        self.client.publish(topic(self.root, self.spec.id, "status"), StatusMessageV1(
            v=1, device_id=self.spec.id, online=self.offline_until is None, reported_at=at,
            battery_pct=round(self.battery, 1), signal_dbm=round(-60 - 25 * self.rng.random()),
            firmware="1.4.2").model_dump_json(), qos=1, retain=True)

    def go_offline(self, until: datetime) -> None:
        self.offline_until = until
        self.client.disconnect()
        self.client.loop_stop()

    def come_back(self, host: str, port: int) -> None:
        """Reconnect and send everything held back, in scrambled order, as one batch."""
        self.offline_until = None
        self.connect(host, port)
        with self.lock:
            backlog = [item for item, _ in self.pending.values()]
        self.rng.shuffle(backlog)
        if backlog:
            self.send(backlog)

    def send_malformed(self) -> None:
        raw = self.rng.choice(MALFORMED)
        payload = raw.replace(b"%s", self.spec.id.encode()) if b"%s" in raw else raw
        self.client.publish(topic(self.root, self.spec.id, "readings"), payload, qos=1)
        with self.lock:
            self.report.malformed_sent += 1

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class Fleet:
    """Schedules every device's measurements and events on one simulated clock."""

    def __init__(self, host: str, port: int, protocol: str, root: str,
                 options: FleetOptions) -> None:
        self.options, self.host, self.port = options, host, port
        self.report = FleetReport()
        self._lock = threading.Lock()
        self.citizens = build_fleet(options.citizens, options.seed, options.prefix)
        now = datetime.now(UTC)
        span = timedelta(days=options.days if options.days is not None
                         else options.backfill_days)
        self.clock = SimClock(now - span, options.speed)
        self.end = now if options.days is not None else None
        self.episodes = plan_episodes(self.citizens, self.clock.start, now, options.seed)
        rng = random.Random(options.seed)
        self.devices = [SimDevice(d, c, root, protocol, self.report, self._lock,
                                  random.Random(rng.random()))
                        for c in self.citizens for d in c.devices]
        self._queue: list[tuple[datetime, int, int, str]] = []
        self._counter = 0
        self._apply_faults(rng)

    def _apply_faults(self, rng: random.Random) -> None:
        faults = set(self.options.faults)
        if "clock_skew" in faults and len(self.devices) > 2:
            # A clock reset days ahead (say, after a battery change): whatever it stamps later
            # than the server's now is refused as from the future; the rest lands misplaced.
            self.devices[0].skew = timedelta(days=2)
            # A clock hours behind: stored, by the time the device claims, and marked late.
            self.devices[2].skew = -timedelta(hours=3)
        if "offline" in faults and len(self.devices) > 1:
            device = self.devices[1]
            start = self.clock.start + (datetime.now(UTC) - self.clock.start) * 0.3
            self._push(start, self.devices.index(device), "offline")
        if "low_battery" in faults:
            for device in self.devices:
                device.battery = rng.uniform(8, 25)

    def _push(self, at: datetime, index: int, action: str) -> None:
        self._counter += 1
        heapq.heappush(self._queue, (at, self._counter, index, action))

    def _schedule_day(self, index: int, day: datetime) -> None:
        device = self.devices[index]
        jitter = device.rng
        for hour in device.spec.schedule:
            self._push(day + timedelta(hours=hour, minutes=jitter.gauss(0, 20)), index, "measure")
        if not device.spec.schedule:
            self._schedule_activity(index, day)
        self._push(day + timedelta(days=1), index, "next_day")
        for hour in (0, 6, 12, 18):
            self._push(day + timedelta(hours=hour), index, "status")

    def _schedule_activity(self, index: int, day: datetime) -> None:
        kind, rng = self.devices[index].spec.kind, self.devices[index].rng
        if kind == "motion_sensor":
            at = day + timedelta(hours=7)
            while at < day + timedelta(hours=22):
                self._push(at, index, "motion")
                at += timedelta(minutes=rng.uniform(20, 90))
        elif kind == "door_sensor":
            for hour in (10.0, 15.0):
                self._push(day + timedelta(hours=hour + rng.uniform(-1, 1)), index, "door")
        elif kind == "bed_sensor":
            self._push(day + timedelta(hours=7, minutes=rng.uniform(-30, 30)), index, "bed_out")
            self._push(day + timedelta(hours=22, minutes=rng.uniform(-30, 30)), index, "bed_in")
        elif kind == "emergency_button" and rng.random() < 0.05:
            self._push(day + timedelta(hours=rng.uniform(8, 21)), index, "button")

    def run(self, stop: threading.Event) -> FleetReport:
        """Connect every device, play the schedule, stop at `days` or on `stop`."""
        for device in self.devices:
            device.connect(self.host, self.port)
        first_day = self.clock.start.replace(hour=0, minute=0, second=0, microsecond=0)
        for index in range(len(self.devices)):
            self._schedule_day(index, first_day)
        last_resend = time.monotonic()
        while not stop.is_set() and self._queue:
            at, _, index, action = self._queue[0]
            if self.end is not None and at >= self.end:
                break
            if at < self.clock.start:
                heapq.heappop(self._queue)
                if action == "next_day":
                    self._schedule_day(index, at)
                continue
            wait = self.clock.seconds_until(at)
            if wait > 0:
                stop.wait(min(wait, 0.5))
            else:
                heapq.heappop(self._queue)
                self._act(index, action, at)
            if time.monotonic() - last_resend > 1.0:
                self._resend()
                last_resend = time.monotonic()
        self._drain(stop)
        self._write_ground_truth()
        for device in self.devices:
            device.close()
        return self.report

    def _resend(self) -> None:
        duplicate = "duplicates" in self.options.faults
        for device in self.devices:
            device.resend_overdue(duplicate)

    def _drain(self, stop: threading.Event, timeout_s: float = 60.0) -> None:
        """Wait until every reading is acknowledged (or refused), resending as a device would."""
        for device in self.devices:
            if device.offline_until is not None:
                device.come_back(self.host, self.port)
        deadline = time.monotonic() + timeout_s
        while self.report.unanswered() and time.monotonic() < deadline and not stop.is_set():
            stop.wait(0.5)
            self._resend()

    def _act(self, index: int, action: str, at: datetime) -> None:
        device = self.devices[index]
        faults = self.options.faults
        if action == "next_day":
            self._schedule_day(index, at)
        elif action == "status":
            device.battery = max(3.0, device.battery - (1.5 if "low_battery" in faults else 0.2))
            device.publish_status(at)
        elif action == "offline":
            device.go_offline(at + timedelta(hours=6))
            self._push(at + timedelta(hours=6), index, "online")
        elif action == "online":
            device.come_back(self.host, self.port)
        elif action == "measure":
            self._measure(device, at)
        else:
            self._event(device, action, at)
        if "malformed" in faults and device.rng.random() < 0.05:
            device.send_malformed()
        if "duplicates" in faults and action == "measure" and device.pending:
            device.resend_overdue(duplicate=True)

    def _measure(self, device: SimDevice, at: datetime) -> None:
        if device.spec.kind == "home_screen":
            answer = "yes" if any(e.progress(at) > 0.5 for e in device.citizen.episodes) else "no"
            device.record(at, "questionnaire_answer", {"questionnaire": "daily-check",
                                                       "question": "more_breathless", "answer": answer},
                          is_event=True)
            return
        shown = measure(device.citizen, device.spec.kind, at, device.rng)
        if shown is not None:
            device.record(at, shown[0], shown[1], is_event=False)

    def _event(self, device: SimDevice, action: str, at: datetime) -> None:
        inactive = any(e.kind == "inactivity" and e.progress(at) > 0
                       for e in device.citizen.episodes)
        if action == "motion" and not inactive:
            device.record(at, "motion", {}, is_event=True)
        elif action == "door":
            device.record(at, "door", {"state": "open"}, is_event=True)
            device.record(at + timedelta(seconds=40), "door", {"state": "closed"}, is_event=True)
        elif action in ("bed_in", "bed_out"):
            device.record(at, "bed", {"state": action.removeprefix("bed_")}, is_event=True)
        elif action == "button":
            device.record(at, "emergency_button", {}, is_event=True)

    def _write_ground_truth(self) -> None:
        if not self.options.ground_truth:
            return
        path = Path(self.options.ground_truth)
        path.parent.mkdir(parents=True, exist_ok=True)
        rows = [{"citizen": e.citizen, "condition": e.condition, "episode": e.kind,
                 "start": e.start.isoformat(), "end": e.end.isoformat(),
                 "devices": [d.id for c in self.citizens if c.key == e.citizen
                             for d in c.devices]} for e in self.episodes]
        path.write_text(json.dumps(rows, indent=2) + "\n")


def run_fleet(settings: Any, options: FleetOptions, stop: threading.Event) -> FleetReport:
    """Run a fleet against the configured broker (used by `telecare simulate` and the demo)."""
    fleet = Fleet(settings.mqtt_host or "127.0.0.1", settings.mqtt_port, settings.mqtt_protocol,
                  settings.topic_root, options)
    report = fleet.run(stop)
    log.info("fleet done: %d readings generated; %d readings and events acknowledged as stored, "
             "%d refused, %d readings unanswered; "
             "%d publishes", len(report.generated), len(report.stored), len(report.rejected),
             report.unanswered(), report.publishes)
    return report
