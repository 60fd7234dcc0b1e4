"""`telecare nab detect` end to end, as a process, on copies of two NAB data files; strict input."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from anomaly.errors import InvalidNabInput
from anomaly.nab.detect import read_data, score_rows
from anomaly.nab.files import read_results

REPO = Path(__file__).resolve().parents[2]
FILES = ("realAdExchange/exchange-3_cpc_results.csv", "realTraffic/speed_7578.csv")


def telecare(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "telecare.cli", "nab", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture
def two_files(nab_dir: Path, tmp_path: Path) -> Path:
    data = tmp_path / "data"
    for name in FILES:
        (data / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(nab_dir / "data" / name, data / name)
    return data


def test_writes_each_file_at_its_path_with_the_detectors_scores(two_files: Path, tmp_path: Path,
                                                               nab_dir: Path) -> None:
    out = tmp_path / "out"
    done = telecare("detect", str(two_files), str(out))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"2 files scored into {out}"
    for name in FILES:
        with (two_files / name).open(newline="", encoding="utf-8") as handle:
            given = list(csv.reader(handle))
        with (out / name).open(newline="", encoding="utf-8") as handle:
            written = list(csv.reader(handle))
        assert written[0] == ["timestamp", "value", "anomaly_score"]
        assert [row[:2] for row in written[1:]] == given[1:]
        scores = [float(row[2]) for row in written[1:]]
        assert all(0.0 <= score <= 1.0 for score in scores)
        # The scores are the detector's, row by row, exactly (written as repr).
        assert scores == score_rows(read_data(two_files / name))
        assert max(scores) > 0.5
    # What detect writes is what score reads.
    labels = json.loads((nab_dir / "labels.json").read_text(encoding="utf-8"))
    subset = tmp_path / "labels.json"
    subset.write_text(json.dumps({name: labels[name] for name in FILES}), encoding="utf-8")
    scored = telecare("score", str(out), str(subset))
    assert scored.returncode == 0, scored.stderr
    assert scored.stdout.splitlines()[0] == "2 files, 7 windows"


def test_a_bad_row_is_refused_by_file_and_line(two_files: Path, tmp_path: Path) -> None:
    broken = two_files / FILES[1]
    lines = broken.read_text(encoding="utf-8").splitlines()
    lines[5] = lines[5].split(",")[0] + ",n/a"
    broken.write_text("\n".join(lines) + "\n", encoding="utf-8")
    done = telecare("detect", str(two_files), str(tmp_path / "out"))
    assert done.returncode == 2
    assert done.stderr.strip() == f"telecare nab detect: {broken}, line 6: value 'n/a' is not a number"
    assert not (tmp_path / "out" / FILES[1]).exists()


@pytest.mark.parametrize(("text", "message"), [
    ("time,value\n2015-09-08 11:39:00,1\n", "line 1: expected the header timestamp,value"),
    ("timestamp,value\n2015-09-08 11:39:00,1,2\n", "line 2: expected 2 fields"),
    ("timestamp,value\n2015-09-08 11:39:00,1\nyesterday,2\n", "line 3: 'yesterday' is not a timestamp"),
    ("timestamp,value\n2015-09-08 11:39:00,nan\n", "line 2: value 'nan' is not a finite number"),
    ("timestamp,value\n2015-09-08 11:39:00,\n", "line 2: value '' is not a number"),
    ("timestamp,value\n2015-09-08 11:39:00,1e101\n", "line 2: value '1e101' is beyond the detector's range"),
    ("timestamp,value\n", "no rows"),
])
def test_each_doubt_is_an_error_naming_the_file(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "a.csv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(InvalidNabInput) as raised:
        read_data(path)
    assert str(raised.value).startswith(f"{path}")
    assert message in str(raised.value)


def test_an_output_directory_inside_the_input_is_refused(two_files: Path) -> None:
    done = telecare("detect", str(two_files), str(two_files / "out"))
    assert done.returncode == 2
    assert "must not be inside" in done.stderr


@pytest.mark.parametrize("content", [b"timestamp,value\n2015-09-08 11:39:00,1\x00\n",
                                     b"timestamp,value\n2015-09-08 11:39:00,\xff\n"])
def test_a_nul_byte_or_bytes_not_utf8_are_an_error_naming_the_file(tmp_path: Path,
                                                                  content: bytes) -> None:
    # The decoder's own error (and csv's, where it refuses a NUL), not a traceback.
    data, results = tmp_path / "a.csv", tmp_path / "b.csv"
    data.write_bytes(content)
    results.write_bytes(content.replace(b"timestamp,value", b"timestamp,value,anomaly_score"))
    for read, path in ((read_data, data), (read_results, results)):
        with pytest.raises(InvalidNabInput) as raised:
            read(path)
        assert str(raised.value).startswith(f"{path}")
