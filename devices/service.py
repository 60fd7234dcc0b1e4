"""Registry operations: enrol citizens, register devices, hand devices over between citizens."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from uuid import UUID

import psycopg

from devices import repository
from devices.errors import CitizenNotFound, DeviceNotFound, PairingConflict
from devices.models import Device, Pairing
from devices.repository import Conn


def enrol_citizen(conn: Conn, display_name: str, conditions: Sequence[str] = ()) -> UUID:
    """Create a citizen record and return its id."""
    return repository.insert_citizen(conn, display_name, conditions)


def register_device(conn: Conn, device: Device) -> None:
    """Add a device to the registry; a known id or serial is a conflict."""
    try:
        with conn.transaction():
            repository.insert_device(conn, device)
    except psycopg.errors.UniqueViolation:
        raise PairingConflict(f"device {device.id} or serial {device.serial} exists") from None


def pair_device(conn: Conn, device_id: str, citizen_id: UUID, at: datetime) -> Pairing:
    """Give the device to the citizen from `at` on, ending any current pairing at that instant."""
    if repository.device_kind(conn, device_id) is None:
        raise DeviceNotFound(device_id)
    if not repository.citizen_exists(conn, citizen_id):
        raise CitizenNotFound(str(citizen_id))
    pairing = Pairing(device_id=device_id, citizen_id=citizen_id, valid_from=at)
    try:
        with conn.transaction():
            repository.close_open_pairing(conn, device_id, at)
            repository.insert_pairing(conn, pairing)
    except psycopg.errors.ExclusionViolation:
        raise PairingConflict(
            f"device {device_id} already has a pairing that overlaps {at.isoformat()}") from None
    return pairing


def unpair_device(conn: Conn, device_id: str, at: datetime) -> None:
    """End the device's current pairing at `at` (returned to stock)."""
    if repository.device_kind(conn, device_id) is None:
        raise DeviceNotFound(device_id)
    repository.close_open_pairing(conn, device_id, at)
