"""Reading a detector's NAB results and the labelled windows, strictly.

A score that silently became 0, or a window that silently matched no row, would move the benchmark
figure without anyone noticing, so every doubt is an error that names the file.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import numpy as np

from anomaly.errors import InvalidNabInput
from anomaly.nab.scoring import Series

Windows = tuple[tuple[datetime, datetime], ...]


def _timestamp(text: object, where: str) -> datetime:
    """NAB's timestamps, with or without fractional seconds ("2014-04-10 07:15:00.000000")."""
    if not isinstance(text, str):
        raise InvalidNabInput(f"{where}: {text!r} is not a timestamp")
    try:
        return datetime.fromisoformat(text.strip())
    except ValueError:
        raise InvalidNabInput(f"{where}: {text!r} is not a timestamp") from None


def read_labels(path: Path) -> dict[str, Windows]:
    """The windows of each file, keyed by its path relative to the results directory."""
    try:
        labels = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InvalidNabInput(f"{path}: cannot read the labels: {exc}") from None
    if not isinstance(labels, dict):
        raise InvalidNabInput(f"{path}: expected an object of file -> list of [start, end]")
    windows: dict[str, Windows] = {}
    for name, pairs in labels.items():
        where = f"{path}: {name}"
        if not isinstance(pairs, list) or not all(isinstance(p, list) and len(p) == 2 for p in pairs):
            raise InvalidNabInput(f"{where}: expected a list of [start, end] pairs")
        windows[name] = tuple((_timestamp(start, where), _timestamp(end, where)) for start, end in pairs)
    return windows


def _score(text: str | None, where: str) -> float:
    """A score in [0, 1]; NaN, blanks and anything else are errors, not zeros."""
    try:
        score = float(text) if text is not None else math.nan
    except ValueError:
        raise InvalidNabInput(f"{where}: anomaly_score {text!r} is not a number") from None
    if not 0.0 <= score <= 1.0:
        raise InvalidNabInput(f"{where}: anomaly_score {text!r} is outside [0, 1]")
    return score


@contextmanager
def undecodable_as_invalid(path: Path) -> Iterator[None]:
    """csv's and the decoder's errors (a NUL byte, bytes that are not UTF-8) as InvalidNabInput
    naming the file, like every other fault of the input."""
    try:
        yield
    except (csv.Error, UnicodeDecodeError) as exc:
        raise InvalidNabInput(f"{path}: not a readable UTF-8 CSV file ({exc})") from None


def read_results(path: Path) -> tuple[list[datetime], list[float]]:
    """The timestamps and anomaly scores of one results file."""
    with undecodable_as_invalid(path), path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = {"timestamp", "anomaly_score"} - set(reader.fieldnames or ())
        if missing:
            raise InvalidNabInput(f"{path}: no {' or '.join(sorted(missing))} column")
        timestamps: list[datetime] = []
        scores: list[float] = []
        for row in reader:
            where = f"{path}, line {reader.line_num}"
            timestamps.append(_timestamp(row["timestamp"], where))
            scores.append(_score(row["anomaly_score"], where))
    if not scores:
        raise InvalidNabInput(f"{path}: no rows")
    return timestamps, scores


def _window_rows(path: Path, timestamps: list[datetime], windows: Windows) -> tuple[tuple[int, int], ...]:
    """Each window as the rows of its first and last timestamp, which must both be rows of the file.

    NAB's own files repeat a few timestamps (clock changes); that is harmless unless a window
    starts or ends on one, which would leave the window's rows in doubt."""
    row_of: dict[datetime, int] = {}
    repeated = set()
    for i, at in enumerate(timestamps):
        if at in row_of:
            repeated.add(at)
        row_of.setdefault(at, i)
    rows = []
    for start, end in windows:
        if start not in row_of or end not in row_of:
            raise InvalidNabInput(f"{path}: window {start} .. {end} does not start and end on rows "
                                  "of the file")
        if {start, end} & repeated:
            raise InvalidNabInput(f"{path}: window {start} .. {end} starts or ends on a timestamp "
                                  "that occurs twice in the file")
        rows.append((row_of[start], row_of[end]))
    return tuple(rows)


def load_corpus(out_dir: Path, labels_path: Path) -> list[Series]:
    """Every labelled file of a detector's results directory, with its windows as row ranges."""
    labels = read_labels(labels_path)
    found = {p.relative_to(out_dir).as_posix() for p in out_dir.rglob("*.csv")}
    if unlabelled := sorted(found - set(labels)):
        raise InvalidNabInput(f"{out_dir / unlabelled[0]}: not in {labels_path}, so it cannot be scored")
    corpus = []
    for name, windows in labels.items():
        path = out_dir / name
        if name not in found:
            raise InvalidNabInput(f"{path}: no results file for this entry of {labels_path}")
        timestamps, scores = read_results(path)
        try:
            corpus.append(Series(name, np.array(scores, dtype=np.float64),
                                 _window_rows(path, timestamps, windows)))
        except ValueError as exc:
            raise InvalidNabInput(f"{path}: {exc}") from None
    return corpus
