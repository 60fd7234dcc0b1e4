"""Writes the JSON Schema of every protocol payload, generated from the wire models."""

from __future__ import annotations

import json
from pathlib import Path

from ingest.wire import PAYLOAD_MODELS


def write_schemas(out: Path) -> list[Path]:
    """One <channel>.v1.schema.json per payload; returns the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for channel, model in PAYLOAD_MODELS.items():
        path = out / f"{channel}.v1.schema.json"
        schema = {"$schema": "https://json-schema.org/draft/2020-12/schema",
                  **model.model_json_schema()}
        path.write_text(json.dumps(schema, indent=2) + "\n")
        written.append(path)
    return written
