"""The scorer gives the figures NAB's own scorer gives for two published detectors on these files."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import pytest

from anomaly.nab.files import load_corpus
from anomaly.nab.scoring import PROFILES, Series, score_corpus

# /work/shared/nab/README.md: standard, reward low FP, reward low FN.
PUBLISHED = {
    "numenta": (69.52, 62.88, 74.02),
    "randomCutForest": (61.26, 50.68, 68.51),
}


@cache
def corpus(nab_dir: Path, detector: str) -> list[Series]:
    return load_corpus(nab_dir / "published" / detector, nab_dir / "labels.json")


@pytest.mark.parametrize("profile_index", range(len(PROFILES)), ids=[p.name for p in PROFILES])
@pytest.mark.parametrize("detector", sorted(PUBLISHED))
def test_published_figures(nab_dir: Path, detector: str, profile_index: int) -> None:
    result = score_corpus(corpus(nab_dir, detector), PROFILES[profile_index])
    assert round(result.normalised, 2) == PUBLISHED[detector][profile_index]


def test_the_corpus_is_the_development_part(nab_dir: Path) -> None:
    files = corpus(nab_dir, "numenta")
    assert (len(files), sum(len(s.windows) for s in files)) == (31, 53)
