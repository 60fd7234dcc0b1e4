"""Where the NAB development data lives: TELECARE_NAB_DIR, else ../shared/nab beside the repository."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def nab_dir() -> Path:
    """The NAB data directory (labels.json, published/); the test skips, saying where it looked."""
    where = Path(os.environ.get("TELECARE_NAB_DIR", REPO / ".." / "shared" / "nab")).resolve()
    if not (where / "labels.json").is_file() or not (where / "published").is_dir():
        pytest.skip(f"no NAB data at {where} (labels.json and published/; set TELECARE_NAB_DIR)")
    return where
