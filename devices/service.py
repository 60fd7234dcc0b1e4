"""Registry operations: enrol citizens, register devices, hand devices over between citizens.

A pairing may be backdated (a handover recorded late). Readings and events the device sent
since then were filed under the previous holder: they are re-attributed to the new holder in
the same transaction as the move, and the move is recorded in attribution_changes. Ingest
batches hold a shared lock on pairings, so none attributes by the old pairing meanwhile.
Ending a pairing (returned to stock) over data already stored is refused: that data would
belong to no one."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from uuid import UUID

import psycopg

from core.clock import Clock, system_clock
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


def pair_device(conn: Conn, device_id: str, citizen_id: UUID, at: datetime, *,
                actor: str = "system", clock: Clock = system_clock) -> Pairing:
    """Give the device to the citizen from `at` on, ending any current pairing at that instant;
    what the device sent since `at` moves to the new holder (recorded)."""
    if repository.device_kind(conn, device_id) is None:
        raise DeviceNotFound(device_id)
    if not repository.citizen_exists(conn, citizen_id):
        raise CitizenNotFound(str(citizen_id))
    pairing = Pairing(device_id=device_id, citizen_id=citizen_id, valid_from=at)
    try:
        with conn.transaction():
            repository.lock_pairings(conn)
            previous = repository.close_open_pairing(conn, device_id, at)
            repository.insert_pairing(conn, pairing)
            if previous is not None and previous != citizen_id:
                moved = repository.reattribute(conn, device_id, previous, citizen_id, at)
                if any(moved):
                    repository.record_attribution_change(conn, device_id, previous, citizen_id,
                                                         at, moved, clock(), actor)
    except psycopg.errors.ExclusionViolation:
        raise PairingConflict(
            f"device {device_id} already has a pairing that overlaps {at.isoformat()}") from None
    return pairing


def unpair_device(conn: Conn, device_id: str, at: datetime) -> None:
    """End the device's current pairing at `at` (returned to stock); refused when readings or
    events measured since `at` are stored, which would then belong to no one."""
    if repository.device_kind(conn, device_id) is None:
        raise DeviceNotFound(device_id)
    with conn.transaction():
        repository.lock_pairings(conn)
        if repository.stored_since(conn, device_id, at):
            raise PairingConflict(f"device {device_id} has data measured since {at.isoformat()}; "
                                  "end the pairing after it, or pair the device to its holder")
        if repository.close_open_pairing(conn, device_id, at) is None:
            raise PairingConflict(f"device {device_id} has no pairing open at {at.isoformat()}")
