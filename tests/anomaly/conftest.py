"""Where the NAB development data lives: TELECARE_NAB_DIR, else ../shared/nab beside the
repository, else /work/shared/nab (the machine's; .ci/run sets TELECARE_NAB_DIR)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import unavailable

REPO = Path(__file__).resolve().parents[2]
CANDIDATES = (REPO / ".." / "shared" / "nab", Path("/work/shared/nab"))


@pytest.fixture(scope="session")
def nab_dir() -> Path:
    """The NAB data directory (labels.json, data/, published/): outside CI a test without it
    skips, saying where it looked; in CI it fails."""
    given = os.environ.get("TELECARE_NAB_DIR")
    places = [Path(given)] if given else list(CANDIDATES)
    for where in (place.resolve() for place in places):
        if (where / "labels.json").is_file() and (where / "published").is_dir() \
                and (where / "data").is_dir():
            return where
    unavailable(f"no NAB data at {', '.join(str(p) for p in places)} (labels.json, data/ and "
                "published/; set TELECARE_NAB_DIR)")
