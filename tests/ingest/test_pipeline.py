"""The batch pipeline on the real database, without MQTT."""

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import psycopg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devices import repository, service
from devices.repository import Sighting, prepare_reading_stage
from ingest.decode import Inbound
from ingest.pipeline import BatchOutcome, LastSeen, Limits, process_batch
from tests.conftest import count, reading_message

NOW = datetime.now(UTC).replace(microsecond=0)
LIMITS = Limits(topic_root="telecare", max_payload_bytes=256 * 1024,
                late_after=timedelta(minutes=10), max_clock_ahead=timedelta(minutes=5))
CAUGHT_UP = timedelta(seconds=30)  # what a worker that is keeping up passes as max_transit
MakeDevice = Callable[..., tuple[str, UUID]]
Message = tuple[str, str | bytes] | tuple[str, str | bytes, str]


def _run(conn: psycopg.Connection[Any], *messages: Message, received_at: datetime = NOW,
         max_transit: timedelta | None = CAUGHT_UP,
         last_seen: LastSeen | None = None) -> BatchOutcome:
    """One batch; each message is (device, payload) on readings or (device, payload, channel)."""
    batch = []
    for message in messages:
        device, payload, channel = (*message, "readings")[:3]
        raw = payload.encode() if isinstance(payload, str) else payload
        batch.append(Inbound(f"telecare/v1/{device}/{channel}", raw, received_at))
    prepare_reading_stage(conn)
    with conn.transaction():
        return process_batch(conn, batch, LIMITS, last_seen, max_transit=max_transit)


def _stored(conn: psycopg.Connection[Any], device_id: str) -> int:
    return count(conn, "SELECT count(*) FROM readings WHERE device_id = %s", device_id)


def _weights(device: str, *readings: tuple[int, datetime, object],
             sent_at: datetime | None = None) -> str:
    body: dict[str, Any] = {"v": 1, "device_id": device, "readings": [
        {"seq": seq, "measured_at": at.isoformat() if isinstance(at, datetime) else at,
         "type": "body_weight", "values": {"weight": weight}} for seq, at, weight in readings]}
    if sent_at is not None:
        body["sent_at"] = sent_at.isoformat()
    return json.dumps(body)


def _events(device: str, *events: tuple[int, datetime, str, dict[str, Any]]) -> str:
    return json.dumps({"v": 1, "device_id": device, "events": [
        {"seq": seq, "measured_at": at.isoformat(), "type": kind, "data": data}
        for seq, at, kind, data in events]})


def _rejected(outcome: BatchOutcome, device: str) -> set[tuple[int, str]]:
    return {(r.seq, r.reason) for r in outcome.acks[device].rejected}


def test_the_same_batch_delivered_twice_is_stored_once(conn: psycopg.Connection[Any],
                                                        make_device: MakeDevice) -> None:
    device, _ = make_device()
    message = reading_message(device, range(1, 51))
    first = _run(conn, (device, message), (device, message))
    second = _run(conn, (device, message))
    assert _stored(conn, device) == 50 * 3
    assert first.readings_stored == 150 and second.readings_stored == 0
    assert first.acks[device].stored == list(range(1, 51))
    assert second.acks[device].stored == list(range(1, 51))  # a repeat is acknowledged again


def test_two_measurements_at_one_instant_are_both_stored(conn: psycopg.Connection[Any],
                                                         make_device: MakeDevice) -> None:
    device, _ = make_device("scale")
    at = NOW - timedelta(hours=1)
    outcome = _run(conn, (device, _weights(device, (1, at, 80.1), (2, at, 80.3))))
    assert outcome.acks[device].stored == [1, 2]
    assert sorted(r[0] for r in conn.execute(
        "SELECT value FROM readings WHERE device_id = %s", (device,))) == [80.1, 80.3]


def test_a_redelivery_with_different_content_is_refused_not_acknowledged(
        conn: psycopg.Connection[Any], make_device: MakeDevice) -> None:
    device, _ = make_device("scale")
    at = NOW - timedelta(hours=1)
    _run(conn, (device, _weights(device, (1, at, 80.1))))
    later = _run(conn, (device, _weights(device, (1, at, 99.9), (2, at, 81.0))))
    assert later.acks[device].stored == [2]
    assert _rejected(later, device) == {(1, "conflicts_with_stored")}
    # Within one batch, too: the first is stored, the different second one refused.
    same_batch = _run(conn, (device, _weights(device, (3, at, 70.0))),
                      (device, _weights(device, (3, at, 71.0))))
    assert 3 not in same_batch.acks[device].stored
    assert (3, "conflicts_with_stored") in _rejected(same_batch, device)
    values = dict(conn.execute("SELECT seq, value FROM readings WHERE device_id = %s",
                               (device,)).fetchall())
    assert values == {1: 80.1, 2: 81.0, 3: 70.0}


def test_events_with_one_timestamp_are_all_stored(conn: psycopg.Connection[Any],
                                                  make_device: MakeDevice) -> None:
    screen, _ = make_device("home_screen")
    door, _ = make_device("door_sensor")
    at = NOW - timedelta(minutes=2)
    answers = [(seq, at, "questionnaire_answer",
                {"questionnaire": "daily", "question": f"q{seq}", "answer": "yes"})
               for seq in (1, 2, 3)]
    outcome = _run(conn, (screen, _events(screen, *answers), "events"),
                   (door, _events(door, (7, at, "door", {"state": "open"}),
                                  (8, at + timedelta(milliseconds=400), "door",
                                   {"state": "closed"})), "events"))
    assert outcome.acks[screen].stored == [1, 2, 3] and outcome.acks[door].stored == [7, 8]
    assert count(conn, "SELECT count(*) FROM device_events WHERE device_id = ANY(%s)",
                 [screen, door]) == 5
    again = _run(conn, (screen, _events(screen, answers[0]), "events"))  # redelivered
    assert again.acks[screen].stored == [1]
    assert count(conn, "SELECT count(*) FROM device_events WHERE device_id = %s", screen) == 3


def test_one_bad_item_is_refused_by_its_seq_and_the_rest_stored(
        conn: psycopg.Connection[Any], make_device: MakeDevice) -> None:
    device, _ = make_device("scale")
    at = NOW - timedelta(hours=1)
    message = _weights(device, (1, at, 80.0), (2, "2026-11-23T07:00:00", 80.0), (3, at, 80.2))
    outcome = _run(conn, (device, message))
    assert outcome.acks[device].stored == [1, 3]
    assert _rejected(outcome, device) == {(2, "schema_violation")}
    letter = conn.execute("SELECT id, reason, payload FROM dead_letters WHERE device_id = %s",
                          (device,)).fetchone()
    assert letter is not None and letter[1] == "items_rejected"
    assert bytes(letter[2]) == message.encode()  # the payload, whole, once per message
    assert conn.execute("SELECT item_index, seq, reason FROM dead_letter_items "
                        "WHERE dead_letter_id = %s", (letter[0],)).fetchall() == [
        (1, 2, "schema_violation")]


def test_bad_readings_are_dead_lettered_and_the_good_ones_around_them_stored(
        conn: psycopg.Connection[Any], make_device: MakeDevice) -> None:
    device, _ = make_device()
    good = reading_message(device, [1, 2])
    future = reading_message(device, [4], start=NOW + timedelta(hours=1))
    outcome = _run(conn, (device, good), (device, b"\x00garbage"),
                   ("unknown-device", reading_message("unknown-device", [1])), (device, future),
                   (device, reading_message("someone-else", [5])))
    assert _stored(conn, device) == 2 * 3
    reasons = sorted(r[0] for r in conn.execute(
        "SELECT reason FROM dead_letters WHERE device_id IN (%s, 'unknown-device') UNION ALL "
        "SELECT i.reason FROM dead_letter_items i JOIN dead_letters d ON d.id = i.dead_letter_id "
        "WHERE d.device_id = %s", (device, device)))
    assert reasons == ["device_mismatch", "invalid_json", "items_rejected", "measured_in_future",
                       "unknown_device"]
    assert outcome.acks[device].stored == [1, 2]
    assert _rejected(outcome, device) == {(4, "measured_in_future")}


def test_an_implausible_value_is_stored_marked_and_kept_out_of_aggregates(
        conn: psycopg.Connection[Any], make_device: MakeDevice) -> None:
    oximeter, citizen = make_device("pulse_oximeter")
    at = NOW - timedelta(minutes=30)
    payload = json.dumps({"v": 1, "device_id": oximeter, "readings": [
        {"seq": 1, "measured_at": at.isoformat(), "type": "pulse_oximetry",
         "values": {"spo2": 45, "pulse": 130}},
        {"seq": 2, "measured_at": (at + timedelta(minutes=1)).isoformat(),
         "type": "pulse_oximetry", "values": {"spo2": 91, "pulse": 120}}]})
    outcome = _run(conn, (oximeter, payload))
    assert outcome.acks[oximeter].stored == [1, 2]  # the emergency is stored, not refused
    assert conn.execute("SELECT value, quality FROM readings WHERE device_id = %s AND "
                        "metric = 'spo2' ORDER BY seq", (oximeter,)).fetchall() == [
        (45.0, "implausible"), (91.0, "valid")]
    hour = timedelta(hours=1)
    [plain] = repository.readings_bucketed(conn, citizen, "spo2", NOW - hour, NOW, 2 * hour,
                                           NOW - hour)
    [marked] = repository.readings_bucketed(conn, citizen, "spo2", NOW - hour, NOW, 2 * hour,
                                            NOW - hour, include_implausible=True)
    assert (plain["count"], plain["min"]) == (1, 91.0)
    assert (marked["count"], marked["min"]) == (2, 45.0)


def test_details_of_refusals_carry_no_values(conn: psycopg.Connection[Any],
                                             make_device: MakeDevice) -> None:
    device, _ = make_device("bp_monitor")
    at = NOW - timedelta(minutes=3)
    payload = json.dumps({"v": 1, "device_id": device, "readings": [
        {"seq": 1, "measured_at": at.isoformat(), "type": "body_weight",
         "values": {"weight": 123.456}},
        {"seq": 2, "measured_at": at.isoformat(), "type": "blood_pressure",
         "values": {"systolic": 187.25, "diastolic": 97.75}}]})
    _run(conn, (device, payload))
    details = " ".join(r[0] for r in conn.execute(
        "SELECT d.detail || ' ' || i.detail FROM dead_letter_items i "
        "JOIN dead_letters d ON d.id = i.dead_letter_id WHERE d.device_id = %s", (device,)))
    assert details and not any(v in details for v in ("123.456", "187.25", "97.75"))


def test_late_readings_are_stored_by_measured_time_with_the_cause_of_their_delay(
        conn: psycopg.Connection[Any], make_device: MakeDevice) -> None:
    device, _ = make_device("scale")
    hours = [NOW - timedelta(hours=h) for h in (6, 5, 4)]
    # seq 1: the device held it for hours (offline), and says so with sent_at = now.
    held = _weights(device, (1, hours[0], 80.0), sent_at=NOW - timedelta(seconds=1))
    # seq 2: sent when measured, then waited for Telecare (its own outage) - transit.
    waited = _weights(device, (2, hours[1], 80.1), sent_at=hours[1] + timedelta(seconds=2))
    # seq 3: no sent_at: late, cause unknown; seq 4: current.
    unknown = _weights(device, (3, hours[2], 80.2), (4, NOW - timedelta(minutes=1), 80.3))
    _run(conn, (device, held), (device, waited), (device, unknown),
         max_transit=timedelta(hours=6))
    rows = conn.execute("SELECT seq, measured_at, received_at, late, delay_cause FROM readings "
                        "WHERE device_id = %s ORDER BY seq", (device,)).fetchall()
    assert [(r[0], r[3], r[4]) for r in rows] == [
        (1, True, "device"), (2, True, "transit"), (3, True, "unknown"), (4, False, None)]
    assert rows[0][1] == hours[0] and rows[0][2] == NOW


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


def test_a_backdated_move_reattributes_what_was_stored_since_and_records_it(
        conn: psycopg.Connection[Any], make_device: MakeDevice) -> None:
    device, x = make_device("scale")
    y = service.enrol_citizen(conn, "Y")
    moved_at = NOW - timedelta(hours=1)
    _run(conn, (device, _weights(device, (1, moved_at - timedelta(minutes=5), 80.0),
                                 (2, moved_at + timedelta(minutes=5), 81.0))))
    service.pair_device(conn, device, y, moved_at, actor="nurse-7")
    owners = dict(conn.execute("SELECT seq, citizen_id FROM readings WHERE device_id = %s",
                               (device,)).fetchall())
    assert owners == {1: x, 2: y}
    assert conn.execute("SELECT from_citizen, to_citizen, readings_moved, changed_by "
                        "FROM attribution_changes WHERE device_id = %s", (device,)).fetchall() == [
        (x, y, 1, "nurse-7")]


def test_a_status_from_a_clock_in_year_9999_does_not_freeze_the_device(
        conn: psycopg.Connection[Any], make_device: MakeDevice) -> None:
    device, _ = make_device("emergency_button")

    def status(online: bool, reported: str | None = None, battery: float | None = None) -> str:
        body: dict[str, Any] = {"v": 1, "device_id": device, "online": online}
        if reported:
            body["reported_at"] = reported
        if battery is not None:
            body["battery_pct"] = battery
        return json.dumps(body)

    _run(conn, (device, status(True, "9999-12-31T00:00:00Z", 90), "status"))
    _run(conn, (device, status(True, None, 40), "status"), received_at=NOW + timedelta(seconds=1))
    _run(conn, (device, status(False), "status"), received_at=NOW + timedelta(seconds=2))
    row = conn.execute("SELECT online, battery_pct, clock_suspect FROM device_status "
                       "WHERE device_id = %s", (device,)).fetchone()
    assert row == (False, 40.0, True)


def test_a_last_will_after_a_reading_in_the_same_batch_leaves_the_device_offline(
        conn: psycopg.Connection[Any], make_device: MakeDevice) -> None:
    device, _ = make_device("scale")
    batch = [Inbound(f"telecare/v1/{device}/readings",
                     _weights(device, (1, NOW - timedelta(seconds=5), 80.0)).encode(), NOW),
             Inbound(f"telecare/v1/{device}/status",
                     json.dumps({"v": 1, "device_id": device, "online": False}).encode(),
                     NOW + timedelta(milliseconds=5))]
    prepare_reading_stage(conn)
    with conn.transaction():
        process_batch(conn, batch, LIMITS, LastSeen(), max_transit=CAUGHT_UP)
    assert conn.execute("SELECT online FROM device_status WHERE device_id = %s",
                        (device,)).fetchone() == (False,)
    # A reading received after the will means the device is back.
    _run(conn, (device, _weights(device, (2, NOW, 80.1))), received_at=NOW + timedelta(seconds=1))
    assert conn.execute("SELECT online FROM device_status WHERE device_id = %s",
                        (device,)).fetchone() == (True,)


def test_a_clock_reset_to_2000_is_quarantined_not_refused_as_unpaired(
        conn: psycopg.Connection[Any], make_device: MakeDevice) -> None:
    device, _ = make_device("scale")
    reset = datetime(2000, 1, 1, 0, 10, tzinfo=UTC)
    outcome = _run(conn, (device, _weights(device, (1, reset, 80.0),
                                           sent_at=reset + timedelta(minutes=5))))
    assert _rejected(outcome, device) == {(1, "clock_untrusted")}
    assert _stored(conn, device) == 0
    assert conn.execute("SELECT clock_suspect, clock_offset_s < -7e8 FROM device_status "
                        "WHERE device_id = %s", (device,)).fetchone() == (True, True)


def test_a_clock_off_by_millennia_is_quarantined_without_overflowing(
        conn: psycopg.Connection[Any], make_device: MakeDevice) -> None:
    device, _ = make_device("scale")
    message = _weights(device, (1, datetime(2000, 1, 1, 0, 0, 1, tzinfo=UTC), 80.0),
                       sent_at=datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC))
    outcome = _run(conn, (device, message))
    assert _rejected(outcome, device) == {(1, "clock_untrusted")}


def test_a_handed_over_device_with_a_slow_clock_is_not_filed_under_the_old_holder(
        conn: psycopg.Connection[Any], make_device: MakeDevice) -> None:
    device, a = make_device("scale")
    b = service.enrol_citizen(conn, "B")
    handover = NOW - timedelta(hours=1)
    service.pair_device(conn, device, b, handover)
    slow = timedelta(hours=3)  # the device clock is three hours behind
    measured = NOW - timedelta(minutes=1) - slow  # B measured a minute ago
    outcome = _run(conn, (device, _weights(device, (1, measured, 80.0), sent_at=NOW - slow)))
    assert _rejected(outcome, device) == {(1, "clock_untrusted")}
    assert count(conn, "SELECT count(*) FROM readings WHERE citizen_id = %s", a) == 0
    # The same reading from a clock we cannot judge so tightly (a worker just started) but
    # long paired to one citizen is stored, marked.
    other, holder = make_device("scale")
    stored = _run(conn, (other, _weights(other, (1, measured, 80.0), sent_at=NOW - slow)),
                  max_transit=timedelta(hours=1))
    assert stored.acks[other].stored == [1]
    assert conn.execute("SELECT citizen_id, clock_suspect FROM readings WHERE device_id = %s",
                        (other,)).fetchone() == (holder, True)


def test_a_good_clock_is_not_suspect_whatever_telecares_backlog(
        conn: psycopg.Connection[Any], make_device: MakeDevice) -> None:
    device, _ = make_device("scale")
    sent = NOW - timedelta(hours=2)  # waited two hours at the broker for Telecare
    outcome = _run(conn, (device, _weights(device, (1, sent, 80.0), sent_at=sent)),
                   max_transit=timedelta(hours=3))
    assert outcome.acks[device].stored == [1]
    assert conn.execute("SELECT clock_suspect, delay_cause FROM readings WHERE device_id = %s",
                        (device,)).fetchone() == (False, "transit")


def test_a_send_time_that_cannot_be_right_answers_every_item_instead_of_refusing_the_message(
        conn: psycopg.Connection[Any], make_device: MakeDevice) -> None:
    device, _ = make_device("scale")
    message = json.loads(_weights(device, (1, NOW - timedelta(minutes=30), 80.0)))
    message["sent_at"] = "1970-01-01T00:00:05Z"  # an epoch reset, after the measurement
    outcome = _run(conn, (device, json.dumps(message)))
    assert _rejected(outcome, device) == {(1, "clock_untrusted")}  # answered: not resent forever


def test_a_clock_found_off_stays_suspect_for_messages_that_cannot_show_it(
        conn: psycopg.Connection[Any], make_device: MakeDevice) -> None:
    device, x = make_device("scale")
    y = service.enrol_citizen(conn, "Y")
    slow = timedelta(hours=1)
    # A live status shows the clock an hour behind; a retained (old) one would show nothing.
    status = json.dumps({"v": 1, "device_id": device, "online": True,
                         "reported_at": (NOW - slow).isoformat()})
    _run(conn, (device, status, "status"))
    assert conn.execute("SELECT clock_suspect FROM device_status WHERE device_id = %s",
                        (device,)).fetchone() == (True,)
    service.pair_device(conn, device, y, NOW - timedelta(minutes=30))
    # Y measures now; the device stamps it an hour early and sends no sent_at.
    outcome = _run(conn, (device, _weights(device, (1, NOW - slow, 80.0))))
    assert _rejected(outcome, device) == {(1, "clock_untrusted")}
    assert count(conn, "SELECT count(*) FROM readings WHERE citizen_id = %s", x) == 0


def test_a_retained_status_says_nothing_about_the_clock_now(
        conn: psycopg.Connection[Any], make_device: MakeDevice) -> None:
    device, _ = make_device("scale")
    old = json.dumps({"v": 1, "device_id": device, "online": True,
                      "reported_at": (NOW - timedelta(days=3)).isoformat()})
    prepare_reading_stage(conn)
    with conn.transaction():
        process_batch(conn, [Inbound(f"telecare/v1/{device}/status", old.encode(), NOW,
                                     retained=True)], LIMITS, max_transit=CAUGHT_UP)
    assert conn.execute("SELECT clock_suspect FROM device_status WHERE device_id = %s",
                        (device,)).fetchone() == (False,)


def test_an_event_redelivered_with_large_numbers_is_the_same_event(
        conn: psycopg.Connection[Any], make_device: MakeDevice) -> None:
    pir, _ = make_device("motion_sensor")
    event = _events(pir, (1, NOW - timedelta(minutes=1), "motion",
                          {"lux": 1e300, "count": 123456789012345678}))
    _run(conn, (pir, event, "events"))
    again = _run(conn, (pir, event, "events"))
    assert again.acks[pir].stored == [1] and not again.acks[pir].rejected
    assert conn.execute("SELECT data->>'count' FROM device_events WHERE device_id = %s",
                        (pir,)).fetchone() == ("123456789012345678",)  # kept exactly


def test_a_registry_row_of_an_unknown_kind_refuses_items_and_raises_nothing(
        conn: psycopg.Connection[Any], make_device: MakeDevice) -> None:
    device, _ = make_device("scale")
    conn.execute("UPDATE devices SET kind = 'teleporter' WHERE id = %s", (device,))
    outcome = _run(conn, (device, _weights(device, (1, NOW, 80.0))))
    assert _rejected(outcome, device) == {(1, "type_not_supported")}


def test_readings_of_an_unpaired_device_are_refused(conn: psycopg.Connection[Any],
                                                    make_device: MakeDevice) -> None:
    device, _ = make_device()
    service.unpair_device(conn, device, NOW - timedelta(days=1))
    outcome = _run(conn, (device, reading_message(device, [7], start=NOW - timedelta(hours=1))))
    assert _stored(conn, device) == 0
    assert outcome.acks[device].rejected[0].reason == "unpaired_device"


def test_a_redelivered_bad_message_is_one_dead_letter_with_its_deliveries_counted(
        conn: psycopg.Connection[Any]) -> None:
    before = count(conn, "SELECT count(*) FROM dead_letters")
    _run(conn, ("x", b"{broken once"))
    _run(conn, ("x", b"{broken once"))
    assert count(conn, "SELECT count(*) FROM dead_letters") == before + 1
    assert count(conn, "SELECT deliveries FROM dead_letters WHERE payload = %s",
                 b"{broken once") == 2


def test_last_seen_is_remembered_only_when_marked_after_a_commit(
        conn: psycopg.Connection[Any], make_device: MakeDevice) -> None:
    device, _ = make_device("scale")
    last_seen = LastSeen()
    sighting = {device: Sighting(NOW)}
    assert last_seen.due(sighting) == sighting
    assert last_seen.due(sighting) == sighting  # asking is not writing: a rollback loses nothing
    last_seen.mark(sighting)
    assert last_seen.due({device: Sighting(NOW + timedelta(seconds=5))}) == {}


def test_status_and_events_are_stored(conn: psycopg.Connection[Any],
                                      make_device: MakeDevice) -> None:
    device, citizen = make_device("door_sensor")
    status = json.dumps({"v": 1, "device_id": device, "online": True, "battery_pct": 12.5,
                         "firmware": "2.0", "reported_at": NOW.isoformat()})
    events = _events(device, (1, NOW - timedelta(minutes=1), "door", {"state": "open"}))
    _run(conn, (device, status, "status"), (device, events, "events"))
    assert conn.execute("SELECT battery_pct, firmware, online, clock_suspect FROM device_status "
                        "WHERE device_id = %s", (device,)).fetchone() == (12.5, "2.0", True, False)
    assert conn.execute("SELECT citizen_id, data FROM device_events WHERE device_id = %s",
                        (device,)).fetchone() == (citizen, {"state": "open"})


_ITEM = st.one_of(
    st.fixed_dictionaries({  # valid readings, of a good value or an implausible one
        "seq": st.integers(0, 10_000),
        "minutes_ago": st.integers(0, 24 * 60),
        "weight": st.floats(1, 500).map(lambda w: round(w, 1))}),
    st.fixed_dictionaries({  # invalid ones
        "seq": st.integers(0, 10_000) | st.text(max_size=2),
        "minutes_ago": st.integers(-120, 0),
        "weight": st.text(max_size=3) | st.booleans()}))


@given(items=st.lists(_ITEM, min_size=1, max_size=30))
@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_every_item_is_stored_as_sent_or_refused_with_a_reason(
        conn: psycopg.Connection[Any], make_device: MakeDevice,
        items: list[dict[str, Any]]) -> None:
    device, _ = make_device("scale")
    readings = [{"seq": i["seq"], "measured_at": (NOW - timedelta(minutes=i["minutes_ago"]))
                 .isoformat(), "type": "body_weight", "values": {"weight": i["weight"]}}
                for i in items]
    payload = json.dumps({"v": 1, "device_id": device, "readings": readings})
    outcome = _run(conn, (device, payload))
    ack = outcome.acks.get(device)
    stored_seqs = set(ack.stored) if ack else set()
    # A seq the device used twice in one message, once refused, is answered as refused.
    answered = stored_seqs | ({r.seq for r in ack.rejected} if ack else set())
    rows = {(seq, at): value for seq, at, value in conn.execute(
        "SELECT seq, measured_at, value FROM readings WHERE device_id = %s", (device,))}
    for reading in readings:
        seq, at, weight = reading["seq"], reading["measured_at"], reading["values"]["weight"]
        key = (seq, datetime.fromisoformat(at)) if isinstance(seq, int) else None
        if key in rows and rows[key] == weight:
            assert seq in answered
    # Nothing acknowledged as stored that the table does not hold with a sent value.
    for seq in stored_seqs:
        sent = {(datetime.fromisoformat(r["measured_at"]), r["values"]["weight"])
                for r in readings if r["seq"] == seq}
        held = {(at, value) for (s, at), value in rows.items() if s == seq}
        assert held & sent


def test_what_a_batch_really_stored_is_queued_once_for_evaluation(
        conn: psycopg.Connection[Any], make_device: MakeDevice) -> None:
    scale, _ = make_device("scale")
    button, citizen = make_device("emergency_button")
    at = NOW - timedelta(minutes=1)
    readings = _weights(scale, (1, at, 80.0), (2, at + timedelta(seconds=1), 81.0))
    press = _events(button, (7, at, "emergency_button", {}))
    _run(conn, (scale, readings), (button, press, "events"))
    # Redelivered, and a different reading under a stored identity (refused): nothing new.
    _run(conn, (scale, readings), (button, press, "events"),
         (scale, _weights(scale, (1, at, 99.0))))

    queued = conn.execute("SELECT source, device_id, name, seq, value, citizen_id FROM "
                          "evaluation_queue WHERE device_id = ANY(%s) ORDER BY source, seq",
                          ([scale, button],)).fetchall()
    assert queued == [("event", button, "emergency_button", 7, None, citizen),
                      ("reading", scale, "body_weight", 1, 80.0, queued[1][5]),
                      ("reading", scale, "body_weight", 2, 81.0, queued[1][5])]
