"""How a device packs what it has to send into messages the protocol accepts: at most
`MAX_ITEMS_PER_MESSAGE` items and at most `MAX_PAYLOAD_BYTES` bytes each, oldest first."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from ingest.wire import (
    MAX_ITEMS_PER_MESSAGE,
    MAX_PAYLOAD_BYTES,
    EventsMessageV1,
    EventV1,
    ReadingsMessageV1,
    ReadingV1,
)

Item = ReadingV1 | EventV1


def wire_time(at: datetime) -> str:
    """A time as the protocol wants it: RFC 3339 with its offset."""
    return at.isoformat()


def _message(device_id: str, sent_at: datetime, items: Sequence[Item]) -> bytes:
    envelope = {"v": 1, "device_id": device_id, "sent_at": wire_time(sent_at)}
    if isinstance(items[0], ReadingV1):
        return ReadingsMessageV1.model_validate(
            {**envelope, "readings": list(items)}).model_dump_json(exclude_none=True).encode()
    return EventsMessageV1.model_validate(
        {**envelope, "events": list(items)}).model_dump_json(exclude_none=True).encode()


def pack(device_id: str, sent_at: datetime, items: Sequence[Item],
         max_items: int = MAX_ITEMS_PER_MESSAGE,
         max_bytes: int = MAX_PAYLOAD_BYTES) -> list[bytes]:
    """The payloads that carry `items` (all readings or all events), in order, each within
    both limits. Sizes are exact: an item adds its JSON and one comma."""
    if not items:
        return []
    overhead = len(_message(device_id, sent_at, items[:1])) - _size(items[0])
    batches: list[list[Item]] = [[]]
    used = overhead
    for item in items:
        size = _size(item) + (1 if batches[-1] else 0)
        if batches[-1] and (len(batches[-1]) >= max_items or used + size > max_bytes):
            batches.append([])
            used, size = overhead, _size(item)
        if used + size > max_bytes:
            raise ValueError(f"item {item.seq} alone exceeds {max_bytes} bytes")
        batches[-1].append(item)
        used += size
    payloads = [_message(device_id, sent_at, batch) for batch in batches]
    assert all(len(p) <= max_bytes for p in payloads)
    return payloads


def _size(item: Item) -> int:
    return len(item.model_dump_json(exclude_none=True).encode())
