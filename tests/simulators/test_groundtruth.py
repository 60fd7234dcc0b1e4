"""The ground truth is written line by line as the run goes: while a run is live, what it has
replayed is already in the file, and a run killed with SIGKILL leaves a file whose every line is
a complete record."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import datetime
from pathlib import Path

from simulators.groundtruth import read_ground_truth

RUN = """
import sys, threading
from simulators.fleet import Fleet, FleetOptions
host, port, root, path, prefix = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
options = FleetOptions(citizens=10, seed=4, speed=1_000_000, days=None, backfill_days=10,
                       faults=("offline", "low_battery"), prefix=prefix, ground_truth=path)
Fleet(host, port, "5", root, options).run(threading.Event())
"""


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines(keepends=True) if path.exists() else []


def _progress(path: Path) -> int:
    return sum('"type":"progress"' in line for line in _lines(path))


def test_a_killed_run_leaves_a_readable_ground_truth(broker: tuple[str, int],
                                                     tmp_path: Path) -> None:
    path, errors = tmp_path / "truth.jsonl", (tmp_path / "stderr").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-c", RUN, broker[0], str(broker[1]), f"t{uuid.uuid4().hex[:8]}",
         str(path), f"k{uuid.uuid4().hex[:6]}"],
        cwd=Path(__file__).resolve().parents[2], stderr=errors)
    try:
        # Ten days replay in under a second, then the fleet is live and writes almost nothing:
        # the replay's records must be in the file by then, not held in a buffer.
        deadline = time.monotonic() + 30
        while _progress(path) < 9 and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.05)
        assert process.poll() is None, (tmp_path / "stderr").read_text()
        assert _progress(path) >= 9
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.kill()
        process.wait(10)
        errors.close()
    lines = _lines(path)
    assert all(line.endswith("\n") for line in lines)
    records = [json.loads(line) for line in lines]
    assert records == list(read_ground_truth(path))
    kinds = [r["type"] for r in records]
    assert kinds[0] == "run" and "stop" not in kinds
    assert {"citizen", "episode", "fault", "progress"} <= set(kinds)
    episodes = [r for r in records if r["type"] == "episode"]
    citizens = {r["citizen"] for r in records if r["type"] == "citizen"}
    assert len(citizens) == 10 and {e["citizen"] for e in episodes} <= citizens
    for episode in episodes:
        onset, crisis = (datetime.fromisoformat(episode[k]) for k in ("onset", "crisis"))
        assert onset <= crisis and episode["devices"] and episode["metrics"]
    assert {r["fault"] for r in records if r["type"] == "fault"} >= {"offline", "low_battery"}


def test_an_unfinished_last_line_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "truth.jsonl"
    path.write_text('{"type":"run"}\n{"type":"episode","id":"x","onse', encoding="utf-8")
    assert list(read_ground_truth(path)) == [{"type": "run"}]
