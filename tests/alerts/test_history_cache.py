"""The engine's history cache on the real database: a citizen is read from the database once
and then follows from the queue; what the load already held is not doubled; a late item older
than what is held, an entry held too long and an evicted citizen are loaded again."""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from uuid import UUID

import psycopg

from alerts import context_repository as repo
from alerts.context import NewItems, group_queue_rows, load_contexts
from alerts.history_cache import HistoryCache
from alerts.models import Series
from tests.alerts.engine_support import FakeClock, bp_rows, enrolled, store

Conn = psycopg.Connection[Any]


def _taken(conn: Conn) -> dict[UUID, NewItems]:
    """Take the whole queue, as the engine takes a batch."""
    with conn.transaction():
        return group_queue_rows(repo.take_queue_batch(conn, 1000, 1000))


def _systolic(context: Any) -> list[float]:
    return [r.value for r in context.readings if r.metric == "systolic_bp"]


def test_a_citizen_is_loaded_once_and_then_follows_from_the_queue(dbconn: Conn) -> None:
    clock = FakeClock()
    device, citizen = enrolled(dbconn)
    cache = HistoryCache()
    store(dbconn, bp_rows(device, citizen, clock.now - timedelta(hours=1), 1, systolic=120))
    first = load_contexts(dbconn, [citizen], clock.now, new=_taken(dbconn), cache=cache)
    for seq, systolic in ((2, 130), (3, 140)):
        clock.advance(60)
        store(dbconn, bp_rows(device, citizen, clock.now, seq, systolic))
        latest = load_contexts(dbconn, [citizen], clock.now, new=_taken(dbconn), cache=cache)
    assert cache.loads == 1
    assert _systolic(first[citizen]) == [120]
    # The load held the first reading, the queue brought the others, each once.
    assert _systolic(latest[citizen]) == [120, 130, 140]
    assert [r.value for r in latest[citizen].new_readings if r.metric == "systolic_bp"] == [140]


def test_an_item_the_load_already_held_is_not_doubled(dbconn: Conn) -> None:
    clock = FakeClock()
    device, citizen = enrolled(dbconn)
    cache = HistoryCache()
    store(dbconn, bp_rows(device, citizen, clock.now, 1, systolic=120))
    # Loaded while the item is still queued (committed, not yet taken): then taken.
    load_contexts(dbconn, [citizen], clock.now, cache=cache)
    context = load_contexts(dbconn, [citizen], clock.now, new=_taken(dbconn), cache=cache)
    assert _systolic(context[citizen]) == [120]
    assert len(context[citizen].readings) == 3


def test_a_late_item_older_than_the_held_history_loads_the_citizen_again(dbconn: Conn) -> None:
    clock = FakeClock()
    device, citizen = enrolled(dbconn)
    cache = HistoryCache(keep=timedelta(hours=1))
    long_ago = clock.now - timedelta(days=6)
    store(dbconn, bp_rows(device, citizen, long_ago, 1, systolic=120))
    _taken(dbconn)  # evaluated long ago
    load_contexts(dbconn, [citizen], clock.now, cache=cache)
    store(dbconn, bp_rows(device, citizen, long_ago + timedelta(hours=2), 2, systolic=130))
    context = load_contexts(dbconn, [citizen], clock.now, new=_taken(dbconn), cache=cache)
    assert cache.loads == 2
    assert _systolic(context[citizen]) == [120, 130]


def test_an_entry_held_too_long_is_loaded_again(dbconn: Conn) -> None:
    clock = FakeClock()
    device, citizen = enrolled(dbconn)
    cache = HistoryCache(refresh_after=timedelta(0))
    load_contexts(dbconn, [citizen], clock.now, cache=cache)
    # Stored by another path than the queue (a correction by hand): seen at the reload.
    store(dbconn, bp_rows(device, citizen, clock.now, 1, systolic=150))
    _taken(dbconn)
    context = load_contexts(dbconn, [citizen], clock.now, cache=cache)
    assert cache.loads == 2
    assert _systolic(context[citizen]) == [150]


def test_the_least_recently_used_citizens_are_forgotten_beyond_the_bound(dbconn: Conn) -> None:
    clock = FakeClock()
    citizens = []
    for seq in range(3):
        device, citizen = enrolled(dbconn)
        store(dbconn, bp_rows(device, citizen, clock.now, seq + 1, systolic=120))
        citizens.append(citizen)
    _taken(dbconn)
    cache = HistoryCache(max_items=6)  # two citizens' three readings
    for citizen in citizens:
        load_contexts(dbconn, [citizen], clock.now, cache=cache)
    assert len(cache) == 2
    load_contexts(dbconn, [citizens[2]], clock.now, cache=cache)  # held: no load
    assert cache.loads == 3
    context = load_contexts(dbconn, [citizens[0]], clock.now, cache=cache)  # forgotten
    assert cache.loads == 4
    assert _systolic(context[citizens[0]]) == [120]


def test_items_merged_from_the_queue_count_towards_the_bound(dbconn: Conn) -> None:
    clock = FakeClock()
    (first_device, first), (device, citizen) = enrolled(dbconn), enrolled(dbconn)
    store(dbconn, bp_rows(first_device, first, clock.now, 1, systolic=120))
    store(dbconn, bp_rows(device, citizen, clock.now, 1, systolic=120))
    _taken(dbconn)
    cache = HistoryCache(max_items=6)  # the two citizens' three readings each
    load_contexts(dbconn, [first], clock.now, cache=cache)
    load_contexts(dbconn, [citizen], clock.now, cache=cache)
    for seq in (2, 3):  # the second citizen grows by the queue alone: no load
        clock.advance(60)
        store(dbconn, bp_rows(device, citizen, clock.now, seq, systolic=120))
        load_contexts(dbconn, [citizen], clock.now, new=_taken(dbconn), cache=cache)
    assert (cache.loads, len(cache)) == (2, 1)  # over the bound: the first one forgotten
    load_contexts(dbconn, [first], clock.now, cache=cache)
    assert cache.loads == 3


def test_items_merged_into_a_citizen_who_does_not_come_back_count_towards_the_bound(
        dbconn: Conn) -> None:
    clock = FakeClock()
    enrolled_ = [enrolled(dbconn) for _ in range(3)]
    for device, citizen in enrolled_:
        store(dbconn, bp_rows(device, citizen, clock.now, 1, systolic=120))
    _taken(dbconn)
    (_, first), (device, grown), (_, last) = enrolled_
    cache = HistoryCache(max_items=6)
    load_contexts(dbconn, [first], clock.now, cache=cache)
    load_contexts(dbconn, [grown], clock.now, cache=cache)  # 6 held: at the bound
    clock.advance(60)
    store(dbconn, bp_rows(device, grown, clock.now, 2, systolic=120))
    load_contexts(dbconn, [grown], clock.now, new=_taken(dbconn), cache=cache)  # 3 merged
    load_contexts(dbconn, [last], clock.now, cache=cache)  # 12 held: both earlier ones go
    assert (cache.loads, len(cache)) == (3, 1)
    load_contexts(dbconn, [grown], clock.now, cache=cache)
    assert cache.loads == 4


def test_the_prepared_series_are_what_the_rules_would_cut_from_the_readings(
        dbconn: Conn) -> None:
    clock = FakeClock()
    device, citizen = enrolled(dbconn)
    cache = HistoryCache()
    # Out of order, with an implausible value among them: the series keep order and skip it.
    for seq, minutes_ago, systolic in ((1, 30, 120), (2, 50, 260), (3, 10, 125), (4, 40, 118)):
        rows = bp_rows(device, citizen, clock.now - timedelta(minutes=minutes_ago), seq, systolic)
        if systolic > 250:
            rows = [row._replace(quality="implausible") for row in rows]
        store(dbconn, rows)
        if seq == 2:
            load_contexts(dbconn, [citizen], clock.now, cache=cache)
    context = load_contexts(dbconn, [citizen], clock.now, new=_taken(dbconn), cache=cache)[citizen]
    for metric in ("systolic_bp", "diastolic_bp", "pulse_rate"):
        assert context.prepared_series is not None
        prepared = context.prepared_series[metric]
        computed = Series.of(context.readings, metric)
        assert prepared.readings[prepared.lo:prepared.hi] == computed.readings
    assert [r.seq for r in computed.readings] == [4, 1, 3]
