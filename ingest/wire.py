"""Device protocol v1: topics and versioned JSON payloads, as devices send and receive them.

This module is the protocol's single source of truth: docs/schema/*.json is generated from it,
and the simulators import it, so devices and ingest cannot drift apart.

The models are strict: nothing is coerced from the wire (no "97" for 97, no true for 1, no
Unix number for a time). Ingest validates a message in two steps, the envelope first and then
each item on its own, so one bad item is refused by its sequence number while the others are
stored; `READINGS_ENVELOPE` and `EVENTS_ENVELOPE` are the first step."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, RootModel, WithJsonSchema

DEVICE_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
SEQ_MAX = 2**63 - 1
# The two limits agree: a reading of the largest size these models allow takes under 1 KiB
# as JSON, so MAX_ITEMS_PER_MESSAGE of them always fit in MAX_PAYLOAD_BYTES (the wire tests
# build that worst case). Events with long texts can be larger, so a device splits a backlog
# by both: at most MAX_ITEMS_PER_MESSAGE items and at most MAX_PAYLOAD_BYTES per message.
MAX_PAYLOAD_BYTES = 256 * 1024
MAX_ITEMS_PER_MESSAGE = 200
# Earlier than this no device clock can be right; later than the server's clock allows is
# judged against the receive time by ingest (the clock limits).
EARLIEST_DEVICE_TIME = datetime(2000, 1, 1, tzinfo=UTC)

_RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,9})?"
    r"(?:[Zz]|[+-][0-9]{2}:[0-9]{2})")


def parse_wire_time(value: object) -> datetime:
    """An RFC 3339 text with a UTC offset, as UTC; anything else (a number, digits, no offset)
    is refused. An aware datetime passes too: JSON cannot produce one, so only code that builds
    a message (a simulator) gives one."""
    if isinstance(value, datetime) and value.tzinfo is not None:
        return _not_too_early(value.astimezone(UTC))
    if not isinstance(value, str) or _RFC3339.fullmatch(value) is None:
        raise ValueError("must be an RFC 3339 time with a UTC offset, e.g. "
                         "2026-11-23T07:12:00+01:00")
    try:
        # The pattern admits only RFC 3339, which fromisoformat reads (digits past the
        # microseconds are dropped) but for a lower-case zone letter.
        moment = datetime.fromisoformat(value if value[-1] != "z" else value[:-1] + "Z")
        moment = moment.astimezone(UTC)
    except (ValueError, OverflowError):
        raise ValueError("not a valid calendar time") from None
    return _not_too_early(moment)


def _not_too_early(moment: datetime) -> datetime:
    if moment < EARLIEST_DEVICE_TIME:
        raise ValueError(f"earlier than {EARLIEST_DEVICE_TIME.date()}: no device clock is right")
    return moment


def _exactly_one(value: object) -> object:
    # Strict mode still lets `true` pass for the literal 1.
    if type(value) is not int:
        raise ValueError("v must be the integer 1")
    return value


Version = Annotated[Literal[1], BeforeValidator(_exactly_one)]
WireTime = Annotated[
    datetime, BeforeValidator(parse_wire_time),
    WithJsonSchema({"type": "string", "format": "date-time",
                    "description": "RFC 3339 with a UTC offset"})]
DeviceId = Annotated[str, Field(pattern=DEVICE_ID_PATTERN)]
Seq = Annotated[int, Field(ge=0, le=SEQ_MAX,
                           description="The device's sequence number: one counter per device "
                           "across readings and events, kept across restarts")]
Name = Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_]{0,31}$")]
Number = Annotated[float, Field(allow_inf_nan=False)]
Text = Annotated[str, Field(max_length=200)]


class _Wire(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


class ReadingV1(_Wire):
    """One measurement: e.g. a blood pressure with its systolic, diastolic and pulse values."""

    seq: Seq
    measured_at: WireTime = Field(description="Device clock, RFC 3339 with offset")
    type: str = Field(max_length=64, description="Measurement type from the catalogue")
    values: dict[Name, Number] = Field(
        min_length=1, max_length=8, description="Named values in the catalogue's UCUM units")


class _Envelope(_Wire):
    v: Version
    device_id: DeviceId
    sent_at: WireTime | None = Field(
        default=None, description="Device clock when this attempt was sent (set anew on every "
        "resend): tells a reading the device held back from one that waited at the server, "
        "and lets Telecare check the device's clock. One that cannot be read (or is before "
        "2000) marks the clock as wrong: the items are answered, not the envelope refused")


class ReadingsMessageV1(_Envelope):
    """Published on {root}/v1/{device_id}/readings; one reading or a batch of them."""

    readings: list[ReadingV1] = Field(min_length=1, max_length=MAX_ITEMS_PER_MESSAGE)


EventType = Literal["emergency_button", "motion", "door", "bed", "questionnaire_answer"]


class EventV1(_Wire):
    """Something that happened: button press, sensor event, screen answer."""

    seq: Seq
    measured_at: WireTime
    type: EventType
    # int before float: a whole number is kept exactly, not rounded through a float.
    data: dict[Name, Text | bool | Annotated[int, Field(ge=-SEQ_MAX, le=SEQ_MAX)] | Number] = Field(
        default_factory=dict, max_length=16)


class EventsMessageV1(_Envelope):
    """Published on {root}/v1/{device_id}/events."""

    events: list[EventV1] = Field(min_length=1, max_length=MAX_ITEMS_PER_MESSAGE)


class StatusMessageV1(_Wire):
    """Published retained on {root}/v1/{device_id}/status; also the device's MQTT last will
    (then only {"v": 1, "device_id": ..., "online": false})."""

    v: Version
    device_id: DeviceId
    online: bool
    reported_at: WireTime | None = None
    battery_pct: Number | None = Field(default=None, ge=0, le=100)
    signal_dbm: Number | None = Field(default=None, ge=-150, le=0)
    firmware: str | None = Field(default=None, max_length=64)


class Rejected(_Wire):
    seq: Seq
    reason: str


class AckCommandV1(_Wire):
    """Sent by Telecare on {root}/v1/{device_id}/commands after the database commit.
    `stored`: sequence numbers now safely stored (including ones stored before with the same
    content); `rejected`: ones that will never be stored, with the reason. Retry anything in
    neither."""

    v: Literal[1] = 1
    type: Literal["ack"] = "ack"
    stored: list[int]
    rejected: list[Rejected] = Field(default_factory=list)


ScreenMessageType = Literal["seen", "reminder", "message"]


class ScreenMessageCommandV1(_Wire):
    """Sent by Telecare on {root}/v1/{screen_id}/commands to a citizen's home screen, at QoS 1:
    `seen` (the nurse has seen a measurement), `reminder` (a measurement is missing), `message`
    (from the care team). Delivery is at least once: a screen shows a given `id` once."""

    v: Literal[1] = 1
    type: ScreenMessageType
    id: int = Field(ge=1, le=SEQ_MAX, description="Telecare's message id; the same on a resend")
    created_at: WireTime = Field(description="When Telecare wrote the message")
    text: str | None = Field(default=None, max_length=500, description="What the screen shows")
    alert_id: int | None = Field(default=None, ge=1, le=SEQ_MAX)
    data: dict[Name, Text | bool | Annotated[int, Field(ge=-SEQ_MAX, le=SEQ_MAX)] | Number] = Field(
        default_factory=dict, max_length=16,
        description="Details for the screen: e.g. the metric and measured time a `seen` is "
        "about, or the metric a `reminder` asks for")


class CommandV1(RootModel[Annotated[AckCommandV1 | ScreenMessageCommandV1,
                                    Field(discriminator="type")]]):
    """Any message on {root}/v1/{device_id}/commands, told apart by `type`: `ack` (to every
    device) or a screen message (`seen`, `reminder`, `message`; home screens only)."""

    model_config = ConfigDict(frozen=True, strict=True)


# Step one of decoding: the envelope, with the items and the send time still raw JSON (a
# wrong clock must not cost the device its answers).
class _RawEnvelope(_Wire):
    v: Version
    device_id: DeviceId
    sent_at: Any = None


class ReadingsEnvelope(_RawEnvelope):
    readings: list[Any] = Field(min_length=1, max_length=MAX_ITEMS_PER_MESSAGE)


class EventsEnvelope(_RawEnvelope):
    events: list[Any] = Field(min_length=1, max_length=MAX_ITEMS_PER_MESSAGE)


Channel = Literal["readings", "events", "status"]
CHANNELS: tuple[Channel, ...] = ("readings", "events", "status")
COMMANDS = "commands"


def topic(root: str, device_id: str, channel: str) -> str:
    """The topic a device publishes `channel` on (or receives commands on)."""
    return f"{root}/v1/{device_id}/{channel}"


def parse_topic(root: str, name: str) -> tuple[str, Channel] | None:
    """(device_id, channel) of an inbound topic, or None when it is not one of ours."""
    parts = name.split("/")
    if len(parts) != 4 or parts[0] != root or parts[1] != "v1":
        return None
    channel = parts[3]
    if channel not in CHANNELS or not re.fullmatch(DEVICE_ID_PATTERN[1:-1], parts[2]):
        return None
    return parts[2], channel


def is_downlink(root: str, name: str) -> bool:
    """Whether `name` is a commands topic: Telecare's own downlink, never ingested."""
    parts = name.split("/")
    return len(parts) == 4 and parts[0] == root and parts[1] == "v1" and parts[3] == COMMANDS


PAYLOAD_MODELS: dict[str, type[BaseModel]] = {
    "readings": ReadingsMessageV1,
    "events": EventsMessageV1,
    "status": StatusMessageV1,
    "commands": CommandV1,
}
ENVELOPES: dict[Channel, type[_Wire]] = {
    "readings": ReadingsEnvelope,
    "events": EventsEnvelope,
    "status": StatusMessageV1,
}
ITEM_MODELS: dict[Channel, type[_Wire]] = {"readings": ReadingV1, "events": EventV1}
