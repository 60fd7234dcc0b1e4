"""The ground truth of a simulated run, written as it happens: one JSON object per line,
flushed line by line, so a run that is killed leaves a file that can be read up to its end.

Records (field "type"):
- "run": seed, citizen count, prefix, simulated start, the end (null when live), faults.
- "citizen": the simulator's citizen key, the device ids with kind and model, the baseline
  (which may lie outside textbook bands), habits; "citizen_id" when a mapping was given.
- "episode": planned deterioration — id, citizen key, device ids, episode kind, expected
  metrics, onset, crisis, end (recovered), away_until (hospital), change at the crisis by
  metric code, notes. Written when planned, which is ahead of the simulated clock.
- "fault": an injected device fault when it happens — offline (start, end), clock_skew,
  duplicate (the sequence numbers sent twice), malformed, low_battery, sensor (implausible
  values sent, with the sequence number).
- "progress": the simulated time reached, once per simulated day: what lies before it was
  sent (or is held by an offline device).
- "stop": the simulated time at a clean stop, with the fleet's counts.
Citizens are named by the simulator's key (the registry's id is not known to a device);
the device ids resolve them through the registry's pairings."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Mapping
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from simulators.episodes import Episode
from simulators.population import CitizenSpec


def _time(at: datetime | None) -> str | None:
    return at.isoformat() if at is not None else None


class GroundTruth:
    """Appends records to a JSON-lines file (nothing when `path` is None)."""

    def __init__(self, path: str | Path | None, run: str,
                 citizen_ids: Mapping[str, str] | None = None) -> None:
        self.run, self._ids = run, dict(citizen_ids or {})
        self._lock = threading.Lock()
        self._file: IO[str] | None = None
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            self._file = Path(path).open("a", encoding="utf-8")

    def write(self, record: Mapping[str, Any]) -> None:
        """One line, flushed: what is written survives the process being killed."""
        if self._file is None:
            return
        line = json.dumps({"run": self.run, **record}, ensure_ascii=False,
                          separators=(",", ":"))
        with self._lock:
            self._file.write(line + "\n")
            self._file.flush()

    def _who(self, key: str) -> dict[str, str]:
        return {"citizen": key, **({"citizen_id": self._ids[key]} if key in self._ids else {})}

    def citizen(self, citizen: CitizenSpec) -> None:
        self.write({"type": "citizen", **self._who(citizen.key), "condition": citizen.condition,
                    "devices": [{"id": d.id, "kind": d.kind, "model": d.model}
                                for d in citizen.devices],
                    "baseline": citizen.body.metrics(),
                    "habits": {"adherence": citizen.habits.adherence,
                               "double_rate": citizen.habits.double_rate,
                               "breaks_per_30_days": citizen.habits.break_rate}})

    def episode(self, episode: Episode, citizen: CitizenSpec) -> None:
        self.write({"type": "episode", "id": episode.id, **self._who(episode.citizen),
                    "condition": episode.condition, "episode": episode.kind,
                    "devices": [d.id for d in citizen.devices], "metrics": list(episode.metrics),
                    "onset": _time(episode.onset), "crisis": _time(episode.crisis),
                    "end": _time(episode.end), "away_until": _time(episode.away_until),
                    "change": episode.change, "notes": episode.notes})

    def fault(self, fault: str, device: str, citizen: str, **details: Any) -> None:
        self.write({"type": "fault", "fault": fault, "device": device, **self._who(citizen),
                    **{k: _time(v) if isinstance(v, datetime) else v
                       for k, v in details.items()}})

    def close(self) -> None:
        if self._file is not None:
            with self._lock:
                self._file.close()
            self._file = None

    def __enter__(self) -> GroundTruth:
        return self

    def __exit__(self, *_: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()


def read_ground_truth(path: str | Path) -> Iterator[dict[str, Any]]:
    """The records of a ground-truth file; an unfinished last line (a run killed in the
    middle of a write) is skipped."""
    with Path(path).open(encoding="utf-8") as lines:
        for line in lines:
            if not line.endswith("\n"):
                return
            yield json.loads(line)
