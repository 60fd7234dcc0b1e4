"""Retraining of personal baselines by `telecare alerts` (the leader, on its clock tick): the
citizens whose baselines are missing or older than `every` are retrained from their own history
over the training window, a chunk per tick so that a tick stays short; each chunk commits with
the baselines it wrote. Replay trains the same way from the history it holds (alerts/replay.py)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Sequence
from datetime import datetime, timedelta
from uuid import UUID

from alerts import baseline_repository as repo
from alerts import context_repository
from alerts.baselines import train_from_history
from alerts.context import load_series
from alerts.context_repository import Conn
from anomaly.baseline import Baseline, BaselineConfig

DEFAULT_EVERY = timedelta(hours=24)
DEFAULT_CHUNK = 100


def retrain(conn: Conn, citizens: Sequence[UUID], now: datetime,
            config: BaselineConfig) -> dict[UUID, dict[str, Baseline]]:
    """Train and store the baselines of `citizens` at `now` (six queries, then the writes);
    what was stored (one discharged or erased meanwhile gets none). A defect raises: the engine
    then retrains the citizens one at a time (alerts/engine.py)."""
    if not citizens:
        return {}
    since = now - config.training_window
    histories = load_series(conn, {citizen: (since, now) for citizen in citizens})
    plans: dict[UUID, list[str]] = defaultdict(list)
    for row in context_repository.plans(conn, citizens, now):
        plans[row["citizen_id"]].append(row["plan"])
    pauses: dict[UUID, list[tuple[datetime, datetime | None]]] = defaultdict(list)
    for row in context_repository.pauses_overlapping(conn, citizens, since, now):
        pauses[row["citizen_id"]].append((row["start"], row["end"]))
    spans = repo.alert_spans(conn, citizens, since)
    queued = repo.queued_since(conn, citizens)
    # Nothing still queued is learnt: the anomaly rule would then skip it as already known.
    trained = {citizen: train_from_history(histories[citizen], plans[citizen],
                                           spans.get(citizen, ()), pauses[citizen], now, config,
                                           until=queued.get(citizen))
               for citizen in citizens}
    kept = repo.save(conn, trained)
    return {citizen: baselines for citizen, baselines in trained.items() if citizen in kept}


def due(conn: Conn, now: datetime, every: timedelta = DEFAULT_EVERY, chunk: int = DEFAULT_CHUNK,
        skip: Collection[UUID] = ()) -> list[UUID]:
    """Up to `chunk` citizens whose baselines are missing or older than `every`, oldest first,
    but those in `skip`."""
    return repo.due(conn, now, now - every, chunk, skip)
