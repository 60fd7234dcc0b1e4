"""Builds the CitizenContext the rules look at, for a whole batch of citizens at once: one query
per kind (readings, events, devices, plans, thresholds, pauses) per batch, never per reading.

The live engine and replay share `build_context`: the engine loads a citizen's history around
its clock's now, replay loads a whole period once and builds each step's context from it in
memory. Either way a context holds what was measured up to its evaluation time (or up to the
latest new item), the plans and thresholds in force then, and the pauses around it."""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from uuid import UUID

from alerts import baseline_repository
from alerts import context_repository as repo
from alerts.models import (
    Bands,
    CitizenContext,
    DeviceState,
    EventView,
    ReadingView,
    Series,
    Threshold,
)
from alerts.plans import default_thresholds
from alerts.rules import DEAD_LETTER_WINDOW, LOOKBACK
from anomaly.baseline import Baseline
from devices.catalogue import IMPLAUSIBLE

if TYPE_CHECKING:
    from alerts.baseline_cache import BaselineCache
    from alerts.configuration_cache import ConfigurationCache
    from alerts.history_cache import HistoryCache

Conn = repo.Conn

# The version a proposed (not yet saved) threshold carries in a what-if replay.
PROPOSED_VERSION = -1


@dataclass
class NewItems:
    """What triggered one citizen's evaluation: readings and events taken from the queue."""

    readings: list[ReadingView] = field(default_factory=list)
    events: list[EventView] = field(default_factory=list)

    def _times(self) -> list[datetime]:
        return [r.measured_at for r in self.readings] + [e.measured_at for e in self.events]

    def earliest(self) -> datetime | None:
        return min(self._times(), default=None)

    def latest(self) -> datetime | None:
        return max(self._times(), default=None)


@dataclass(frozen=True)
class PlanPeriod:
    plan: str
    start: datetime
    end: datetime | None
    settings: dict[str, Any]

    def covers(self, at: datetime) -> bool:
        return self.start <= at and (self.end is None or at < self.end)


def _reading_key(reading: ReadingView) -> tuple[datetime, int, str, str]:
    return (reading.measured_at, reading.seq, reading.metric, reading.device_id)


def _event_key(event: EventView) -> tuple[datetime, int, str, str]:
    return (event.measured_at, event.seq, event.device_id, "")


@dataclass
class CitizenHistory:
    """What is stored about one citizen over some span, from which contexts are cut: readings
    and events oldest first, plan periods, every threshold version, pauses, devices.

    A reading's sort key holds its stored identity (device, metric, measured time, sequence
    number), an event's likewise: `merge` adds only what the history does not hold yet."""

    readings: list[ReadingView] = field(default_factory=list)
    events: list[EventView] = field(default_factory=list)
    plans: list[PlanPeriod] = field(default_factory=list)
    thresholds: list[Threshold] = field(default_factory=list)
    pauses: list[tuple[datetime, datetime | None]] = field(default_factory=list)
    devices: list[DeviceState] = field(default_factory=list)
    _reading_keys: list[tuple[datetime, int, str, str]] = field(default_factory=list, repr=False)
    _event_keys: list[tuple[datetime, int, str, str]] = field(default_factory=list, repr=False)
    # The plausible readings per metric, in the same order, for the rules' Series.
    _plausible: dict[str, _MetricReadings] = field(default_factory=dict, repr=False)

    def index(self) -> CitizenHistory:
        """Sort and index for cutting windows (call once, after filling)."""
        self.readings.sort(key=_reading_key)
        self.events.sort(key=_event_key)
        self._reading_keys = [_reading_key(r) for r in self.readings]
        self._event_keys = [_event_key(e) for e in self.events]
        self._plausible = {}
        for reading in self.readings:
            if reading.quality != IMPLAUSIBLE:
                self._plausible.setdefault(reading.metric, _MetricReadings()).append(reading)
        return self

    def merge(self, readings: Iterable[ReadingView], events: Iterable[EventView]) -> None:
        """Insert, in order, the readings and events this (indexed) history does not hold."""
        for reading in readings:
            if (_insert(self.readings, self._reading_keys, reading, _reading_key(reading))
                    and reading.quality != IMPLAUSIBLE):
                self._plausible.setdefault(reading.metric, _MetricReadings()).insert(reading)
        for event in events:
            _insert(self.events, self._event_keys, event, _event_key(event))

    def forget_before(self, since: datetime) -> None:
        """Drop readings and events measured before `since`."""
        cut = bisect_left(self._reading_keys, (since,))
        del self.readings[:cut], self._reading_keys[:cut]
        cut = bisect_left(self._event_keys, (since,))
        del self.events[:cut], self._event_keys[:cut]
        for readings in self._plausible.values():
            readings.forget_before(since)

    def series_within(self, since: datetime, until: datetime) -> dict[str, Series]:
        """Per metric, the plausible readings measured within [since, until]."""
        return {metric: readings.within(since, until)
                for metric, readings in self._plausible.items()}

    @property
    def size(self) -> int:
        return len(self.readings) + len(self.events)

    def readings_within(self, since: datetime, until: datetime) -> tuple[ReadingView, ...]:
        lo = bisect_left(self._reading_keys, (since,))
        return tuple(self.readings[lo:bisect_left(self._reading_keys, (until + _TICK,))])

    def events_within(self, since: datetime, until: datetime) -> tuple[EventView, ...]:
        lo = bisect_left(self._event_keys, (since,))
        return tuple(self.events[lo:bisect_left(self._event_keys, (until + _TICK,))])

    def plans_at(self, at: datetime) -> dict[str, dict[str, Any]]:
        return plans_in_force(self.plans, at)

    def thresholds_at(self, at: datetime) -> dict[str, Threshold]:
        return thresholds_in_force(self.thresholds, at)

    def configure(self, configuration: Configuration) -> None:
        self.plans = list(configuration.plans)
        self.thresholds = list(configuration.thresholds)
        self.pauses = list(configuration.pauses)


@dataclass(frozen=True)
class Configuration:
    """One citizen's plan periods, threshold versions and pauses: what a nurse sets."""

    plans: tuple[PlanPeriod, ...] = ()
    thresholds: tuple[Threshold, ...] = ()
    pauses: tuple[tuple[datetime, datetime | None], ...] = ()

    def bands_at(self, at: datetime) -> dict[str, Threshold]:
        """The threshold of each metric at `at`: the citizen's version in force, else the
        plans' default (as build_context gives the rules)."""
        return {**default_thresholds(tuple(plans_in_force(self.plans, at))),
                **thresholds_in_force(self.thresholds, at)}


def plans_in_force(plans: Iterable[PlanPeriod], at: datetime) -> dict[str, dict[str, Any]]:
    """Settings of the plans in force at `at`; a plan's start bounds what counts as missed
    (a citizen enrolled today has missed nothing from before), unless settings say more."""
    return {p.plan: {"valid_from": p.start, **p.settings}
            for p in sorted(plans, key=lambda p: p.plan) if p.covers(at)}


def thresholds_in_force(thresholds: Iterable[Threshold], at: datetime) -> dict[str, Threshold]:
    """The newest version valid at `at`, per metric."""
    in_force: dict[str, Threshold] = {}
    for threshold in thresholds:
        if threshold.valid_from is None or threshold.valid_from > at:
            continue
        held = in_force.get(threshold.metric)
        if held is None or _newer(threshold, held):
            in_force[threshold.metric] = threshold
    return in_force


# The smallest step of a timestamp: (until + _TICK,) sorts after every key measured at until.
_TICK = timedelta(microseconds=1)


def _insert(items: list[Any], keys: list[tuple[datetime, int, str, str]], item: Any,
            key: tuple[datetime, int, str, str]) -> bool:
    """Insert `item` at its key's place unless an item with that key is there (the same stored
    row: one taken from the queue that the history already held); whether it was inserted."""
    at = bisect_left(keys, key)
    if at < len(keys) and keys[at] == key:
        return False
    keys.insert(at, key)
    items.insert(at, item)
    return True


@dataclass
class _MetricReadings:
    """One metric's plausible readings of a history, in history order, with their times and
    values beside them (what a Series cuts)."""

    readings: list[ReadingView] = field(default_factory=list)
    keys: list[tuple[datetime, int, str, str]] = field(default_factory=list)
    times: list[datetime] = field(default_factory=list)
    values: list[float] = field(default_factory=list)

    def append(self, reading: ReadingView) -> None:
        self._put(len(self.keys), reading)

    def insert(self, reading: ReadingView) -> None:
        self._put(bisect_left(self.keys, _reading_key(reading)), reading)

    def _put(self, at: int, reading: ReadingView) -> None:
        self.readings.insert(at, reading)
        self.keys.insert(at, _reading_key(reading))
        self.times.insert(at, reading.measured_at)
        self.values.insert(at, reading.value)

    def forget_before(self, since: datetime) -> None:
        cut = bisect_left(self.times, since)
        del self.readings[:cut], self.keys[:cut], self.times[:cut], self.values[:cut]

    def within(self, since: datetime, until: datetime) -> Series:
        return Series(self.readings, self.times, self.values, bisect_left(self.times, since),
                      bisect_right(self.times, until))


def _newer(candidate: Threshold, held: Threshold) -> bool:
    assert candidate.valid_from is not None and held.valid_from is not None
    return (candidate.valid_from, candidate.version) > (held.valid_from, held.version)


def reading_view(row: Mapping[str, Any], metric_key: str = "metric") -> ReadingView:
    """A readings (or queue) row as the rules see it."""
    return ReadingView(device_id=row["device_id"], metric=row[metric_key],
                       measured_at=row["measured_at"], seq=row["seq"], value=row["value"],
                       received_at=row["received_at"], late=row["late"],
                       delay_cause=row["delay_cause"], quality=row["quality"] or "valid",
                       clock_suspect=row["clock_suspect"])


def event_view(row: Mapping[str, Any], kind_key: str = "kind") -> EventView:
    """A device_events (or queue) row as the rules see it."""
    return EventView(device_id=row["device_id"], kind=row[kind_key],
                     measured_at=row["measured_at"], seq=row["seq"],
                     received_at=row["received_at"], data=dict(row["data"] or {}),
                     late=row["late"], delay_cause=row["delay_cause"],
                     clock_suspect=row["clock_suspect"])


def group_queue_rows(rows: Iterable[Mapping[str, Any]]) -> dict[UUID, NewItems]:
    """Queue rows (evaluation_queue) by citizen, in queue order."""
    grouped: dict[UUID, NewItems] = defaultdict(NewItems)
    for row in rows:
        items = grouped[row["citizen_id"]]
        if row["source"] == "reading":
            items.readings.append(reading_view(row, "name"))
        else:
            items.events.append(event_view(row, "name"))
    return dict(grouped)


def threshold_from_row(row: Mapping[str, Any]) -> Threshold:
    bands = Bands(alert_low=row["alert_low"], warning_low=row["warning_low"],
                  warning_high=row["warning_high"], alert_high=row["alert_high"])
    return Threshold(metric=row["metric"], bands=bands, version=row["version"], id=row["id"],
                     valid_from=row["valid_from"])


def proposed_thresholds(proposed: Mapping[str, Bands]) -> dict[str, Threshold]:
    """What-if bands, as thresholds of the proposed version (no row yet)."""
    return {metric: Threshold(metric=metric, bands=bands, version=PROPOSED_VERSION)
            for metric, bands in proposed.items()}


def window(now: datetime, new: NewItems | None, lookback: timedelta = LOOKBACK
           ) -> tuple[datetime, datetime]:
    """[since, until] of a context: `lookback` before now (or before the earliest new item,
    one that arrived late), up to now (or the latest new item)."""
    earliest = new.earliest() if new else None
    latest = new.latest() if new else None
    since = min(now, earliest) if earliest else now
    return since - lookback, max(now, latest) if latest else now


def build_context(citizen: UUID, history: CitizenHistory, now: datetime,
                  new: NewItems | None = None, *,
                  proposed: Mapping[str, Threshold] | None = None,
                  lookback: timedelta = LOOKBACK,
                  baselines: Mapping[str, Baseline] | None = None) -> CitizenContext:
    """The context of `citizen` at `now` cut from `history`, with her `baselines` (pure)."""
    since, until = window(now, new, lookback)
    plans = history.plans_at(now)
    names = tuple(plans)
    thresholds = {**default_thresholds(names), **history.thresholds_at(now), **(proposed or {})}
    pauses = tuple((start, end) for start, end in history.pauses
                   if start <= until and (end is None or end >= since))
    items = new or NewItems()
    return CitizenContext(
        citizen_id=citizen, plans=names, thresholds=thresholds,
        readings=history.readings_within(since, until), events=history.events_within(since, until),
        new_readings=tuple(items.readings), new_events=tuple(items.events),
        devices=tuple(history.devices), pauses=pauses, plan_settings=plans,
        prepared_series=history.series_within(since, until), baselines=baselines or {})


def load_histories(conn: Conn, windows: Mapping[UUID, tuple[datetime, datetime]],
                   at: datetime | None, *, with_devices: bool = True,
                   cache: HistoryCache | None = None,
                   configurations: ConfigurationCache | None = None) -> dict[UUID, CitizenHistory]:
    """Each citizen's readings and events within their window (from `cache` when it holds
    them), plans and thresholds (in force at `at`; every version when `at` is None; from
    `configurations` when given), pauses overlapping the windows, and (with `with_devices`)
    devices paired at `at` with status and recent dead letters. Six queries at most (and
    load_contexts adds one for the baselines)."""
    if not windows:
        return {}
    histories = (load_series(conn, windows) if cache is None else cache.histories(conn, windows))
    citizens = list(windows)
    if configurations is not None:
        configured = configurations.configurations(conn, citizens)
    else:
        since = min(s for s, _ in windows.values())
        until = max(u for _, u in windows.values())
        configured = load_configurations(conn, citizens, at, since, until)
    for citizen, history in histories.items():
        history.configure(configured[citizen])
        history.devices = []
    if with_devices and at is not None:
        _load_devices(conn, histories, at)
    return histories


def load_series(conn: Conn, windows: Mapping[UUID, tuple[datetime, datetime]]
                ) -> dict[UUID, CitizenHistory]:
    """Each citizen's readings and events within their window, indexed (two queries)."""
    histories = {citizen: CitizenHistory() for citizen in windows}
    for row in repo.readings_in_windows(conn, dict(windows)):
        histories[row["citizen_id"]].readings.append(reading_view(row))
    for row in repo.events_in_windows(conn, dict(windows)):
        histories[row["citizen_id"]].events.append(event_view(row))
    return {citizen: history.index() for citizen, history in histories.items()}


def load_configurations(conn: Conn, citizens: Sequence[UUID], at: datetime | None,
                        since: datetime, until: datetime) -> dict[UUID, Configuration]:
    """Each citizen's plan periods and threshold versions in force at `at` (all of them when
    `at` is None) and pauses overlapping [since, until] (three queries)."""
    plans: dict[UUID, list[PlanPeriod]] = defaultdict(list)
    thresholds: dict[UUID, list[Threshold]] = defaultdict(list)
    pauses: dict[UUID, list[tuple[datetime, datetime | None]]] = defaultdict(list)
    for row in repo.plans(conn, citizens, at):
        plans[row["citizen_id"]].append(
            PlanPeriod(row["plan"], row["start"], row["end"], dict(row["settings"] or {})))
    for row in repo.thresholds(conn, citizens, at):
        thresholds[row["citizen_id"]].append(threshold_from_row(row))
    for row in repo.pauses_overlapping(conn, citizens, since, until):
        pauses[row["citizen_id"]].append((row["start"], row["end"]))
    return {citizen: Configuration(tuple(plans[citizen]), tuple(thresholds[citizen]),
                                   tuple(pauses[citizen]))
            for citizen in citizens}


def _load_devices(conn: Conn, histories: Mapping[UUID, CitizenHistory], at: datetime) -> None:
    """Add to each history the devices paired at `at`, their status and recent dead letters."""
    for row in repo.devices_at(conn, list(histories), at, at - DEAD_LETTER_WINDOW):
        histories[row["citizen_id"]].devices.append(DeviceState(
            device_id=row["device_id"], kind=row["kind"], online=row["online"],
            status_received_at=row["status_received_at"],
            last_seen_at=row["last_seen_at"], battery_pct=row["battery_pct"],
            recent_dead_letters=int(row["dead_letters"])))


def load_contexts(conn: Conn, citizens: Sequence[UUID], now: datetime, *,
                  new: Mapping[UUID, NewItems] | None = None,
                  lookback: timedelta = LOOKBACK, cache: HistoryCache | None = None,
                  configurations: ConfigurationCache | None = None,
                  baselines: BaselineCache | None = None,
                  with_devices: bool = True) -> dict[UUID, CitizenContext]:
    """The live context of each citizen at `now`, with the new items that triggered it (which
    `cache`, when given, learns: they are stored rows), with configurations and baselines from
    `configurations` and `baselines` when given; without devices when the rules to run
    look at none."""
    new = new or {}
    windows = {citizen: window(now, new.get(citizen), lookback) for citizen in citizens}
    histories = load_histories(conn, windows, now, cache=cache, configurations=configurations,
                               with_devices=with_devices)
    for citizen, items in new.items():
        histories[citizen].merge(items.readings, items.events)
    if cache is not None:
        cache.recount(new)
    learnt = (baselines.baselines(conn, citizens) if baselines is not None
              else baseline_repository.load(conn, citizens))
    return {citizen: build_context(citizen, histories[citizen], now, new.get(citizen),
                                   lookback=lookback, baselines=learnt.get(citizen))
            for citizen in citizens}
