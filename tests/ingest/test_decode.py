from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devices.dead_letters import DeadLetter
from ingest.decode import DEAD_LETTER_PAYLOAD_LIMIT, Decoded, Inbound, decode

NOW = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
GOOD = (b'{"v":1,"device_id":"bp-1","readings":[{"seq":1,"measured_at":"2026-11-23T07:00:00Z",'
        b'"type":"blood_pressure","values":{"systolic":120,"diastolic":80,"pulse":60}}]}')


def _decode(payload: bytes, topic: str = "telecare/v1/bp-1/readings") -> Decoded | DeadLetter:
    return decode(Inbound(topic, payload, NOW), topic_root="telecare", max_payload_bytes=4096)


def test_a_valid_message_decodes() -> None:
    result = _decode(GOOD)
    assert isinstance(result, Decoded)
    assert result.device_id == "bp-1"


# The corpus of malformed payloads, each with the reason it must be dead-lettered for.
CORPUS = [
    (b"", "invalid_json"),
    (b"{not json", "invalid_json"),
    (b"\xff\xfe\x00\x01", "invalid_json"),
    (b"[]", "schema_violation"),
    (b'{"v":2,"device_id":"bp-1","readings":[]}', "unsupported_version"),
    (b'{"v":1,"device_id":"bp-1","readings":[]}', "schema_violation"),
    (b'{"v":1,"device_id":"bp-1"}', "schema_violation"),
    (GOOD.replace(b"2026-11-23T07:00:00Z", b"2026-11-23T07:00:00"), "schema_violation"),
    (GOOD.replace(b'"seq":1', b'"seq":-1'), "schema_violation"),
    (GOOD.replace(b'"seq":1', b'"seq":"one"'), "schema_violation"),
    (GOOD.replace(b"120", b"NaN"), "schema_violation"),  # parsed, then refused as not finite
    (GOOD.replace(b'"pulse":60', b'"pulse":60,"extra":{}'), "schema_violation"),
    (GOOD.replace(b'"device_id":"bp-1"', b'"device_id":"bp-2"'), "device_mismatch"),
    (GOOD + b" " * 70_000, "payload_too_large"),  # over the default 64 KiB too
]


@pytest.mark.parametrize(("payload", "reason"), CORPUS)
def test_malformed_payloads_become_dead_letters_with_their_reason(payload: bytes,
                                                                  reason: str) -> None:
    result = _decode(payload)
    assert isinstance(result, DeadLetter)
    assert result.reason == reason
    assert result.detail
    assert result.payload_bytes == len(payload)


@pytest.mark.parametrize("topic", ["telecare/v2/bp-1/readings", "telecare/v1/bp-1/other",
                                   "other/v1/bp-1/readings", "telecare/v1/readings"])
def test_foreign_topics_are_dead_lettered(topic: str) -> None:
    result = _decode(GOOD, topic)
    assert isinstance(result, DeadLetter) and result.reason == "invalid_topic"


@given(st.binary(max_size=5000))
@settings(max_examples=500)
def test_any_bytes_decode_or_become_a_bounded_dead_letter(payload: bytes) -> None:
    result = _decode(payload)
    assert isinstance(result, Decoded | DeadLetter)
    if isinstance(result, DeadLetter):
        assert result.reason and len(result.payload) <= DEAD_LETTER_PAYLOAD_LIMIT


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
                    lambda kids: st.lists(kids) | st.dictionaries(st.text(), kids),
                    max_leaves=20))
def test_any_json_document_decodes_or_becomes_a_dead_letter(document: object) -> None:
    import json

    result = _decode(json.dumps(document).encode())
    assert isinstance(result, Decoded | DeadLetter)
