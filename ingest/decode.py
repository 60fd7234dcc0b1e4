"""From (topic, bytes) to a validated wire message or a dead letter. Pure: no I/O, no clock.

Strict in what it reads: UTF-8 JSON only, no duplicate keys (the last one must not silently
win), no NaN or Infinity, no text PostgreSQL cannot hold (NUL, unpaired surrogates). The
envelope is validated first; then each item on its own, so that one bad item is refused by
its sequence number while the rest of the message is stored."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ValidationError

from devices.dead_letters import DeadLetter, ItemRefusal
from ingest.wire import (
    ENVELOPES,
    ITEM_MODELS,
    SEQ_MAX,
    Channel,
    EventsMessageV1,
    EventV1,
    ReadingsMessageV1,
    ReadingV1,
    StatusMessageV1,
    is_downlink,
    parse_topic,
    parse_wire_time,
)

_UNPAIRED_SURROGATE = re.compile("[\ud800-\udfff]")
DETAIL_LIMIT = 1000


@dataclass(frozen=True, slots=True)
class Inbound:
    """A message as the broker handed it over, stamped with our receive time. A payload over
    the size limit is not kept (`payload` empty, `size` its length): it is never copied."""

    topic: str
    payload: bytes
    received_at: datetime
    retained: bool = False
    size: int | None = None

    @property
    def payload_bytes(self) -> int:
        return len(self.payload) if self.size is None else self.size


Item = ReadingV1 | EventV1


@dataclass(frozen=True, slots=True, eq=False)  # compared and hashed by identity
class Decoded:
    """A message whose envelope is valid: its items that passed validation (with their
    position in the message), and the refusals of those that did not."""

    inbound: Inbound
    device_id: str
    channel: Channel
    sent_at: datetime | None = None
    # The envelope had a send time that cannot be right (unreadable, or before 2000).
    sent_at_invalid: bool = False
    items: tuple[tuple[int, Item], ...] = ()
    refused: tuple[ItemRefusal, ...] = ()
    status: StatusMessageV1 | None = None


class _Unreadable(ValueError):
    """The payload is not the JSON the protocol allows; the text is the dead letter's detail."""


class UnstorableText:
    """Stands in for a JSON string PostgreSQL cannot hold (NUL, an unpaired surrogate): it is
    no `str`, so the field that holds it fails validation, and only its item is refused."""

    def __repr__(self) -> str:
        return "<text with NUL or an unpaired surrogate>"


UNSTORABLE = UnstorableText()


def dead_letter(inbound: Inbound, reason: str, detail: str, *, device_id: str | None = None,
                items: tuple[ItemRefusal, ...] = ()) -> DeadLetter:
    """A dead letter for `inbound` keeping its whole payload (it is within the size limit)."""
    return DeadLetter(
        received_at=inbound.received_at, topic=inbound.topic, device_id=device_id,
        reason=reason, detail=detail[:DETAIL_LIMIT], payload=inbound.payload,
        payload_bytes=inbound.payload_bytes,
        payload_sha256=hashlib.sha256(inbound.payload).digest(), items=items)


def decode(inbound: Inbound, *, topic_root: str,
           max_payload_bytes: int) -> Decoded | DeadLetter | None:
    """Check the topic, size, JSON, envelope, device identity and each item of one message.
    None: nothing to store (an empty status clears a retained message; our own downlink)."""
    if is_downlink(topic_root, inbound.topic):
        return None
    route = parse_topic(topic_root, inbound.topic)
    if route is None:
        return dead_letter(inbound, "invalid_topic",
                           "not telecare/v1/{device_id}/{readings,events,status}")
    device_id, channel = route
    if inbound.payload_bytes > max_payload_bytes:
        return dead_letter(inbound, "payload_too_large",
                           f"{inbound.payload_bytes} bytes > limit {max_payload_bytes}",
                           device_id=device_id)
    if channel == "status" and not inbound.payload:
        return None
    try:
        document = parse_json(inbound.payload)
    except _Unreadable as exc:
        return dead_letter(inbound, "invalid_json", str(exc), device_id=device_id)
    whole = _whole_message(inbound, channel, document, device_id)
    if whole is not None:
        return whole
    try:
        envelope = ENVELOPES[channel].model_validate(document)
    except ValidationError as exc:
        reason, detail = _explain(exc)
        return dead_letter(inbound, reason, detail, device_id=device_id)
    claimed = getattr(envelope, "device_id", None)
    if claimed != device_id:
        # A device may speak only for itself: the topic carries its authenticated identity.
        return dead_letter(inbound, "device_mismatch", "payload device_id differs from the topic's",
                           device_id=device_id)
    if isinstance(envelope, StatusMessageV1):
        return Decoded(inbound, device_id, channel, status=envelope)
    raw_items: list[Any] = getattr(envelope, channel)
    items, refused = _validate_items(ITEM_MODELS[channel], raw_items)
    sent_at, invalid = _sent_at(getattr(envelope, "sent_at", None))
    return Decoded(inbound, device_id, channel, sent_at=sent_at, sent_at_invalid=invalid,
                   items=items, refused=refused)


def _whole_message(inbound: Inbound, channel: Channel, document: Any,
                   device_id: str) -> Decoded | None:
    """The common case in one validation: a message valid as a whole, from this device.
    Anything else takes the careful path (envelope, then each item), which says what is wrong."""
    model = _WHOLE.get(channel)
    if model is None:
        return None
    try:
        message = model.model_validate(document)
    except ValidationError:
        return None
    if message.device_id != device_id:
        return None
    items = message.readings if isinstance(message, ReadingsMessageV1) else message.events
    return Decoded(inbound, device_id, channel, sent_at=message.sent_at,
                   items=tuple(enumerate(items)))


_WHOLE: dict[str, type[ReadingsMessageV1] | type[EventsMessageV1]] = {
    "readings": ReadingsMessageV1, "events": EventsMessageV1}


def _sent_at(raw: Any) -> tuple[datetime | None, bool]:
    if raw is None:
        return None, False
    try:
        return parse_wire_time(raw), False
    except ValueError:
        return None, True


def parse_json(payload: bytes) -> Any:
    """UTF-8 JSON as Python values, refusing what the protocol does not allow."""
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        raise _Unreadable("not UTF-8") from None
    # Valid UTF-8 holds no surrogates and JSON no raw control characters, so text NUL and
    # unpaired surrogates can only arrive as \u escapes: only then is every string checked.
    decoder = _CAREFUL if "\\u" in text else _FAST
    try:
        return decoder.decode(text)
    except _Unreadable:
        raise
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, or an absurdly long number
        raise _Unreadable(f"not JSON: {type(exc).__name__}") from None


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise _Unreadable(f"duplicate key {_first_repeat(pairs)[:32]!r}")
    return obj


def _unique_storable(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = _unique_keys(pairs)
    for key, value in pairs:
        if not _storable(key):
            raise _Unreadable("a key with a NUL character or an unpaired surrogate")
        if isinstance(value, str) and not _storable(value):
            obj[key] = UNSTORABLE
    return obj


def _first_repeat(pairs: list[tuple[str, Any]]) -> str:
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            return key
        seen.add(key)
    return ""


def _storable(text: str) -> bool:
    return "\x00" not in text and not _UNPAIRED_SURROGATE.search(text)


def _no_constant(name: str) -> None:
    raise _Unreadable(f"{name} is not a JSON number")


_FAST = json.JSONDecoder(object_pairs_hook=_unique_keys, parse_constant=_no_constant)
_CAREFUL = json.JSONDecoder(object_pairs_hook=_unique_storable, parse_constant=_no_constant)


def _validate_items(model: type[BaseModel], raw_items: list[Any]
                    ) -> tuple[tuple[tuple[int, Item], ...], tuple[ItemRefusal, ...]]:
    items: list[tuple[int, Item]] = []
    refused: list[ItemRefusal] = []
    for index, raw in enumerate(raw_items):
        try:
            item = model.model_validate(raw)
        except ValidationError as exc:
            reason, detail = _explain(exc)
            refused.append(ItemRefusal(index, _seq_of(raw), reason, detail))
            continue
        assert isinstance(item, ReadingV1 | EventV1)
        items.append((index, item))
    return tuple(items), tuple(refused)


def _seq_of(raw: Any) -> int | None:
    """The sequence number of an item that failed validation, if it has a valid one: the
    device can then be told that this item is refused."""
    seq = raw.get("seq") if isinstance(raw, dict) else None
    return seq if type(seq) is int and 0 <= seq <= SEQ_MAX else None


def _explain(exc: ValidationError) -> tuple[str, str]:
    """(reason, detail) of a validation error; the detail names fields, never their values."""
    reason = "schema_violation"
    problems = []
    for error in exc.errors(include_url=False, include_input=False, include_context=False):
        where = ".".join(str(p) for p in error["loc"]) or "(root)"
        if where == "v" and error["type"] in ("literal_error", "value_error"):
            reason = "unsupported_version"
        elif where == "type" and error["type"] == "literal_error":
            reason = "unknown_type"
        problems.append(f"{where}: {error['msg']}")
    return reason, "; ".join(problems[:5])
