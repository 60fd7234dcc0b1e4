"""Device protocol v1: topics and versioned JSON payloads, as devices send and receive them.

This module is the protocol's single source of truth: docs/schema/*.json is generated from it,
and the simulators import it, so devices and ingest cannot drift apart."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

DEVICE_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
MAX_ITEMS_PER_MESSAGE = 1000
SEQ_MAX = 2**63 - 1

DeviceId = Annotated[str, Field(pattern=DEVICE_ID_PATTERN)]
Seq = Annotated[int, Field(ge=0, le=SEQ_MAX, description="Device's sequence number")]


class _Wire(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ReadingV1(_Wire):
    """One measurement: e.g. a blood pressure with its systolic, diastolic and pulse values."""

    seq: Seq
    measured_at: AwareDatetime = Field(description="Device clock, RFC 3339 with offset")
    type: str = Field(max_length=64, description="Measurement type from the catalogue")
    values: dict[str, Annotated[float, Field(allow_inf_nan=False)]] = Field(
        min_length=1, max_length=8, description="Named values in the catalogue's UCUM units")


class ReadingsMessageV1(_Wire):
    """Published on {root}/v1/{device_id}/readings; one reading or a batch of them."""

    v: Literal[1]
    device_id: DeviceId
    readings: list[ReadingV1] = Field(min_length=1, max_length=MAX_ITEMS_PER_MESSAGE)


class EventV1(_Wire):
    """Something that happened: button press, sensor event, screen answer."""

    seq: Seq
    measured_at: AwareDatetime
    type: Literal["emergency_button", "motion", "door", "bed", "questionnaire_answer"]
    data: dict[str, str | float | bool] = Field(default_factory=dict, max_length=16)


class EventsMessageV1(_Wire):
    """Published on {root}/v1/{device_id}/events."""

    v: Literal[1]
    device_id: DeviceId
    events: list[EventV1] = Field(min_length=1, max_length=MAX_ITEMS_PER_MESSAGE)


class StatusMessageV1(_Wire):
    """Published retained on {root}/v1/{device_id}/status; also the device's MQTT last will
    (then only {"v": 1, "device_id": ..., "online": false})."""

    v: Literal[1]
    device_id: DeviceId
    online: bool
    reported_at: AwareDatetime | None = None
    battery_pct: float | None = Field(default=None, ge=0, le=100)
    signal_dbm: float | None = Field(default=None, ge=-150, le=0)
    firmware: str | None = Field(default=None, max_length=64)


class Rejected(_Wire):
    seq: Seq
    reason: str


class AckCommandV1(_Wire):
    """Sent by Telecare on {root}/v1/{device_id}/commands after the database commit.
    `stored`: sequence numbers now safely stored (including ones stored before);
    `rejected`: ones that will never be stored, with the reason. Retry anything in neither."""

    v: Literal[1] = 1
    type: Literal["ack"] = "ack"
    stored: list[int]
    rejected: list[Rejected] = Field(default_factory=list)


Channel = Literal["readings", "events", "status"]
CHANNELS: tuple[Channel, ...] = ("readings", "events", "status")


def topic(root: str, device_id: str, channel: str) -> str:
    """The topic a device publishes `channel` on (or receives commands on)."""
    return f"{root}/v1/{device_id}/{channel}"


def parse_topic(root: str, name: str) -> tuple[str, Channel] | None:
    """(device_id, channel) of an inbound topic, or None when it is not one of ours."""
    parts = name.split("/")
    if len(parts) != 4 or parts[0] != root or parts[1] != "v1":
        return None
    channel = parts[3]
    if channel not in CHANNELS:
        return None
    return parts[2], channel


PAYLOAD_MODELS: dict[str, type[BaseModel]] = {
    "readings": ReadingsMessageV1,
    "events": EventsMessageV1,
    "status": StatusMessageV1,
    "commands": AckCommandV1,
}
