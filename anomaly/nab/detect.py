"""Running the detector over NAB data files: `timestamp,value` in, `anomaly_score` added out.

Each file is read whole and strictly first (a bad row is an error naming the file and line, and
nothing is written for it), then scored one row at a time through `Detector.update`, the path a
citizen's readings take, and written with its timestamp and value texts unchanged.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from anomaly.detector import MAX_MAGNITUDE, Detector, DetectorConfig
from anomaly.errors import InvalidNabInput
from anomaly.nab.files import _timestamp, undecodable_as_invalid


@dataclass(frozen=True)
class DataRow:
    """One row of a NAB data file: its texts as read, and what they mean."""

    timestamp_text: str
    value_text: str
    timestamp: datetime
    value: float


def _value(text: str | None, where: str) -> float:
    try:
        value = float(text) if text is not None else math.nan
    except ValueError:
        raise InvalidNabInput(f"{where}: value {text!r} is not a number") from None
    if not math.isfinite(value):
        raise InvalidNabInput(f"{where}: value {text!r} is not a finite number")
    if abs(value) > MAX_MAGNITUDE:
        raise InvalidNabInput(f"{where}: value {text!r} is beyond the detector's range (±{MAX_MAGNITUDE:g})")
    return value


def read_data(path: Path) -> list[DataRow]:
    """The rows of one `timestamp,value` file, in file order.

    Time is not required to increase: NAB's own files repeat timestamps and, once, step back an hour
    at a clock change; the detector takes rows in the order they arrived, as a device sends them."""
    with undecodable_as_invalid(path), path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header != ["timestamp", "value"]:
            raise InvalidNabInput(f"{path}, line 1: expected the header timestamp,value, got {header!r}")
        rows: list[DataRow] = []
        for fields in reader:
            where = f"{path}, line {reader.line_num}"
            if len(fields) != 2:
                raise InvalidNabInput(f"{where}: expected 2 fields (timestamp,value), got {len(fields)}")
            rows.append(DataRow(fields[0], fields[1], _timestamp(fields[0], where), _value(fields[1], where)))
    if not rows:
        raise InvalidNabInput(f"{path}: no rows")
    return rows


def score_rows(rows: list[DataRow], config: DetectorConfig | None = None) -> list[float]:
    """The anomaly score of each row, computed causally by one fresh detector."""
    detector = Detector(config)
    return [detector.update(row.timestamp, row.value)[0] for row in rows]


def write_results(path: Path, rows: list[DataRow], scores: list[float]) -> None:
    """`timestamp,value,anomaly_score`, written beside and then renamed over the target."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    with partial.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["timestamp", "value", "anomaly_score"])
        for row, score in zip(rows, scores, strict=True):
            writer.writerow([row.timestamp_text, row.value_text, repr(score)])
    partial.replace(path)


def data_files(in_dir: Path) -> Iterator[Path]:
    """Every CSV under the input directory, in a stable order."""
    if not in_dir.is_dir():
        raise InvalidNabInput(f"{in_dir}: not a directory")
    yield from sorted(in_dir.rglob("*.csv"))


def detect_tree(in_dir: Path, out_dir: Path, config: DetectorConfig | None = None) -> list[Path]:
    """Score every CSV under in_dir into out_dir at the same relative path; the files written."""
    if out_dir.resolve().is_relative_to(in_dir.resolve()):
        raise InvalidNabInput(f"{out_dir}: the output directory must not be inside {in_dir}")
    written = []
    for source in data_files(in_dir):
        rows = read_data(source)
        target = out_dir / source.relative_to(in_dir)
        write_results(target, rows, score_rows(rows, config))
        written.append(target)
    if not written:
        raise InvalidNabInput(f"{in_dir}: no CSV files")
    return written
