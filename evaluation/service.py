"""`telecare evaluate`: each population in a fresh database of its own, generated and stored
(evaluation.population), the real rules replayed over its whole period on the measured-time
clock (alerts.replay), the alerts matched to the ground truth (evaluation.quality), and for the
development seed one figure per episode kind (evaluation.plots). Populations run in parallel
processes: the replay is CPU-bound Python and the machine has two cores."""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg

from alerts.context import load_series
from alerts.replay import STATUS_RULES, ReplayRequest, run_replay
from devices.catalogue import IMPLAUSIBLE
from evaluation import repository
from evaluation.database import fresh_database
from evaluation.plots import EpisodeView, plot_episode
from evaluation.population import Population, Spec, build, default_limits
from evaluation.quality import (
    Figures,
    Match,
    Period,
    RaisedAlert,
    TrueEpisode,
    figures,
    matches_by_kind,
)
from ingest.pipeline import Limits
from simulators.episodes import CADENCE

log = logging.getLogger(__name__)

KINDS = tuple(sorted(c.kind for c in CADENCE.values()))
BEFORE = timedelta(days=10)  # a figure shows the episode from 10 days before its onset
AFTER = timedelta(days=3)  # to 3 days after it ended


@dataclass(frozen=True)
class Options:
    admin_dsn: str
    citizens: int = 60
    days: float = 60.0
    seeds: tuple[int, ...] = (1, 2, 3)  # the first is the development seed
    noise: float = 2.0  # the noisier population, run for the development seed (1: none)
    nurses: int = 2
    out: Path | None = None  # the development seed's figures go here (None: no figures)
    keep: bool = False
    # The time-driven rules every half hour of measured time (live: every 10 s; replay's
    # default 900 s): their alerts fall on that grid, a lead time moves by less than half an
    # hour, and the tick is most of a replay's cost.
    tick_s: float = 1800.0
    # The simulated nurse resolves every alert this long after it opened, as a team that works
    # its queue daily would, so that a later episode raises a new alert (None: nobody does).
    resolve_after: timedelta | None = timedelta(hours=24)
    # History before the period (not replayed, not scored): the baselines learn from it.
    warmup_days: float = 30.0
    jobs: int = 2
    storage: str = "auto"  # of each fresh database (core.migrations)
    limits: Limits = field(default_factory=default_limits)

    def specs(self) -> list[Spec]:
        specs = [Spec(self.citizens, self.days, seed, warmup_days=self.warmup_days)
                 for seed in self.seeds]
        if self.noise != 1.0:
            specs.append(Spec(self.citizens, self.days, self.seeds[0], noise=self.noise,
                              warmup_days=self.warmup_days))
        return specs


@dataclass
class PopulationResult:
    """What one population came to: its figures, its counts, and how long each part took."""

    spec: Spec
    figures: Figures
    counts: dict[str, Any]
    seconds: dict[str, float]
    plots: list[str] = field(default_factory=list)


def evaluate(options: Options) -> list[PopulationResult]:
    """Every population of `options`, in parallel processes (`jobs`); in the order given."""
    specs = options.specs()
    if options.jobs <= 1 or len(specs) == 1:
        return [_evaluate_one(options, spec, i == 0) for i, spec in enumerate(specs)]
    with ProcessPoolExecutor(max_workers=options.jobs) as pool:
        futures = [pool.submit(_evaluate_one, options, spec, i == 0)
                   for i, spec in enumerate(specs)]
        return [f.result() for f in futures]


def _evaluate_one(options: Options, spec: Spec, plots: bool) -> PopulationResult:
    seconds: dict[str, float] = {}
    began = time.monotonic()
    # The registry's and the replay's "now" are simulated times: the run is deterministic.
    registered_at = spec.data_start - timedelta(days=31)
    with fresh_database(options.admin_dsn, keep=options.keep,
                                           storage=options.storage) as dsn, \
            psycopg.connect(dsn, autocommit=True) as conn:
        population = build(conn, spec, options.limits, registered_at)
        seconds["generate_and_store"] = time.monotonic() - began
        mark = time.monotonic()
        with conn.transaction():
            replayed = run_replay(conn, ReplayRequest(
                start=spec.start, end=spec.end, tick_s=options.tick_s,
                resolve_after=options.resolve_after, requested_by="evaluation"), spec.end)
        seconds["replay"] = time.monotonic() - mark
        keys = {v: k for k, v in population.citizen_ids.items()}
        alerts = [RaisedAlert(keys[a.citizen_id], a.rule, a.severity.value, a.opened_at)
                  for a in replayed.alerts]
        raising = [RaisedAlert(keys[f["citizen_id"]], f["rule"], f["severity"], f["evaluated_at"])
                   for f in repository.raising_findings(conn, replayed.run_id)]
        episodes = true_episodes(population)
        period = Period(spec.start, spec.end, spec.citizens)
        result = PopulationResult(
            spec=spec, figures=figures(episodes, alerts, period, options.nurses, KINDS, raising,
                                       replayed.reminders),
            counts=_counts(conn, population, replayed.items), seconds=seconds)
        if plots and options.out is not None:
            result.plots = _plot_kinds(conn, population, episodes, alerts, period, options.out)
    seconds["total"] = time.monotonic() - began
    log.info("%s done in %.0f s", spec.label, seconds["total"])
    return result


def true_episodes(population: Population) -> list[TrueEpisode]:
    """The ground truth's episodes in the terms of evaluation.quality."""
    return [TrueEpisode(e.id, e.citizen, e.kind, e.onset, e.crisis, e.last, e.metrics)
            for e in population.episodes]


def _counts(conn: psycopg.Connection[Any], population: Population, replayed: int
            ) -> dict[str, Any]:
    stored = repository.stored_counts(conn)
    return {"readings_generated": population.readings_generated,
            "readings_refused": population.refused_readings,
            "readings_stored": stored["readings"], "readings_late": stored["readings_late"],
            "readings_implausible": stored["readings_implausible"],
            "events_generated": population.events_generated, "events_stored": stored["events"],
            "events_late": stored["events_late"],
            "dead_letters": stored["dead_letters"], "refused_items": dict(population.refused),
            "sensor_glitches": population.glitches,
            "items_held_offline_or_skewed": population.late_items,
            "items_replayed": replayed, "episodes": len(population.episodes),
            "not_replayed_rules": sorted(STATUS_RULES)}


def _pick(matches: Sequence[Match]) -> Match:
    """A caught episode when there is one (the one caught furthest ahead), else a missed one."""
    caught = [m for m in matches if m.lead_h is not None]
    if caught:
        return max(caught, key=lambda m: m.lead_h or 0.0)
    return matches[0]


def _plot_kinds(conn: psycopg.Connection[Any], population: Population,
                episodes: Sequence[TrueEpisode], alerts: Sequence[RaisedAlert], period: Period,
                out: Path) -> list[str]:
    written = []
    conditions = {c.key: c.condition for c in population.fleet}
    for kind, matches in sorted(matches_by_kind(episodes, alerts, period).items()):
        chosen = _pick(matches)
        episode = chosen.episode
        window = (episode.onset - BEFORE, episode.last + AFTER)
        citizen_id = population.citizen_ids[episode.citizen]
        view = EpisodeView(episode=episode, condition=conditions[episode.citizen],
                           caught=chosen.first is not None, lead_h=chosen.lead_h,
                           population=population.spec.label, window=window,
                           **_view(conn, citizen_id, episode, window, alerts))
        written.append(str(plot_episode(view, out / f"episode_{kind}.png")))
    return written


def _view(conn: psycopg.Connection[Any], citizen_id: UUID, episode: TrueEpisode,
          window: tuple[datetime, datetime], alerts: Sequence[RaisedAlert]) -> dict[str, Any]:
    """The citizen's stored readings of the episode's metrics (implausible apart), her events
    and her alerts in the window."""
    history = load_series(conn, {citizen_id: window})[citizen_id]
    readings: dict[str, list[tuple[datetime, float]]] = defaultdict(list)
    implausible: dict[str, list[tuple[datetime, float]]] = defaultdict(list)
    for reading in history.readings:
        if reading.metric in episode.metrics:
            target = implausible if reading.quality == IMPLAUSIBLE else readings
            target[reading.metric].append((reading.measured_at, reading.value))
    events: dict[str, list[datetime]] = defaultdict(list)
    for event in history.events:
        if event.kind in episode.metrics or event.kind == "emergency_button":
            events[event.kind].append(event.measured_at)
    mine = [a for a in alerts if a.citizen == episode.citizen
            and window[0] <= a.opened_at <= window[1]]
    return {"readings": dict(readings), "implausible": dict(implausible),
            "events": dict(events), "alerts": mine}
