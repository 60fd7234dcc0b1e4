"""The engine's baseline cache is bounded in bytes as well as in citizens (least recently used
forgotten first, a batch's own citizens kept), and the footprint it counts is close to what a
trained baseline really takes in memory (tracemalloc)."""

from __future__ import annotations

import gc
import random
import tracemalloc
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest

from alerts.baseline_cache import BaselineCache
from anomaly.baseline import Baseline, BaselineConfig, train

NOW = datetime(2026, 11, 1, tzinfo=UTC)


def trained(per_day: int, days: int = 60, seed: int = 1) -> Baseline:
    noise = random.Random(seed)
    count = per_day * days
    points = [(NOW - timedelta(days=days) + timedelta(days=days) * i / count,
               70 + noise.gauss(0, 3)) for i in range(count)]
    return train("pulse_rate", points, [], NOW, BaselineConfig(), resolution=1.0)


@pytest.mark.parametrize("per_day", [2, 24, 1440])
def test_the_footprint_is_within_a_third_of_what_tracemalloc_measures(per_day: int) -> None:
    trained(2)  # what the first training allocates once (imports, caches) is not counted
    gc.collect()
    tracemalloc.start()
    try:
        baseline = trained(per_day)
        gc.collect()
        measured, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert baseline.detector is not None
    assert measured * 2 / 3 <= baseline.footprint_bytes() <= measured * 4 / 3, measured


def test_the_byte_bound_forgets_the_least_recently_used(dbconn: psycopg.Connection[Any]) -> None:
    one = {"pulse_rate": trained(24)}
    size = one["pulse_rate"].footprint_bytes()
    cache = BaselineCache(max_bytes=3 * size)
    citizens: list[UUID] = [uuid4() for _ in range(5)]
    cache.put({citizen: one for citizen in citizens[:3]})
    assert (len(cache), cache.bytes) == (3, 3 * size)
    cache.baselines(dbconn, [citizens[0]])  # used: now the most recent
    cache.put({citizens[3]: one})
    assert cache.bytes == 3 * size
    assert set(cache.baselines(dbconn, [citizens[0], citizens[2], citizens[3]])) == {
        citizens[0], citizens[2], citizens[3]}
    assert cache.loads == 0  # citizens[1] went, the others were kept
    cache.put({citizen: one for citizen in citizens})
    assert len(cache) == 3 and cache.bytes == 3 * size


def test_a_batchs_own_citizens_are_kept_over_the_bound(dbconn: psycopg.Connection[Any]) -> None:
    cache = BaselineCache(max_citizens=2)
    batch = [uuid4() for _ in range(3)]
    assert set(cache.baselines(dbconn, batch)) == set(batch)  # none stored: none learnt
    assert len(cache) == 3 and cache.loads == 3
    cache.baselines(dbconn, [uuid4()])
    assert len(cache) == 2
