"""A device's backlog goes out in messages within both protocol limits, nothing lost or
reordered, each one a valid message with its send time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from ingest.wire import (
    MAX_ITEMS_PER_MESSAGE,
    MAX_PAYLOAD_BYTES,
    EventsMessageV1,
    EventV1,
    ReadingsMessageV1,
    ReadingV1,
)
from simulators.outbox import pack

SENT = datetime(2026, 3, 29, 0, 30, tzinfo=UTC)
T0 = datetime(2026, 3, 28, 6, 0, tzinfo=UTC)


def _reading(seq: int) -> ReadingV1:
    return ReadingV1.model_validate({
        "seq": seq, "measured_at": (T0 + timedelta(minutes=seq)).isoformat(),
        "type": "blood_pressure", "values": {"systolic": 131.0, "diastolic": 82.0, "pulse": 71.0}})


def _big_event(seq: int) -> EventV1:
    data = {f"f{i}": "x" * 200 for i in range(16)}  # the largest data the protocol allows
    return EventV1.model_validate({"seq": seq, "measured_at": T0.isoformat(),
                                   "type": "questionnaire_answer", "data": data})


def test_a_backlog_is_split_at_the_item_limit() -> None:
    readings = [_reading(seq) for seq in range(1, 451)]
    payloads = pack("bp-1", SENT, readings)
    messages = [ReadingsMessageV1.model_validate_json(p) for p in payloads]
    assert [len(m.readings) for m in messages] == [MAX_ITEMS_PER_MESSAGE, MAX_ITEMS_PER_MESSAGE, 50]
    assert [r for m in messages for r in m.readings] == readings
    assert {m.sent_at for m in messages} == {SENT} and {m.device_id for m in messages} == {"bp-1"}


def test_a_backlog_of_large_items_is_split_at_the_byte_limit() -> None:
    events = [_big_event(seq) for seq in range(1, 201)]
    payloads = pack("scr-1", SENT, events)
    assert len(payloads) > 1
    assert all(len(p) <= MAX_PAYLOAD_BYTES for p in payloads)
    messages = [EventsMessageV1.model_validate_json(p) for p in payloads]
    assert [e for m in messages for e in m.events] == events
    # Greedy and exact: one more item would not have fitted in any full message.
    for payload, following in zip(payloads, messages[1:], strict=False):
        assert len(payload) + len(following.events[0].model_dump_json()) + 1 > MAX_PAYLOAD_BYTES


def test_a_message_exactly_at_the_byte_limit_is_kept_whole() -> None:
    readings = [_reading(seq) for seq in range(1, 11)]
    exact = len(pack("bp-1", SENT, readings)[0])
    assert len(pack("bp-1", SENT, readings, max_bytes=exact)) == 1
    assert len(pack("bp-1", SENT, readings, max_bytes=exact - 1)) == 2
    with pytest.raises(ValueError, match="alone exceeds"):
        pack("bp-1", SENT, readings, max_bytes=100)
