"""From (topic, bytes) to a validated wire message or a dead letter. Pure: no I/O, no clock."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime

from pydantic import ValidationError

from devices.dead_letters import DeadLetter
from ingest.wire import (
    PAYLOAD_MODELS,
    EventsMessageV1,
    ReadingsMessageV1,
    StatusMessageV1,
    parse_topic,
)

# What a dead letter keeps of the raw payload; its full size and hash are kept regardless.
DEAD_LETTER_PAYLOAD_LIMIT = 16 * 1024

WireMessage = ReadingsMessageV1 | EventsMessageV1 | StatusMessageV1


@dataclass(frozen=True, slots=True)
class Inbound:
    """A message as the broker handed it over, stamped with our receive time."""

    topic: str
    payload: bytes
    received_at: datetime


@dataclass(frozen=True, slots=True)
class Decoded:
    inbound: Inbound
    device_id: str
    message: WireMessage


def dead_letter(inbound: Inbound, reason: str, detail: str, *, device_id: str | None = None,
                seq: int | None = None) -> DeadLetter:
    """A dead letter for `inbound` keeping a bounded copy of its payload."""
    return DeadLetter(
        received_at=inbound.received_at, topic=inbound.topic, device_id=device_id, seq=seq,
        reason=reason, detail=detail[:1000], payload=inbound.payload[:DEAD_LETTER_PAYLOAD_LIMIT],
        payload_bytes=len(inbound.payload),
        payload_sha256=hashlib.sha256(inbound.payload).digest())


def decode(inbound: Inbound, *, topic_root: str, max_payload_bytes: int) -> Decoded | DeadLetter:
    """Check the topic, size, JSON, schema and device identity of one message."""
    route = parse_topic(topic_root, inbound.topic)
    if route is None:
        return dead_letter(inbound, "invalid_topic", f"not a v1 device topic: {inbound.topic!r}")
    device_id, channel = route
    if len(inbound.payload) > max_payload_bytes:
        return dead_letter(inbound, "payload_too_large",
                           f"{len(inbound.payload)} bytes > limit {max_payload_bytes}",
                           device_id=device_id)
    try:
        message = PAYLOAD_MODELS[channel].model_validate_json(inbound.payload)
    except ValidationError as exc:
        reason, detail = _explain(exc)
        return dead_letter(inbound, reason, detail, device_id=device_id)
    assert isinstance(message, ReadingsMessageV1 | EventsMessageV1 | StatusMessageV1)
    if message.device_id != device_id:
        # A device may speak only for itself: the topic carries its authenticated identity.
        return dead_letter(inbound, "device_mismatch",
                           f"topic device {device_id!r} != payload device {message.device_id!r}",
                           device_id=device_id)
    return Decoded(inbound=inbound, device_id=device_id, message=message)


def _explain(exc: ValidationError) -> tuple[str, str]:
    errors = exc.errors(include_url=False, include_input=False)
    first = errors[0]
    if first["type"] == "json_invalid":
        return "invalid_json", f"not JSON: {first['msg']}"
    if first["type"] == "literal_error" and first["loc"] == ("v",):
        return "unsupported_version", "only protocol version v=1 is understood"
    problems = "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}" for e in errors[:5])
    return "schema_violation", problems
