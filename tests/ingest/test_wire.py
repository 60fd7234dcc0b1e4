"""The protocol's own promises: its limits agree, and the published schemas are its models."""

import json
from datetime import UTC, datetime
from pathlib import Path

from ingest.decode import Decoded, Inbound, decode
from ingest.wire import (
    MAX_ITEMS_PER_MESSAGE,
    MAX_PAYLOAD_BYTES,
    PAYLOAD_MODELS,
    SEQ_MAX,
    ReadingsMessageV1,
    ReadingV1,
)
from telecare.schema import write_schemas

SCHEMA_DIR = Path(__file__).parents[2] / "docs" / "schema"


def _largest_reading(seq: int) -> ReadingV1:
    """A reading as large as the schema allows: longest type, eight values with the longest
    names and the longest numbers, a time with nanoseconds and an offset."""
    return ReadingV1.model_validate({
        "seq": seq, "measured_at": "2026-11-23T07:12:00.123456789+01:00", "type": "t" * 64,
        "values": {f"v{i}" + "x" * 29: -1.2345678901234567e-300 for i in range(8)}})


def test_a_full_message_of_the_largest_readings_fits_the_size_limit_and_is_accepted() -> None:
    readings = [_largest_reading(SEQ_MAX - i) for i in range(MAX_ITEMS_PER_MESSAGE)]
    message = ReadingsMessageV1(v=1, device_id="d" * 64, readings=readings,
                                sent_at=datetime(2026, 11, 23, tzinfo=UTC))
    # Both compact and the common `json.dumps` spacing: a device that splits by item count
    # alone is never refused for size.
    compact = message.model_dump_json().encode()
    spaced = json.dumps(json.loads(compact)).encode()
    assert len(spaced) <= MAX_PAYLOAD_BYTES, len(spaced)
    result = decode(Inbound(f"telecare/v1/{'d' * 64}/readings", spaced, datetime.now(UTC)),
                    topic_root="telecare", max_payload_bytes=MAX_PAYLOAD_BYTES)
    assert isinstance(result, Decoded) and len(result.items) == MAX_ITEMS_PER_MESSAGE


def test_the_published_json_schemas_are_generated_from_the_wire_models(tmp_path: Path) -> None:
    written = {p.name: p.read_text() for p in write_schemas(tmp_path)}
    assert set(written) == {f"{channel}.v1.schema.json" for channel in PAYLOAD_MODELS}
    for name, text in written.items():
        assert (SCHEMA_DIR / name).read_text() == text, f"run `telecare schema`: {name} is stale"


def test_the_wire_and_the_registry_state_one_rule_for_device_ids() -> None:
    from devices.models import DEVICE_ID_PATTERN as REGISTRY_RULE
    from ingest.wire import DEVICE_ID_PATTERN as WIRE_RULE

    assert WIRE_RULE == REGISTRY_RULE
