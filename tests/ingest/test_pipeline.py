"""The batch pipeline on the real database, without MQTT."""

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import psycopg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devices import service
from devices.repository import prepare_reading_stage
from ingest.decode import Inbound
from ingest.pipeline import BatchOutcome, Limits, process_batch
from tests.conftest import count, reading_message

NOW = datetime.now(UTC)
LIMITS = Limits(topic_root="telecare", max_payload_bytes=64 * 1024,
                late_after=timedelta(minutes=10), max_clock_ahead=timedelta(minutes=5))
MakeDevice = Callable[..., tuple[str, UUID]]


def _run(conn: psycopg.Connection[Any], *messages: tuple[str, str | bytes],
         received_at: datetime = NOW) -> BatchOutcome:
    batch = [Inbound(f"telecare/v1/{device}/readings",
                     payload.encode() if isinstance(payload, str) else payload, received_at)
             for device, payload in messages]
    prepare_reading_stage(conn)
    with conn.transaction():
        return process_batch(conn, batch, LIMITS)


def _stored(conn: psycopg.Connection[Any], device_id: str) -> int:
    return count(conn, "SELECT count(*) FROM readings WHERE device_id = %s", device_id)


def test_the_same_batch_delivered_twice_is_stored_once(conn: psycopg.Connection[Any],
                                                        make_device: MakeDevice) -> None:
    device, _ = make_device()
    message = reading_message(device, range(1, 51))
    first = _run(conn, (device, message), (device, message))
    second = _run(conn, (device, message))
    assert _stored(conn, device) == 50 * 3
    assert first.readings_stored == 150 and second.readings_stored == 0
    assert second.acks[device].stored == list(range(1, 51))  # a repeat is acknowledged again


def test_late_readings_are_stored_by_measured_time_and_marked_late(
        conn: psycopg.Connection[Any], make_device: MakeDevice) -> None:
    device, _ = make_device()
    old = NOW - timedelta(hours=6)
    _run(conn, (device, reading_message(device, [1], start=old - timedelta(seconds=1))),
         (device, reading_message(device, [2], start=NOW - timedelta(seconds=62))))
    rows = conn.execute("SELECT seq, measured_at, received_at, late FROM readings "
                        "WHERE device_id = %s AND metric = 'systolic_bp' ORDER BY seq",
                        (device,)).fetchall()
    assert [(r[0], r[3]) for r in rows] == [(1, True), (2, False)]
    assert rows[0][1] == old and rows[0][2] == NOW


def test_readings_belong_to_whoever_had_the_device_when_measured(
        conn: psycopg.Connection[Any], make_device: MakeDevice) -> None:
    device, first = make_device()
    second = service.enrol_citizen(conn, "Next Citizen")
    handover = NOW - timedelta(hours=1)
    service.pair_device(conn, device, second, handover)
    before = reading_message(device, [1], start=handover - timedelta(minutes=1, seconds=1))
    after = reading_message(device, [2], start=handover + timedelta(minutes=1, seconds=-2))
    _run(conn, (device, after), (device, before))
    owners = dict(conn.execute("SELECT seq, citizen_id FROM readings WHERE device_id = %s "
                               "AND metric = 'pulse_rate'", (device,)).fetchall())
    assert owners == {1: first, 2: second}


def test_bad_readings_are_dead_lettered_and_the_good_ones_around_them_stored(
        conn: psycopg.Connection[Any], make_device: MakeDevice) -> None:
    device, _ = make_device()
    good = reading_message(device, [1, 2])
    implausible = reading_message(device, [3], systolic=999)
    future = reading_message(device, [4], start=NOW + timedelta(hours=1))
    outcome = _run(conn, (device, good), (device, b"\x00garbage"), (device, implausible),
                   ("unknown-device", reading_message("unknown-device", [1])), (device, future),
                   (device, reading_message("someone-else", [5])))
    assert _stored(conn, device) == 2 * 3
    reasons = sorted(r[0] for r in conn.execute(
        "SELECT reason FROM dead_letters WHERE device_id IN (%s, 'unknown-device')", (device,)))
    assert reasons == ["device_mismatch", "implausible_value", "invalid_json",
                       "measured_in_future", "unknown_device"]
    assert outcome.acks[device].stored == [1, 2]
    assert {(r.seq, r.reason) for r in outcome.acks[device].rejected} == {
        (3, "implausible_value"), (4, "measured_in_future")}


def test_readings_of_an_unpaired_device_are_refused(conn: psycopg.Connection[Any],
                                                    make_device: MakeDevice) -> None:
    device, _ = make_device()
    service.unpair_device(conn, device, NOW - timedelta(days=1))
    outcome = _run(conn, (device, reading_message(device, [7], start=NOW - timedelta(hours=1))))
    assert _stored(conn, device) == 0
    assert outcome.acks[device].rejected[0].reason == "unpaired_device"


def test_a_redelivered_bad_message_is_one_dead_letter(conn: psycopg.Connection[Any]) -> None:
    before = count(conn, "SELECT count(*) FROM dead_letters")
    _run(conn, ("x", b"{broken once"))
    _run(conn, ("x", b"{broken once"))
    assert count(conn, "SELECT count(*) FROM dead_letters") == before + 1


def test_status_and_events_are_stored(conn: psycopg.Connection[Any],
                                      make_device: MakeDevice) -> None:
    device, citizen = make_device("door_sensor")
    status = json.dumps({"v": 1, "device_id": device, "online": True, "battery_pct": 12.5,
                         "firmware": "2.0", "reported_at": NOW.isoformat()})
    events = json.dumps({"v": 1, "device_id": device, "events": [
        {"seq": 1, "measured_at": (NOW - timedelta(minutes=1)).isoformat(), "type": "door",
         "data": {"state": "open"}}]})
    batch = [Inbound(f"telecare/v1/{device}/status", status.encode(), NOW),
             Inbound(f"telecare/v1/{device}/events", events.encode(), NOW)]
    with conn.transaction():
        process_batch(conn, batch, LIMITS)
    assert conn.execute("SELECT battery_pct, firmware, online FROM device_status "
                        "WHERE device_id = %s", (device,)).fetchone() == (12.5, "2.0", True)
    assert conn.execute("SELECT citizen_id, data FROM device_events WHERE device_id = %s",
                        (device,)).fetchone() == (citizen, {"state": "open"})


@given(payload=st.one_of(st.binary(max_size=300), st.text(max_size=300).map(str.encode)))
@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_any_bytes_on_a_readings_topic_end_stored_or_dead_lettered(
        conn: psycopg.Connection[Any], make_device: MakeDevice, payload: bytes) -> None:
    device, _ = make_device()
    dead_before = count(conn, "SELECT count(*) FROM dead_letters WHERE device_id = %s", device)
    outcome = _run(conn, (device, payload))
    stored = _stored(conn, device)
    dead = count(conn, "SELECT count(*) FROM dead_letters WHERE device_id = %s", device)
    assert stored > 0 or dead > dead_before
    assert outcome.dead_letters == dead - dead_before
