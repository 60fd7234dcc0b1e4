"""Errors raised by the device registry and measurement validation."""

from core.errors import Conflict, InvalidInput, NotFound


class DeviceNotFound(NotFound):
    code = "device_not_found"


class CitizenNotFound(NotFound):
    code = "citizen_not_found"


class PairingConflict(Conflict):
    code = "pairing_conflict"


class InvalidReading(InvalidInput):
    """A measurement that cannot be stored; `reason` is the dead-letter reason code."""

    code = "invalid_reading"

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
