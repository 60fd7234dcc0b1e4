import json
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devices.dead_letters import DeadLetter
from ingest.decode import Decoded, Inbound, decode
from ingest.wire import MAX_PAYLOAD_BYTES

NOW = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
GOOD = (b'{"v":1,"device_id":"bp-1","readings":[{"seq":1,"measured_at":"2026-11-23T07:00:00Z",'
        b'"type":"blood_pressure","values":{"systolic":120,"diastolic":80,"pulse":60}}]}')
LIMIT = 4096


def _decode(payload: bytes, topic: str = "telecare/v1/bp-1/readings",
            limit: int = LIMIT) -> Decoded | DeadLetter | None:
    return decode(Inbound(topic, payload, NOW), topic_root="telecare", max_payload_bytes=limit)


def _reading(**change: object) -> dict[str, object]:
    reading: dict[str, object] = {"seq": 1, "measured_at": "2026-11-23T07:00:00Z",
                                  "type": "body_weight", "values": {"weight": 97.0}}
    reading.update(change)
    return reading


def _message(*readings: dict[str, object]) -> bytes:
    return json.dumps({"v": 1, "device_id": "bp-1", "readings": list(readings)}).encode()


def test_a_valid_message_decodes() -> None:
    result = _decode(GOOD)
    assert isinstance(result, Decoded)
    assert result.device_id == "bp-1" and len(result.items) == 1 and not result.refused


# The corpus of malformed payloads, each with the reason it must be dead-lettered for.
CORPUS = [
    (b"", "invalid_json"),
    (b"{not json", "invalid_json"),
    (b"\xff\xfe\x00\x01", "invalid_json"),
    (b"[]", "schema_violation"),
    (b'{"v":2,"device_id":"bp-1","readings":[]}', "unsupported_version"),
    (b'{"v":1,"device_id":"bp-1","readings":[]}', "schema_violation"),
    (b'{"v":1,"device_id":"bp-1"}', "schema_violation"),
    (b'{"v":true,"device_id":"bp-1","readings":[{}]}', "unsupported_version"),
    (GOOD.replace(b'"v":1', b'"v":1.0'), "unsupported_version"),
    (GOOD.replace(b"120", b"NaN"), "invalid_json"),  # not a JSON number at all
    (GOOD.replace(b"120", b"Infinity"), "invalid_json"),
    (GOOD.replace(b'"device_id":"bp-1"', b'"device_id":"bp-2"'), "device_mismatch"),
    # Duplicate keys: the last must not silently win (B's payload on A's topic).
    (GOOD.replace(b'"device_id":"bp-1"', b'"device_id":"bp-2","device_id":"bp-1"'),
     "invalid_json"),
    (GOOD.replace(b'"pulse":60', b'"pulse":60,"pulse":61'), "invalid_json"),
    # What PostgreSQL cannot hold is refused before the database sees it.
    (GOOD.replace(b'"device_id":"bp-1"', b'"device_id":"bp\\u0000-1"'), "schema_violation"),
    (GOOD.replace(b'"device_id":"bp-1"', b'"device_id":"\\ud800"'), "schema_violation"),
    (GOOD.replace(b'"pulse"', b'"pul\\u0000se"'), "invalid_json"),
    ("{\"v\":1,\"device_id\":\"bp-1\"}".encode("utf-16"), "invalid_json"),  # UTF-8 only
    (GOOD + b" " * 5000, "payload_too_large"),
]


@pytest.mark.parametrize(("payload", "reason"), CORPUS)
def test_malformed_payloads_become_dead_letters_with_their_reason(payload: bytes,
                                                                  reason: str) -> None:
    result = _decode(payload)
    assert isinstance(result, DeadLetter)
    assert result.reason == reason
    assert result.detail
    assert result.payload_bytes == len(payload)


# Item 4: the wire models coerce nothing. Each of these was once stored as a number or time.
COERCIONS = [
    ({"values": {"weight": "97"}}, "schema_violation"),
    ({"values": {"weight": True}}, "schema_violation"),
    ({"measured_at": 1763881200}, "schema_violation"),
    ({"measured_at": "1763881200"}, "schema_violation"),
    ({"measured_at": "2026-11-23T07:00:00"}, "schema_violation"),  # no UTC offset
    ({"measured_at": "2026-11-23"}, "schema_violation"),
    ({"measured_at": "1999-12-31T23:00:00Z"}, "schema_violation"),  # before any right clock
    ({"seq": "10220"}, None),
    ({"seq": 10220.0}, None),
    ({"seq": True}, None),
    ({"seq": -1}, None),
    ({"type": 7}, "schema_violation"),
    ({"type": "body_\u0000weight"}, "schema_violation"),  # NUL: PostgreSQL could not hold it
    ({"extra": 1}, "schema_violation"),
]


@pytest.mark.parametrize(("change", "reason"), COERCIONS)
def test_nothing_is_coerced_from_the_wire_and_a_bad_item_is_refused_alone(
        change: dict[str, object], reason: str | None) -> None:
    bad = _reading(seq=2, **change) if "seq" not in change else _reading(**change)
    result = _decode(_message(_reading(seq=1), bad, _reading(seq=3)))
    assert isinstance(result, Decoded)
    assert [item.seq for _, item in result.items] == [1, 3]
    [refused] = result.refused
    assert refused.index == 1
    # An item whose seq cannot be read cannot be named in the ack; it still gets a reason.
    assert refused.seq == (2 if "seq" not in change else None)
    assert refused.reason == (reason or "schema_violation")


def test_an_event_type_from_newer_firmware_is_refused_by_its_seq_and_the_rest_kept() -> None:
    events = [{"seq": 5, "measured_at": "2026-11-23T07:00:00+01:00", "type": "fall_detected",
               "data": {}},
              {"seq": 6, "measured_at": "2026-11-23T07:00:00+01:00", "type": "motion"}]
    payload = json.dumps({"v": 1, "device_id": "pir-1", "events": events}).encode()
    result = _decode(payload, "telecare/v1/pir-1/events")
    assert isinstance(result, Decoded)
    assert [item.seq for _, item in result.items] == [6]
    assert [(r.seq, r.reason) for r in result.refused] == [(5, "unknown_type")]


@pytest.mark.parametrize("sent_at", ["1970-01-01T00:00:05Z", "a\u0000b", 1763881200, "soon"])
def test_a_send_time_that_cannot_be_right_keeps_the_items(sent_at: object) -> None:
    message = json.loads(_message(_reading(seq=1)))
    message["sent_at"] = sent_at
    result = _decode(json.dumps(message).encode())
    assert isinstance(result, Decoded) and result.sent_at_invalid and len(result.items) == 1


def test_details_name_fields_never_values() -> None:
    result = _decode(_message(_reading(values={"weight": "97.123456"})))
    assert isinstance(result, Decoded)
    assert "97.123456" not in result.refused[0].detail


@pytest.mark.parametrize("topic", ["telecare/v2/bp-1/readings", "telecare/v1/bp-1/other",
                                   "telecare/v1/bp-1/reading", "telecare/v1/bp-1/readings/extra",
                                   "telecare/v1/readings", "telecare/v1/b p/readings"])
def test_misaddressed_topics_are_dead_lettered(topic: str) -> None:
    result = _decode(GOOD, topic)
    assert isinstance(result, DeadLetter) and result.reason == "invalid_topic"


def test_an_empty_status_clears_a_retained_message_and_is_not_malformed() -> None:
    assert _decode(b"", "telecare/v1/bp-1/status") is None


def test_our_own_downlink_is_never_ingested() -> None:
    assert _decode(b'{"v":1,"type":"ack","stored":[1]}', "telecare/v1/bp-1/commands") is None


def test_a_payload_too_large_to_keep_is_dead_lettered_without_its_bytes() -> None:
    inbound = Inbound("telecare/v1/bp-1/readings", b"", NOW, size=11_000_000)
    result = decode(inbound, topic_root="telecare", max_payload_bytes=MAX_PAYLOAD_BYTES)
    assert isinstance(result, DeadLetter) and result.reason == "payload_too_large"
    assert result.payload_bytes == 11_000_000 and result.payload == b""


@given(st.binary(max_size=2 * LIMIT))  # beyond the limit too, so both sides are exercised
@settings(max_examples=500)
def test_any_bytes_decode_or_become_a_whole_dead_letter(payload: bytes) -> None:
    result = _decode(payload)
    assert isinstance(result, Decoded | DeadLetter)
    if isinstance(result, DeadLetter):
        assert result.reason
        assert result.payload == payload  # kept whole for replay, up to the limit
        assert (result.reason == "payload_too_large") == (len(payload) > LIMIT)


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
                    lambda kids: st.lists(kids) | st.dictionaries(st.text(), kids),
                    max_leaves=20))
def test_any_json_document_decodes_or_becomes_a_dead_letter(document: object) -> None:
    result = _decode(json.dumps(document).encode())
    assert isinstance(result, Decoded | DeadLetter)


@given(st.lists(st.fixed_dictionaries({
    "seq": st.integers(min_value=0, max_value=2**63 - 1) | st.text(max_size=3),
    "measured_at": st.sampled_from(["2026-11-23T07:00:00Z", "2026-11-23T07:00:00", 5]),
    "type": st.sampled_from(["body_weight", "blood_pressure", 3]),
    "values": st.dictionaries(st.sampled_from(["weight", "systolic", "x y"]),
                              st.floats(allow_nan=False, allow_infinity=False) | st.text(),
                              max_size=3)}), min_size=1, max_size=20))
def test_every_item_of_a_valid_envelope_is_either_kept_or_refused(items: list[object]) -> None:
    result = _decode(json.dumps({"v": 1, "device_id": "bp-1", "readings": items}).encode(),
                     limit=MAX_PAYLOAD_BYTES)
    assert isinstance(result, Decoded)
    indices = sorted([i for i, _ in result.items] + [r.index for r in result.refused])
    assert indices == list(range(len(items)))
