"""Reading results and labels: what NAB's files hold is read as is; every doubt is an error naming
the file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from anomaly.errors import InvalidNabInput
from anomaly.nab.files import load_corpus

HEADER = "timestamp,value,anomaly_score\n"


def write_results(root: Path, name: str, rows: list[str], header: str = HEADER) -> Path:
    path = root / "out" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(header + "".join(f"{row}\n" for row in rows), encoding="utf-8")
    return path


def minutes(scores: list[str]) -> list[str]:
    return [f"2015-09-10 05:{m:02d}:00,1.0,{score}" for m, score in enumerate(scores)]


def write_labels(root: Path, labels: object) -> Path:
    path = root / "labels.json"
    path.write_text(json.dumps(labels), encoding="utf-8")
    return path


def test_reads_scores_and_windows_as_rows(tmp_path: Path) -> None:
    write_results(tmp_path, "cat/a.csv", minutes(["0", "0.5", "1", "0.25", "0"]))
    labels = write_labels(tmp_path, {"cat/a.csv": [["2015-09-10 05:01:00.000000",
                                                    "2015-09-10 05:03:00.000000"]]})
    [series] = load_corpus(tmp_path / "out", labels)
    assert series.name == "cat/a.csv"
    assert list(series.scores) == [0.0, 0.5, 1.0, 0.25, 0.0]
    assert series.windows == ((1, 3),)


def test_a_repeated_timestamp_outside_the_window_bounds_is_read(tmp_path: Path) -> None:
    rows = minutes(["0", "0", "0", "0"]) + ["2015-09-10 05:03:00,1.0,0.5"]  # a clock change
    write_results(tmp_path, "a.csv", rows)
    labels = write_labels(tmp_path, {"a.csv": [["2015-09-10 05:00:00", "2015-09-10 05:02:00"]]})
    assert len(load_corpus(tmp_path / "out", labels)[0].scores) == 5


WINDOW = [["2015-09-10 05:01:00", "2015-09-10 05:03:00"]]


@pytest.mark.parametrize(("case", "header", "scores", "labels", "message"), [
    ("no anomaly_score column", "timestamp,value\n", ["0"] * 5, {"a.csv": WINDOW}, "no anomaly_score column"),
    ("a score that is not a number", HEADER, ["0", "high", "0", "0", "0"], {"a.csv": WINDOW},
     "line 3: anomaly_score 'high' is not a number"),
    ("a blank score", HEADER, ["0", "", "0", "0", "0"], {"a.csv": WINDOW}, "line 3: anomaly_score '' is not"),
    ("NaN", HEADER, ["0", "nan", "0", "0", "0"], {"a.csv": WINDOW}, "anomaly_score 'nan' is outside [0, 1]"),
    ("above 1", HEADER, ["0", "1.5", "0", "0", "0"], {"a.csv": WINDOW}, "'1.5' is outside [0, 1]"),
    ("below 0", HEADER, ["0", "-0.1", "0", "0", "0"], {"a.csv": WINDOW}, "'-0.1' is outside [0, 1]"),
    ("a labels key with no file", HEADER, ["0"] * 5, {"a.csv": WINDOW, "b/missing.csv": []},
     "b/missing.csv: no results file"),
    ("a results file without labels", HEADER, ["0"] * 5, {}, "a.csv: not in"),
    ("a window that starts between rows", HEADER, ["0"] * 5,
     {"a.csv": [["2015-09-10 05:01:30", "2015-09-10 05:03:00"]]}, "does not start and end on rows"),
    ("a window past the file's end", HEADER, ["0"] * 5,
     {"a.csv": [["2015-09-10 05:01:00", "2015-09-10 06:00:00"]]}, "does not start and end on rows"),
    ("a one-row window", HEADER, ["0"] * 5,
     {"a.csv": [["2015-09-10 05:01:00", "2015-09-10 05:01:00"]]}, "at least two rows"),
    ("overlapping windows", HEADER, ["0"] * 5,
     {"a.csv": [WINDOW[0], ["2015-09-10 05:02:00", "2015-09-10 05:04:00"]]}, "disjoint"),
    ("a window bound that is not a timestamp", HEADER, ["0"] * 5, {"a.csv": [["soon", "later"]]},
     "'soon' is not a timestamp"),
    ("labels that are not pairs", HEADER, ["0"] * 5, {"a.csv": ["2015-09-10 05:01:00"]},
     "a.csv: expected a list of [start, end] pairs"),
    ("a file with no rows", HEADER, [], {"a.csv": []}, "a.csv: no rows"),
])
def test_refuses(tmp_path: Path, case: str, header: str, scores: list[str], labels: object,
                 message: str) -> None:
    results = write_results(tmp_path, "a.csv", minutes(scores), header)
    labels_path = write_labels(tmp_path, labels)
    with pytest.raises(InvalidNabInput) as raised:
        load_corpus(tmp_path / "out", labels_path)
    assert message in str(raised.value), case
    # The message starts with the file to fix: the results file, or the labels for a labels error.
    assert str(raised.value).startswith((str(results), f"{labels_path}:", f"{tmp_path}/out/b/")), case


def test_a_window_bound_on_a_repeated_timestamp_is_refused(tmp_path: Path) -> None:
    write_results(tmp_path, "a.csv", minutes(["0"] * 4) + ["2015-09-10 05:01:00,1.0,0"])
    labels = write_labels(tmp_path, {"a.csv": [WINDOW[0]]})
    with pytest.raises(InvalidNabInput, match="occurs twice"):
        load_corpus(tmp_path / "out", labels)


def test_labels_that_are_not_json_name_the_file(tmp_path: Path) -> None:
    write_results(tmp_path, "a.csv", minutes(["0"] * 5))
    labels = tmp_path / "labels.json"
    labels.write_text("{not json", encoding="utf-8")
    with pytest.raises(InvalidNabInput, match="labels.json: cannot read the labels"):
        load_corpus(tmp_path / "out", labels)
