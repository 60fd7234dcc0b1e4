"""One batch of inbound messages -> one transaction: readings, events, status, dead letters.

The caller owns the transaction and acknowledges nothing until it has committed. An ack lists
a sequence number as stored only when the table now holds that item with the same content;
an item refused for any reason is listed with the reason (and kept as a dead letter)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from uuid import UUID

from devices import dead_letters
from devices import repository as devices_repo
from devices.catalogue import check_event, metric_values
from devices.dead_letters import ITEMS_REJECTED, DeadLetter, ItemRefusal
from devices.errors import InvalidReading
from devices.models import RegisteredDevice
from devices.repository import Conn, EventRow, ReadingRow, Sighting
from ingest.clock_check import ClockCheck, check_clock, remembered, wrong_clock
from ingest.decode import Decoded, Inbound, Item, dead_letter, decode
from ingest.wire import AckCommandV1, EventV1, ReadingV1, Rejected, StatusMessageV1

CONFLICT = "conflicts_with_stored"


@dataclass(frozen=True)
class Limits:
    topic_root: str
    max_payload_bytes: int
    late_after: timedelta
    max_clock_ahead: timedelta
    # How long a message may have waited for Telecare when the worker cannot say (after a
    # start, its history is unknown): the broker keeps a session this long.
    max_transit: timedelta = timedelta(days=7)


class LastSeen:
    """Writes a device's last-seen time at most once per `every` (and at once when its clock
    verdict changes): a device that sends many messages a minute does not cost a row update
    per batch. `mark` only after the commit: a rolled-back write must be written again."""

    def __init__(self, every: timedelta = timedelta(seconds=60)) -> None:
        self._every = every
        self._written: dict[str, Sighting] = {}

    def due(self, seen: dict[str, Sighting]) -> dict[str, Sighting]:
        """The subset of `seen` worth writing now."""
        return {device: sighting for device, sighting in seen.items()
                if (last := self._written.get(device)) is None
                or sighting.seen_at - last.seen_at >= self._every
                or sighting.clock_suspect != last.clock_suspect}

    def mark(self, written: dict[str, Sighting]) -> None:
        """Remember what a committed transaction wrote."""
        self._written.update(written)


@dataclass
class BatchOutcome:
    """What one committed batch did; `acks` go to the devices once the commit is done, and
    `last_seen` is what it wrote for LastSeen.mark."""

    readings_stored: int = 0
    dead_letters: int = 0
    acks: dict[str, AckCommandV1] = field(default_factory=dict)
    last_seen: dict[str, Sighting] = field(default_factory=dict)

    def add(self, other: BatchOutcome) -> None:
        """Fold in the outcome of another commit (part of a batch stored on its own)."""
        self.readings_stored += other.readings_stored
        self.dead_letters += other.dead_letters
        self.last_seen.update(other.last_seen)
        for device_id, ack in other.acks.items():
            mine = self.acks.get(device_id)
            self.acks[device_id] = ack if mine is None else AckCommandV1(
                stored=sorted({*mine.stored, *ack.stored}),
                rejected=[*mine.rejected, *ack.rejected])


@dataclass
class _Work:
    """What a batch will write, and what each message's items came to."""

    readings: dict[tuple[str, str, datetime, int], ReadingRow] = field(default_factory=dict)
    events: dict[tuple[str, datetime, int], EventRow] = field(default_factory=dict)
    dead: list[DeadLetter] = field(default_factory=list)
    # Per message: items stored (seq) and refused; a message with refusals becomes a letter.
    stored: dict[Decoded, set[int]] = field(default_factory=lambda: defaultdict(set))
    refused: dict[Decoded, list[ItemRefusal]] = field(default_factory=lambda: defaultdict(list))
    seen: dict[str, Sighting] = field(default_factory=dict)

    def refuse(self, message: Decoded, index: int, seq: int | None, reason: str,
               detail: str) -> None:
        self.refused[message].append(ItemRefusal(index, seq, reason, detail))


def process_batch(conn: Conn, batch: list[Inbound], limits: Limits,
                  last_seen: LastSeen | None = None, *,
                  max_transit: timedelta | None = None) -> BatchOutcome:
    """Validate, attribute and write a batch inside the caller's transaction. `max_transit`
    bounds how long any message here may have waited for Telecare (judges device clocks)."""
    transit = limits.max_transit if max_transit is None else max_transit
    work = _Work()
    decoded: list[Decoded] = []
    for inbound in batch:
        result = decode(inbound, topic_root=limits.topic_root,
                        max_payload_bytes=limits.max_payload_bytes)
        if isinstance(result, DeadLetter):
            work.dead.append(result)
        elif result is not None:
            decoded.append(result)

    # Before reading pairings: a concurrent (backdated) pairing change waits for this batch.
    devices_repo.lock_pairings_shared(conn)
    registry = devices_repo.registered_devices(conn, {d.device_id for d in decoded})
    for message in decoded:
        device = registry.get(message.device_id)
        if device is None:
            work.dead.append(dead_letter(message.inbound, "unknown_device",
                                         "the device is not registered",
                                         device_id=message.device_id))
        elif message.status is not None:
            _write_status(conn, work, message, message.status, limits, transit)
        else:
            _take_items(work, message, device, limits, transit)
    return _write(conn, work, last_seen)


def _write(conn: Conn, work: _Work, last_seen: LastSeen | None) -> BatchOutcome:
    outcome = BatchOutcome()
    outcome.readings_stored, reading_conflicts = devices_repo.insert_readings(
        conn, list(work.readings.values()))
    event_conflicts = devices_repo.insert_events(conn, list(work.events.values()))
    _refuse_conflicts(work, reading_conflicts | event_conflicts)
    outcome.last_seen = last_seen.due(work.seen) if last_seen else work.seen
    devices_repo.touch_last_seen(conn, outcome.last_seen)
    for message, refusals in work.refused.items():
        work.dead.append(dead_letter(message.inbound, ITEMS_REJECTED,
                                     f"{len(refusals)} item(s) refused",
                                     device_id=message.device_id, items=tuple(refusals)))
    dead_letters.insert_dead_letters(conn, work.dead)
    outcome.dead_letters = len(work.dead)
    outcome.acks = _acks(work)
    return outcome


def _take_items(work: _Work, message: Decoded, device: RegisteredDevice, limits: Limits,
                transit: timedelta) -> None:
    received_at = message.inbound.received_at
    clock = _clock_of(message, device, transit, limits)
    # Only what this message shows is news about the clock; a remembered verdict is not.
    shown = message.sent_at is not None or message.sent_at_invalid
    _sighted(work, device.id, received_at, clock if shown else None)
    for refusal in message.refused:
        work.refused[message].append(refusal)
    for index, item in message.items:
        try:
            citizen = _attribute(device, item.measured_at, received_at, clock, limits)
            if isinstance(item, ReadingV1):
                _stage_reading(work, message, device, item, citizen, clock, limits)
            else:
                _stage_event(work, message, device, item, citizen, clock, limits)
        except InvalidReading as refused:
            work.refuse(message, index, item.seq, refused.reason, refused.detail)


def _clock_of(message: Decoded, device: RegisteredDevice, transit: timedelta,
              limits: Limits) -> ClockCheck | None:
    """What this message shows of the device clock; without a send time, what was last
    concluded (a clock found off stays suspect until a message shows it right)."""
    if message.sent_at is not None:
        return check_clock(message.sent_at, message.inbound.received_at, transit,
                           limits.max_clock_ahead)
    if message.sent_at_invalid:
        return wrong_clock()
    if device.clock_suspect and device.clock_offset_s is not None:
        return remembered(device.clock_offset_s, limits.max_clock_ahead)
    return None


def _attribute(device: RegisteredDevice, measured_at: datetime, received_at: datetime,
               clock: ClockCheck | None, limits: Limits) -> UUID:
    """The citizen an item belongs to, or InvalidReading when its time cannot be placed."""
    if clock is not None and clock.suspect:
        # The device clock is wrong beyond what transit explains: keep the item only when every
        # instant it can really have been measured at falls in the same pairing as it claims.
        earliest, latest = clock.true_time_range(measured_at)
        citizen = device.citizen_at(measured_at)
        if (measured_at > received_at + limits.max_clock_ahead or citizen is None
                or device.citizen_throughout(earliest, latest) != citizen):
            raise InvalidReading("clock_untrusted",
                                 f"device clock off by about {clock.offset_s:.0f} s; "
                                 "its time cannot be attributed (kept as a dead letter)")
        return citizen
    if measured_at > received_at + limits.max_clock_ahead:
        raise InvalidReading("measured_in_future", "measured_at is ahead of the server's clock "
                             f"by more than {limits.max_clock_ahead.total_seconds():.0f} s")
    citizen = device.citizen_at(measured_at)
    if citizen is None:
        raise InvalidReading("unpaired_device", "the device was paired to no citizen then")
    return citizen


def _delay(measured_at: datetime, sent_at: datetime | None, received_at: datetime,
           late_after: timedelta) -> tuple[bool, str | None]:
    """(late, why): held back by the device (offline), or waiting after it was sent (at the
    broker, for Telecare's own backlog); unknown when the device did not say when it sent."""
    if received_at - measured_at <= late_after:
        return False, None
    if sent_at is None:
        return True, "unknown"
    return True, "device" if sent_at - measured_at > late_after else "transit"


def _stage_reading(work: _Work, message: Decoded, device: RegisteredDevice, item: ReadingV1,
                   citizen: UUID, clock: ClockCheck | None, limits: Limits) -> None:
    triples = metric_values(device.kind, item.type, item.values)
    received_at = message.inbound.received_at
    late, cause = _delay(item.measured_at, message.sent_at, received_at, limits.late_after)
    suspect = clock is not None and clock.suspect
    rows = [ReadingRow(device.id, metric, item.measured_at, item.seq, citizen, value, received_at,
                       message.sent_at, late, cause, quality, suspect)
            for metric, value, quality in triples]
    keyed = {(row.device_id, row.metric, row.measured_at, row.seq): row for row in rows}
    for key, row in keyed.items():
        held = work.readings.get(key)
        if held is not None and held.value != row.value:
            raise InvalidReading(CONFLICT, "another reading in this batch has its identity")
    for key, row in keyed.items():
        work.readings.setdefault(key, row)
    work.stored[message].add(item.seq)


def _stage_event(work: _Work, message: Decoded, device: RegisteredDevice, item: EventV1,
                 citizen: UUID, clock: ClockCheck | None, limits: Limits) -> None:
    check_event(device.kind, item.type, item.data)
    received_at = message.inbound.received_at
    late, cause = _delay(item.measured_at, message.sent_at, received_at, limits.late_after)
    row = EventRow(device.id, item.measured_at, item.seq, item.type, citizen, received_at,
                   message.sent_at, late, cause, clock is not None and clock.suspect,
                   dict(item.data))
    key = (device.id, item.measured_at, item.seq)
    held = work.events.get(key)
    if held is not None and (held.kind, held.data) != (row.kind, row.data):
        raise InvalidReading(CONFLICT, "another event in this batch has its identity")
    work.events.setdefault(key, row)
    work.stored[message].add(item.seq)


def _write_status(conn: Conn, work: _Work, message: Decoded, status: StatusMessageV1,
                  limits: Limits, transit: timedelta) -> None:
    received_at = message.inbound.received_at
    reported_at = status.reported_at
    if reported_at is not None and reported_at > received_at + limits.max_clock_ahead:
        reported_at = None  # a time from the future is not shown; the clock check notes it
    devices_repo.upsert_status(conn, {
        "device_id": message.device_id, "online": status.online, "received_at": received_at,
        "reported_at": reported_at, "battery_pct": status.battery_pct,
        "signal_dbm": status.signal_dbm, "firmware": status.firmware,
    })
    if status.online:
        # A retained status may be old: its time says nothing about the clock now.
        clock = (None if status.reported_at is None or message.inbound.retained
                 else check_clock(status.reported_at, received_at, transit,
                                  limits.max_clock_ahead))
        _sighted(work, message.device_id, received_at, clock)


def _sighted(work: _Work, device_id: str, at: datetime, clock: ClockCheck | None) -> None:
    earlier = work.seen.get(device_id)
    if earlier is not None and earlier.seen_at > at:
        return
    if clock is None:
        offset, suspect = (None, False) if earlier is None else earlier[1:]
        work.seen[device_id] = Sighting(at, offset, suspect)
    else:
        work.seen[device_id] = Sighting(at, clock.offset_s, clock.suspect)


def _refuse_conflicts(work: _Work, conflicts: set[tuple[str, int]]) -> None:
    """Items the table already holds with other content: refused, not acknowledged."""
    if not conflicts:
        return
    for message, seqs in work.stored.items():
        for index, item in message.items:
            if (message.device_id, item.seq) in conflicts and item.seq in seqs:
                seqs.discard(item.seq)
                work.refuse(message, index, item.seq, CONFLICT,
                            "a different item with this identity is already stored")


def _acks(work: _Work) -> dict[str, AckCommandV1]:
    stored: dict[str, set[int]] = defaultdict(set)
    rejected: dict[str, list[Rejected]] = defaultdict(list)
    for message, seqs in work.stored.items():
        stored[message.device_id] |= seqs
    for message, refusals in work.refused.items():
        rejected[message.device_id].extend(Rejected.model_construct(seq=r.seq, reason=r.reason)
                                           for r in refusals if r.seq is not None)
    # Built from values this module made (no validation: one ack per device per batch).
    return {device_id: AckCommandV1.model_construct(
        stored=sorted(stored[device_id] - {r.seq for r in rejected[device_id]}),
        rejected=rejected[device_id]) for device_id in stored.keys() | rejected.keys()}


__all__ = ["BatchOutcome", "Item", "LastSeen", "Limits", "process_batch"]
