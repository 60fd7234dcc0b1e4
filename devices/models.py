"""Domain models of the registry and the time series."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from devices.catalogue import DeviceKind

# The registry's rule for device ids; the wire protocol (ingest/wire.py, which simulators use
# without importing devices) and the API state the same rule, and a test holds them equal.
DEVICE_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"


class Device(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str = Field(pattern=DEVICE_ID_PATTERN)
    kind: DeviceKind
    model: str = Field(min_length=1, max_length=100)
    serial: str = Field(min_length=1, max_length=100)


class Pairing(BaseModel):
    """The device was with the citizen from valid_from (inclusive) until valid_to (exclusive)."""

    model_config = ConfigDict(frozen=True)

    device_id: str
    citizen_id: UUID
    valid_from: AwareDatetime
    valid_to: AwareDatetime | None = None

    @model_validator(mode="after")
    def _interval_is_ordered(self) -> Pairing:
        if self.valid_to is not None and self.valid_to <= self.valid_from:
            raise ValueError("valid_to must be after valid_from")
        return self

    def covers(self, at: datetime) -> bool:
        """Whether the device was with this citizen at the given instant."""
        return self.valid_from <= at and (self.valid_to is None or at < self.valid_to)


class RegisteredDevice(BaseModel):
    """A device as ingest needs it: its kind, and every pairing it has ever had."""

    model_config = ConfigDict(frozen=True)

    id: str
    # Text as the registry holds it: a kind this version does not know must refuse the
    # device's items, not crash the reader.
    kind: str
    pairings: tuple[Pairing, ...] = ()
    # The device clock as last judged from its messages (device_status).
    clock_suspect: bool = False
    clock_offset_s: float | None = None

    def citizen_at(self, at: datetime) -> UUID | None:
        """The citizen who had the device at `at`, if any."""
        for pairing in self.pairings:
            if pairing.covers(at):
                return pairing.citizen_id
        return None

    def citizen_throughout(self, start: datetime, end: datetime) -> UUID | None:
        """The citizen who had the device during all of [start, end], if one did."""
        for pairing in self.pairings:
            if pairing.covers(start) and pairing.covers(end):
                return pairing.citizen_id
        return None

