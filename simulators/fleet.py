"""Runs a simulated fleet over real MQTT: one client per device, its own identity, last will,
retries until Telecare acknowledges, and faults on demand.

The fleet replays the recent past at `speed` and then either stops (`days`) or goes live at
real speed, planning episodes, measurements and outages day by day as it goes, and writing
the ground truth as it plans and injects them."""

from __future__ import annotations

import heapq
import logging
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from pydantic import ValidationError

from ingest.wire import (
    AckCommandV1,
    CommandV1,
    EventV1,
    ReadingV1,
    ScreenMessageCommandV1,
    StatusMessageV1,
    topic,
)
from simulators.faults import (
    DUPLICATE_SHARE,
    FAULTS,
    MALFORMED_SHARE,
    SENSOR_FAULT_SHARE,
    clock_skews,
    outages,
    sensor_glitch,
)
from simulators.groundtruth import GroundTruth
from simulators.outbox import Item, pack, wire_time
from simulators.population import (
    CitizenSpec,
    DeviceSpec,
    Episode,
    build_fleet,
    day_plan,
    measure,
    plan_episodes,
    screen_answer,
)
from simulators.streams import at_local, keyed, local_date

__all__ = ["FAULTS", "Fleet", "FleetOptions", "FleetReport", "run_fleet"]

log = logging.getLogger(__name__)

RESEND_AFTER_S = 4.0
MALFORMED = (b"{not json", b'{"v": 1, "device_id": "%s"}', b'{"v": 2, "device_id": "%s", "readings": []}',
             b"\xff\xfe\x00garbage")
EVENTS: dict[str, tuple[str, dict[str, str]]] = {
    "motion": ("motion", {}), "door_open": ("door", {"state": "open"}),
    "door_closed": ("door", {"state": "closed"}), "bed_in": ("bed", {"state": "in"}),
    "bed_out": ("bed", {"state": "out"}), "button": ("emergency_button", {})}
STATUS_HOURS = (0.0, 6.0, 12.0, 18.0)


@dataclass(frozen=True)
class FleetOptions:
    citizens: int = 10
    seed: int = 1
    speed: float = 60.0  # simulated seconds per real second
    days: float | None = None  # simulate this many days up to now, then stop; None: go live
    faults: tuple[str, ...] = ()
    ground_truth: str | None = None  # JSON lines, appended as the run goes
    prefix: str = "sim"
    backfill_days: float = 1.0
    # Simulator citizen key -> registry citizen id, copied into the ground truth when known.
    citizen_ids: Mapping[str, str] | None = None


@dataclass
class FleetReport:
    """What the fleet sent and what Telecare answered, for tests and the ground truth."""

    generated: dict[tuple[str, int], tuple[str, datetime, dict[str, float]]] = field(
        default_factory=dict)
    stored: set[tuple[str, int]] = field(default_factory=set)
    rejected: dict[tuple[str, int], str] = field(default_factory=dict)
    publishes: int = 0
    malformed_sent: int = 0
    duplicates_sent: int = 0
    glitches: set[tuple[str, int]] = field(default_factory=set)
    # What each home screen showed, by message id (each once), and how many resends it
    # recognised and did not show again.
    screen_messages: dict[str, dict[int, ScreenMessageCommandV1]] = field(default_factory=dict)
    screen_repeats: int = 0

    def unanswered(self) -> int:
        return len(self.generated.keys() - self.stored - self.rejected.keys())


class SimClock:
    """Simulated time from `start` at `speed`, never ahead of the real time: a device cannot
    measure in the future, so an accelerated run replays the past and then goes live."""

    def __init__(self, start: datetime, speed: float, wall: Callable[[], datetime]) -> None:
        self.start, self.speed, self.wall = start, speed, wall
        self._real0 = time.monotonic()

    def now(self) -> datetime:
        simulated = self.start + timedelta(seconds=(time.monotonic() - self._real0) * self.speed)
        return min(simulated, self.wall())

    def seconds_until(self, at: datetime) -> float:
        """Real seconds until simulated time `at`; at real speed once caught up with now."""
        simulated = self.start + timedelta(seconds=(time.monotonic() - self._real0) * self.speed)
        real = self.wall()
        if simulated >= real:
            return max(0.0, (at - real).total_seconds())
        return max(0.0, (at - simulated).total_seconds() / self.speed)


class SimDevice:
    """One device: a paho client with its own id, pending items, and retries."""

    def __init__(self, spec: DeviceSpec, citizen: CitizenSpec, root: str, protocol: str,
                 report: FleetReport, lock: threading.Lock, rng: random.Random,
                 wall: Callable[[], datetime], truth: GroundTruth) -> None:
        self.spec, self.citizen, self.root = spec, citizen, root
        self.report, self.lock, self.rng, self.wall, self.truth = report, lock, rng, wall, truth
        self.seq = 0
        self.battery = 100.0
        self.skew = timedelta(0)
        self.duplicates = False
        self.resend_after_s = RESEND_AFTER_S
        self.offline_until: datetime | None = None
        self.pending: dict[int, tuple[Item, float]] = {}
        v5 = protocol == "5"
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=spec.id,
                                  protocol=paho.MQTTv5 if v5 else paho.MQTTv311,
                                  clean_session=None if v5 else False)
        self.client.will_set(topic(root, spec.id, "status"), StatusMessageV1(
            v=1, device_id=spec.id, online=False).model_dump_json(), qos=1, retain=True)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self._v5 = v5

    def device_clock(self) -> datetime:
        """What the device's own clock shows now (real time plus any injected skew): a
        replayed backlog looks to Telecare like readings a device kept and sent late."""
        return self.wall() + self.skew

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
        try:
            command = CommandV1.model_validate_json(msg.payload).root
        except ValidationError:
            log.warning("device %s: unreadable command ignored", self.spec.id)
            return
        if isinstance(command, ScreenMessageCommandV1):
            self._show(command)
        else:
            self._acknowledged(command)

    def _show(self, message: ScreenMessageCommandV1) -> None:
        """A home screen shows each message once: Telecare resends until the broker has it."""
        if self.spec.kind != "home_screen":
            log.warning("device %s: screen message %d to a %s ignored", self.spec.id,
                        message.id, self.spec.kind)
            return
        with self.lock:
            shown = self.report.screen_messages.setdefault(self.spec.id, {})
            if message.id in shown:
                self.report.screen_repeats += 1
                return
            shown[message.id] = message
        log.debug("screen %s shows %s message %d", self.spec.id, message.type, message.id)

    def _acknowledged(self, ack: AckCommandV1) -> None:
        with self.lock:
            for seq in ack.stored:
                self.pending.pop(seq, None)
                self.report.stored.add((self.spec.id, seq))
            for rejected in ack.rejected:  # final: never sent again
                self.pending.pop(rejected.seq, None)
                self.report.rejected[(self.spec.id, rejected.seq)] = rejected.reason

    def record(self, at: datetime, kind: str, values: Mapping[str, Any], is_event: bool) -> int:
        """A new measurement or event at simulated time `at`, stamped by the device's clock;
        sent now unless offline. Returns its sequence number."""
        self.seq += 1
        fields = {"seq": self.seq, "measured_at": wire_time(at + self.skew), "type": kind}
        item: Item
        if is_event:
            item = EventV1.model_validate({**fields, "data": dict(values)})
        else:
            item = ReadingV1.model_validate({**fields, "values": dict(values)})
            with self.lock:
                self.report.generated[(self.spec.id, self.seq)] = (kind, item.measured_at,
                                                                   dict(values))
        with self.lock:
            self.pending[self.seq] = (item, time.monotonic())
        if self.offline_until is None:
            self.send([item])
        return self.seq

    def send(self, items: list[Item]) -> None:
        """Publish `items` in messages within the protocol's limits, `sent_at` set to this
        attempt's device time; sometimes twice (an ack lost, the device resends at once)."""
        sent_at = self.device_clock()
        for channel, group in (("readings", [i for i in items if isinstance(i, ReadingV1)]),
                               ("events", [i for i in items if isinstance(i, EventV1)])):
            for payload in pack(self.spec.id, sent_at, group):
                self._publish(channel, payload)
            if group and self.duplicates and self.rng.random() < DUPLICATE_SHARE:
                for payload in pack(self.spec.id, sent_at, group):
                    self._publish(channel, payload)
                with self.lock:
                    self.report.duplicates_sent += 1
                self.truth.fault("duplicate", self.spec.id, self.citizen.key, at=sent_at,
                                 seqs=[i.seq for i in group])

    def _publish(self, channel: str, payload: bytes) -> None:
        self.client.publish(topic(self.root, self.spec.id, channel), payload, qos=1)
        with self.lock:
            self.report.publishes += 1

    def resend_overdue(self) -> None:
        """Send again what Telecare has not answered in time, oldest first."""
        if self.offline_until is not None:
            return
        now = time.monotonic()
        with self.lock:
            overdue = [(s, item) for s, (item, sent) in sorted(self.pending.items())
                       if now - sent > self.resend_after_s]
            for seq, item in overdue:
                self.pending[seq] = (item, now)
        if overdue:
            self.send([item for _, item in overdue])

    def publish_status(self) -> None:
        self.client.publish(topic(self.root, self.spec.id, "status"), StatusMessageV1.model_validate({
            "v": 1, "device_id": self.spec.id, "online": self.offline_until is None,
            "reported_at": wire_time(self.device_clock()), "battery_pct": round(self.battery, 1),
            "signal_dbm": float(round(-60 - 25 * self.rng.random())), "firmware": "1.4.2",
        }).model_dump_json(exclude_none=True), qos=1, retain=True)

    def go_offline(self, until: datetime) -> None:
        self.offline_until = until
        self.client.disconnect()
        self.client.loop_stop()

    def come_back(self, host: str, port: int) -> None:
        """Reconnect and send everything held back, in scrambled order, in protocol-sized
        messages."""
        self.offline_until = None
        self.connect(host, port)
        with self.lock:
            backlog = [item for item, _ in self.pending.values()]
            now = time.monotonic()
            for seq in self.pending:
                self.pending[seq] = (self.pending[seq][0], now)
        self.rng.shuffle(backlog)
        if backlog:
            self.send(backlog)

    def send_malformed(self, at: datetime) -> None:
        index = self.rng.randrange(len(MALFORMED))
        raw = MALFORMED[index]
        payload = raw.replace(b"%s", self.spec.id.encode()) if b"%s" in raw else raw
        self.client.publish(topic(self.root, self.spec.id, "readings"), payload, qos=1)
        with self.lock:
            self.report.malformed_sent += 1
        self.truth.fault("malformed", self.spec.id, self.citizen.key, at=at, sample=index)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


Action = tuple[datetime, int, int, str, Any]


class Fleet:
    """Schedules every device's measurements and events on one simulated clock."""

    def __init__(self, host: str, port: int, protocol: str, root: str,
                 options: FleetOptions, wall: Callable[[], datetime] | None = None) -> None:
        self.options, self.host, self.port = options, host, port
        self.wall = wall or (lambda: datetime.now(UTC))
        self.report = FleetReport()
        self._lock = threading.Lock()
        self.citizens = build_fleet(options.citizens, options.seed, options.prefix)
        now = self.wall()
        span = timedelta(days=options.days if options.days is not None
                         else options.backfill_days)
        self.clock = SimClock(now - span, options.speed, self.wall)
        self.end = now if options.days is not None else None
        self.truth = GroundTruth(options.ground_truth,
                                 run=f"{options.prefix}-{options.seed}-{now:%Y%m%dT%H%M%SZ}",
                                 citizen_ids=options.citizen_ids)
        self.episodes: list[Episode] = []
        self._planned_until = self.clock.start
        rng = random.Random(options.seed)
        self.devices = [SimDevice(d, c, root, protocol, self.report, self._lock,
                                  random.Random(rng.random()), self.wall, self.truth)
                        for c in self.citizens for d in c.devices]
        self._queue: list[Action] = []
        self._counter = 0
        self._start_record()
        self._apply_faults(rng)

    def _start_record(self) -> None:
        self.truth.write({"type": "run", "seed": self.options.seed,
                          "citizens": self.options.citizens, "prefix": self.options.prefix,
                          "start": self.clock.start.isoformat(),
                          "end": self.end.isoformat() if self.end else None,
                          "speed": self.options.speed, "faults": list(self.options.faults),
                          "timezone": "Europe/Copenhagen"})
        for citizen in self.citizens:
            self.truth.citizen(citizen)

    def _apply_faults(self, rng: random.Random) -> None:
        faults = set(self.options.faults)
        if "clock_skew" in faults:
            for device_id, skew in clock_skews([d.spec.id for d in self.devices]).items():
                device = next(d for d in self.devices if d.spec.id == device_id)
                device.skew = skew
                self.truth.fault("clock_skew", device_id, device.citizen.key,
                                 skew_s=skew.total_seconds(), start=self.clock.start)
        for device in self.devices:
            device.duplicates = "duplicates" in faults
            if "low_battery" in faults:
                device.battery = rng.uniform(8, 25)
                self.truth.fault("low_battery", device.spec.id, device.citizen.key,
                                 battery_pct=round(device.battery, 1), start=self.clock.start)

    def _push(self, at: datetime, index: int, action: str, data: Any = None) -> None:
        self._counter += 1
        heapq.heappush(self._queue, (at, self._counter, index, action, data))

    def _plan_through(self, until: datetime) -> None:
        """Plan episodes up to `until` (live runs extend this day by day)."""
        if until <= self._planned_until:
            return
        by_key = {c.key: c for c in self.citizens}
        for episode in plan_episodes(self.citizens, self._planned_until, until,
                                     self.options.seed):
            self.episodes.append(episode)
            self.truth.episode(episode, by_key[episode.citizen])
        self._planned_until = until

    def _schedule_day(self, index: int, day: date) -> None:
        self._plan_through(at_local(day + timedelta(days=2), 0))
        device = self.devices[index]
        for at, action in day_plan(device.citizen, device.spec, day):
            self._push(at, index, action)
        if "offline" in self.options.faults:
            for start, end in outages(self.options.seed, device.spec.id, day):
                self._push(start, index, "offline", end)
        for hour in STATUS_HOURS:
            self._push(at_local(day, hour), index, "status")
        self._push(at_local(day + timedelta(days=1), 0), index, "next_day", day + timedelta(days=1))

    def run(self, stop: threading.Event) -> FleetReport:
        """Connect every device, play the schedule, stop at `days` or on `stop`."""
        for device in self.devices:
            device.connect(self.host, self.port)
        first_day = local_date(self.clock.start)
        for index in range(len(self.devices)):
            self._schedule_day(index, first_day)
        last_resend = time.monotonic()
        try:
            while not stop.is_set() and self._queue:
                at, _, index, action, data = self._queue[0]
                if self.end is not None and at >= self.end:
                    break
                if at < self.clock.start:
                    heapq.heappop(self._queue)
                    if action == "next_day":
                        self._schedule_day(index, data)
                    continue
                wait = self.clock.seconds_until(at)
                if wait > 0:
                    stop.wait(min(wait, 0.5))
                else:
                    heapq.heappop(self._queue)
                    self._act(index, action, at, data)
                if time.monotonic() - last_resend > 1.0:
                    self._resend()
                    last_resend = time.monotonic()
            self._drain(stop)
        finally:
            self.truth.write({"type": "stop", "at": self.clock.now().isoformat(),
                              "generated": len(self.report.generated),
                              "stored": len(self.report.stored),
                              "rejected": len(self.report.rejected),
                              "unanswered": self.report.unanswered()})
            self.truth.close()
            for device in self.devices:
                device.close()
        return self.report

    def _resend(self) -> None:
        for device in self.devices:
            device.resend_overdue()

    def _drain(self, stop: threading.Event, timeout_s: float = 60.0) -> None:
        """Wait until every reading is acknowledged (or refused), resending as a device would."""
        for device in self.devices:
            if device.offline_until is not None:
                self._back_online(device, self.clock.now())
        deadline = time.monotonic() + timeout_s
        while self.report.unanswered() and time.monotonic() < deadline and not stop.is_set():
            stop.wait(0.5)
            self._resend()

    def _back_online(self, device: SimDevice, at: datetime) -> None:
        device.come_back(self.host, self.port)
        self.truth.fault("back_online", device.spec.id, device.citizen.key, at=at)

    def _act(self, index: int, action: str, at: datetime, data: Any) -> None:
        device = self.devices[index]
        faults = self.options.faults
        if action == "next_day":
            if index == 0:  # once a simulated day: how far a killed run got
                self.truth.write({"type": "progress", "at": at.isoformat()})
            self._schedule_day(index, data)
        elif device.offline_until is not None and action not in ("online", "offline"):
            pass  # no connection: measurements are kept (record), nothing else goes out
        elif action == "status":
            device.battery = max(3.0, device.battery - (1.5 if "low_battery" in faults else 0.2))
            device.publish_status()
        elif action == "offline":
            if device.offline_until is None:
                device.go_offline(data)
                self.truth.fault("offline", device.spec.id, device.citizen.key, start=at, end=data)
                self._push(data, index, "online")
        elif action == "online":
            if device.offline_until is not None:
                self._back_online(device, at)
        elif action == "measure":
            self._measure(device, at)
        else:
            self._event(device, action, at)
        if "malformed" in faults and device.rng.random() < MALFORMED_SHARE:
            device.send_malformed(at)

    def _measure(self, device: SimDevice, at: datetime) -> None:
        rng = keyed(device.citizen.stream, device.spec.id, at.isoformat())
        shown = measure(device.citizen, device.spec.kind, at, rng)
        if shown is None:
            return
        mtype, values = shown
        glitch = None
        if "sensor_fault" in self.options.faults and rng.random() < SENSOR_FAULT_SHARE:
            glitch = sensor_glitch(device.spec.kind, rng)
        seq = device.record(at, mtype, glitch or values, is_event=False)
        if glitch:
            with self._lock:
                self.report.glitches.add((device.spec.id, seq))
            self.truth.fault("sensor", device.spec.id, device.citizen.key, at=at, seq=seq,
                             values=glitch)

    def _event(self, device: SimDevice, action: str, at: datetime) -> None:
        if action == "answer":
            answer = screen_answer(device.citizen, at,
                                   keyed(device.citizen.stream, device.spec.id, at.isoformat()))
            device.record(at, "questionnaire_answer", {
                "questionnaire": "daily-check", "question": "more_breathless",
                "answer": answer}, is_event=True)
        elif action in EVENTS:
            kind, data = EVENTS[action]
            device.record(at, kind, data, is_event=True)


def run_fleet(settings: Any, options: FleetOptions, stop: threading.Event) -> FleetReport:
    """Run a fleet against the configured broker (used by `telecare simulate` and the demo)."""
    fleet = Fleet(settings.mqtt_host or "127.0.0.1", settings.mqtt_port, settings.mqtt_protocol,
                  settings.topic_root, options)
    report = fleet.run(stop)
    log.info("fleet done: %d readings generated; %d readings and events acknowledged as stored, "
             "%d refused, %d readings unanswered; %d episodes planned; "
             "%d publishes", len(report.generated), len(report.stored), len(report.rejected),
             report.unanswered(), len(fleet.episodes), report.publishes)
    return report
