"""The alert engine's memory of each citizen's recent readings and events, kept between batches.

Without it every batch read each of its citizens' whole lookback (four days) from the
database again: a citizen whose oximeter sends every second was read hundreds of times a
minute, and the cost of a batch grew with the history instead of with the batch.

Why it stays complete: ingest queues every row it stores in the statement that stores it, and
the leading engine takes every queue row. So a citizen's history is what the database held
when the citizen was first loaded, plus every queued item taken since (the engine merges them
in before it evaluates; `merge` skips a row the load already held). The cache lives for one
leadership session: a new leader starts empty. Rows changed by other means (an erasure, a
correction by hand) are seen when an entry is reloaded, at the latest `refresh_after` after its
load. Bounded: at most `max_items` readings and events in all, the least recently used
citizens forgotten first."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID

from alerts.context import CitizenHistory, Conn, load_series
from core.clock import FAR_FUTURE


@dataclass
class _Entry:
    since: datetime  # the history holds every stored item measured from here on
    history: CitizenHistory
    loaded: float  # time.monotonic() of the load
    counted: int = 0  # its size as last added to the cache's total


class HistoryCache:
    def __init__(self, *, max_items: int = 2_000_000,
                 refresh_after: timedelta = timedelta(minutes=10),
                 keep: timedelta = timedelta(hours=1)) -> None:
        """`keep`: how much older than a window's start the history is kept, so that a
        slightly late item does not force a reload."""
        self._max_items = max_items
        self._refresh_after_s = refresh_after.total_seconds()
        self._keep = keep
        self._entries: OrderedDict[UUID, _Entry] = OrderedDict()
        # The entries' sizes, summed as they were last counted: at each call for its citizens,
        # and after the batch's items are merged into them (`recount`); evicting at the next
        # call, the bound holds to within a batch, with no walk over every entry per batch.
        self._total = 0
        self.loads = 0  # citizens loaded from the database (a figure for the logs and tests)

    def __len__(self) -> int:
        return len(self._entries)

    def histories(self, conn: Conn, windows: Mapping[UUID, tuple[datetime, datetime]]
                  ) -> dict[UUID, CitizenHistory]:
        """Each citizen's history holding at least their window [since, until]: from memory,
        or loaded for those not held, held from too late on, or held too long."""
        now = time.monotonic()
        # Loaded up to FAR_FUTURE, not up to the window's end: what a later batch needs is the
        # history from the window's start on, however far a device's clock ran ahead.
        stale = {citizen: (since - self._keep, FAR_FUTURE)
                 for citizen, (since, _) in windows.items() if not self._fresh(citizen, since, now)}
        if stale:
            self.loads += len(stale)
            for citizen, history in load_series(conn, stale).items():
                replaced = self._entries.get(citizen)
                self._total -= replaced.counted if replaced else 0
                self._entries[citizen] = _Entry(stale[citizen][0], history, now)
        for citizen, (since, _) in windows.items():
            self._entries.move_to_end(citizen)
            self._trim(self._entries[citizen], since - self._keep)
        self.recount(windows)
        self._evict(keep=len(windows))
        return {citizen: self._entries[citizen].history for citizen in windows}

    def recount(self, citizens: Iterable[UUID]) -> None:
        """Count again the entries of `citizens`, after items were merged into them."""
        for citizen in citizens:
            entry = self._entries.get(citizen)
            if entry is not None:
                self._total += entry.history.size - entry.counted
                entry.counted = entry.history.size

    def _fresh(self, citizen: UUID, since: datetime, now: float) -> bool:
        entry = self._entries.get(citizen)
        return (entry is not None and entry.since <= since
                and now - entry.loaded < self._refresh_after_s)

    @staticmethod
    def _trim(entry: _Entry, since: datetime) -> None:
        """Forget what is older than any window will ask for (windows move forward)."""
        if since > entry.since:
            entry.history.forget_before(since)
            entry.since = since

    def _evict(self, keep: int) -> None:
        """Forget the least recently used citizens beyond the bound (never the `keep` most
        recent: the batch in hand)."""
        while self._total > self._max_items and len(self._entries) > keep:
            _, entry = self._entries.popitem(last=False)
            self._total -= entry.counted
