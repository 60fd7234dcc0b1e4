"""`telecare nab score` end to end, as a process, on a copy of two published results files."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from anomaly.nab.files import load_corpus
from anomaly.nab.scoring import PROFILES, score_corpus

REPO = Path(__file__).resolve().parents[2]
FILES = ("realKnownCause/nyc_taxi.csv", "realAdExchange/exchange-3_cpc_results.csv")


def nab_score(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "telecare.cli", "nab", "score", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture
def two_files(nab_dir: Path, tmp_path: Path) -> tuple[Path, Path]:
    labels = json.loads((nab_dir / "labels.json").read_text(encoding="utf-8"))
    out = tmp_path / "numenta"
    for name in FILES:
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(nab_dir / "published" / "numenta" / name, out / name)
    subset = tmp_path / "labels.json"
    subset.write_text(json.dumps({name: labels[name] for name in FILES}), encoding="utf-8")
    return out, subset


def test_prints_each_profile_with_its_threshold_and_score(two_files: tuple[Path, Path]) -> None:
    done = nab_score(*map(str, two_files))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "2 files, 8 windows"
    printed = {name: (float(threshold), float(score))
               for name, threshold, _raw, score in (line.split() for line in lines[2:])}
    assert list(printed) == [p.name for p in PROFILES]
    corpus = load_corpus(*two_files)
    for profile in PROFILES:
        expected = score_corpus(corpus, profile)
        assert printed[profile.name] == (round(expected.threshold, 6), round(expected.normalised, 2))
    assert 0 < printed["standard"][1] < 100


def test_a_broken_file_is_refused_by_name(two_files: tuple[Path, Path]) -> None:
    out, labels = two_files
    broken = out / FILES[0]
    broken.write_text(broken.read_text(encoding="utf-8").replace("anomaly_score", "score", 1),
                      encoding="utf-8")
    done = nab_score(str(out), str(labels))
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.strip() == f"telecare nab score: {broken}: no anomaly_score column"
