from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import psycopg
import pytest

from devices import repository, service
from devices.errors import CitizenNotFound, DeviceNotFound, PairingConflict
from devices.models import Device

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def _device(conn: psycopg.Connection[Any]) -> str:
    device_id = f"sc-{uuid4().hex[:10]}"
    service.register_device(conn, Device(id=device_id, kind="scale", model="UC-352",  # type: ignore[arg-type]
                                         serial=device_id))
    return device_id


def test_handing_a_device_on_ends_the_first_pairing_where_the_second_begins(
        conn: psycopg.Connection[Any]) -> None:
    device_id = _device(conn)
    first = service.enrol_citizen(conn, "First")
    second = service.enrol_citizen(conn, "Second")
    service.pair_device(conn, device_id, first, T0)
    service.pair_device(conn, device_id, second, T0 + timedelta(days=30))

    registered = repository.registered_devices(conn, [device_id])[device_id]
    assert registered.citizen_at(T0 - timedelta(seconds=1)) is None
    assert registered.citizen_at(T0) == first
    assert registered.citizen_at(T0 + timedelta(days=30) - timedelta(microseconds=1)) == first
    assert registered.citizen_at(T0 + timedelta(days=30)) == second
    assert registered.citizen_at(T0 + timedelta(days=3000)) == second


def test_a_pairing_cannot_overlap_an_earlier_one(conn: psycopg.Connection[Any]) -> None:
    device_id = _device(conn)
    first = service.enrol_citizen(conn, "First")
    second = service.enrol_citizen(conn, "Second")
    service.pair_device(conn, device_id, first, T0)
    service.pair_device(conn, device_id, second, T0 + timedelta(days=30))
    with pytest.raises(PairingConflict):
        service.pair_device(conn, device_id, first, T0 + timedelta(days=10))


def test_pairing_needs_a_known_device_and_citizen(conn: psycopg.Connection[Any]) -> None:
    citizen = service.enrol_citizen(conn, "Someone")
    with pytest.raises(DeviceNotFound):
        service.pair_device(conn, "no-such-device", citizen, T0)
    with pytest.raises(CitizenNotFound):
        service.pair_device(conn, _device(conn), uuid4(), T0)


def test_a_serial_is_registered_once(conn: psycopg.Connection[Any]) -> None:
    device_id = _device(conn)
    with pytest.raises(PairingConflict):
        service.register_device(conn, Device(id=f"{device_id}x", kind="scale",  # type: ignore[arg-type]
                                             model="M", serial=device_id))


def test_ending_a_pairing_that_is_not_open_then_is_refused(conn: psycopg.Connection[Any]) -> None:
    device_id = _device(conn)
    service.pair_device(conn, device_id, service.enrol_citizen(conn, "Someone"), T0)
    with pytest.raises(PairingConflict, match="no pairing open"):
        service.unpair_device(conn, device_id, T0 - timedelta(days=1))


def test_a_pairing_change_waits_for_a_batch_that_holds_the_pairings(database: str) -> None:
    """A batch attributes by the pairings it read: a change must not commit in between."""
    import threading

    with psycopg.connect(database, autocommit=True) as batch, \
            psycopg.connect(database, autocommit=True) as desk:
        device_id = _device(desk)
        citizen = service.enrol_citizen(desk, "Holder")
        done = threading.Event()
        with batch.transaction():
            repository.lock_pairings_shared(batch)
            mover = threading.Thread(target=lambda: (service.pair_device(
                desk, device_id, citizen, T0), done.set()))
            mover.start()
            assert not done.wait(0.5), "the pairing changed while a batch held the pairings"
        mover.join(10)
        assert done.is_set()
