"""One batch of inbound messages -> one transaction: readings, events, status, dead letters.

The caller owns the transaction and acknowledges nothing until it has committed."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import TypeVar
from uuid import UUID

from devices import dead_letters
from devices import repository as devices_repo
from devices.catalogue import check_event, metric_values
from devices.dead_letters import DeadLetter
from devices.errors import InvalidReading
from devices.models import RegisteredDevice
from devices.repository import Conn, EventTuple, ReadingTuple
from ingest.decode import Decoded, Inbound, dead_letter, decode
from ingest.wire import (
    AckCommandV1,
    EventsMessageV1,
    ReadingsMessageV1,
    Rejected,
    StatusMessageV1,
)

T = TypeVar("T")


@dataclass(frozen=True)
class Limits:
    topic_root: str
    max_payload_bytes: int
    late_after: timedelta
    max_clock_ahead: timedelta


class LastSeen:
    """Writes a device's last-seen time at most once per `every`: a device that sends many
    messages a minute does not cost a row update per batch."""

    def __init__(self, every: timedelta = timedelta(seconds=60)) -> None:
        self._every = every
        self._written: dict[str, datetime] = {}

    def due(self, seen: dict[str, datetime]) -> dict[str, datetime]:
        """The subset of `seen` worth writing now; remembered as written."""
        due = {d: t for d, t in seen.items()
               if d not in self._written or t - self._written[d] >= self._every}
        self._written.update(due)
        return due


@dataclass
class BatchOutcome:
    """What one committed batch did; `acks` go to the devices once the commit is done."""

    readings_stored: int = 0
    dead_letters: int = 0
    acks: dict[str, AckCommandV1] = field(default_factory=dict)

    def add(self, other: BatchOutcome) -> None:
        """Fold in the outcome of another commit (a batch stored message by message)."""
        self.readings_stored += other.readings_stored
        self.dead_letters += other.dead_letters
        for device_id, ack in other.acks.items():
            mine = self.acks.get(device_id)
            self.acks[device_id] = ack if mine is None else AckCommandV1(
                stored=sorted({*mine.stored, *ack.stored}),
                rejected=[*mine.rejected, *ack.rejected])


@dataclass
class _Work:
    readings: list[ReadingTuple] = field(default_factory=list)
    events: list[EventTuple] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    stored: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    rejected: dict[str, list[Rejected]] = field(default_factory=lambda: defaultdict(list))


def process_batch(conn: Conn, batch: list[Inbound], limits: Limits,
                  last_seen: LastSeen | None = None) -> BatchOutcome:
    """Validate, attribute and write a batch inside the caller's transaction."""
    work = _Work()
    decoded: list[Decoded] = []
    for inbound in batch:
        result = decode(inbound, topic_root=limits.topic_root,
                        max_payload_bytes=limits.max_payload_bytes)
        if isinstance(result, DeadLetter):
            work.dead.append(result)
        else:
            decoded.append(result)

    registry = devices_repo.registered_devices(conn, {d.device_id for d in decoded})
    seen: dict[str, datetime] = {}
    for item in decoded:
        device = registry.get(item.device_id)
        if device is None:
            work.dead.append(dead_letter(item.inbound, "unknown_device",
                                         f"device {item.device_id!r} is not registered",
                                         device_id=item.device_id))
            continue
        seen[device.id] = max(item.inbound.received_at, seen.get(device.id, item.inbound.received_at))
        message = item.message
        if isinstance(message, ReadingsMessageV1):
            _take_readings(work, item, message, device, limits)
        elif isinstance(message, EventsMessageV1):
            _take_events(work, item, message, device, limits)
        else:
            _write_status(conn, item, message)

    outcome = BatchOutcome()
    outcome.readings_stored = devices_repo.insert_readings(conn, work.readings)
    devices_repo.insert_events(conn, work.events)
    devices_repo.touch_last_seen(conn, last_seen.due(seen) if last_seen else seen)
    dead_letters.insert_dead_letters(conn, work.dead)
    outcome.dead_letters = len(work.dead)
    for device_id in work.stored.keys() | work.rejected.keys():
        outcome.acks[device_id] = AckCommandV1(stored=sorted(set(work.stored.get(device_id, []))),
                                               rejected=work.rejected.get(device_id, []))
    return outcome


def _accept(work: _Work, item: Decoded, device: RegisteredDevice, seq: int,
            measured_at: datetime, limits: Limits,
            check: Callable[[], T]) -> tuple[UUID, bool, T] | None:
    """(citizen, late, what `check` returned) for a reading or event that may be stored;
    None after recording why it may not (clock ahead, no pairing, or `check` refused it)."""
    received_at = item.inbound.received_at
    if measured_at > received_at + limits.max_clock_ahead:
        _reject(work, item, seq, "measured_in_future",
                f"measured_at {measured_at} is ahead of received_at {received_at.isoformat()}")
        return None
    citizen = device.citizen_at(measured_at)
    if citizen is None:
        _reject(work, item, seq, "unpaired_device",
                f"device {device.id} was not paired to a citizen at {measured_at}")
        return None
    try:
        checked = check()
    except InvalidReading as exc:
        _reject(work, item, seq, exc.reason, exc.detail)
        return None
    work.stored[device.id].append(seq)
    return citizen, received_at - measured_at > limits.late_after, checked


def _take_readings(work: _Work, item: Decoded, message: ReadingsMessageV1,
                   device: RegisteredDevice, limits: Limits) -> None:
    received_at = item.inbound.received_at
    for reading in message.readings:
        accepted = _accept(work, item, device, reading.seq, reading.measured_at, limits,
                           partial(metric_values, device.kind, reading.type, reading.values))
        if accepted is not None:
            citizen, late, pairs = accepted
            work.readings.extend((device.id, metric, reading.measured_at, citizen, value,
                                  reading.seq, received_at, late) for metric, value in pairs)


def _take_events(work: _Work, item: Decoded, message: EventsMessageV1,
                 device: RegisteredDevice, limits: Limits) -> None:
    received_at = item.inbound.received_at
    for event in message.events:
        accepted = _accept(work, item, device, event.seq, event.measured_at, limits,
                           partial(check_event, device.kind, event.type, event.data))
        if accepted is not None:
            citizen, late, _ = accepted
            work.events.append((device.id, event.type, event.measured_at, citizen, event.seq,
                                received_at, late, dict(event.data)))


def _write_status(conn: Conn, item: Decoded, message: StatusMessageV1) -> None:
    devices_repo.upsert_status(conn, {
        "device_id": item.device_id, "online": message.online,
        "seen": item.inbound.received_at,
        "reported_at": message.reported_at or item.inbound.received_at,
        "battery_pct": message.battery_pct, "signal_dbm": message.signal_dbm,
        "firmware": message.firmware,
    })


def _reject(work: _Work, item: Decoded, seq: int, reason: str, detail: str) -> None:
    work.dead.append(dead_letter(item.inbound, reason, detail, device_id=item.device_id, seq=seq))
    work.rejected[item.device_id].append(Rejected(seq=seq, reason=reason))
