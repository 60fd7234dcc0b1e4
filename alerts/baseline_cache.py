"""The alert engine's memory of each citizen's personal baselines, kept between batches.

A citizen's baselines change only when they are retrained, and only the leading engine retrains
(alerts/retraining.py, on its tick): it puts what it trained here in the same step. A new session
(a new leadership) starts with an empty cache, so what another leader retrained in between is
read from the database. Bounded: at most `max_citizens`, the least recently used forgotten
first (a frozen baseline is about 20 KB per series in memory for one or two readings a day
over 60 days, more for denser series: the bound is in citizens, not bytes)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping
from uuid import UUID

from alerts import baseline_repository as repo
from alerts.context_repository import Conn
from anomaly.baseline import Baseline

Baselines = Mapping[str, Baseline]
_NONE: Baselines = {}


class BaselineCache:
    def __init__(self, *, max_citizens: int = 20_000) -> None:
        self._max_citizens = max_citizens
        self._entries: OrderedDict[UUID, Baselines] = OrderedDict()
        self.loads = 0  # citizens loaded from the database (a figure for tests)

    def __len__(self) -> int:
        return len(self._entries)

    def baselines(self, conn: Conn, citizens: Iterable[UUID]) -> dict[UUID, Baselines]:
        wanted = list(dict.fromkeys(citizens))
        missing = [citizen for citizen in wanted if citizen not in self._entries]
        if missing:
            self.loads += len(missing)
            loaded = repo.load(conn, missing)
            self._entries.update({citizen: loaded.get(citizen, _NONE) for citizen in missing})
        for citizen in wanted:
            self._entries.move_to_end(citizen)
        self._trim(len(wanted))
        return {citizen: self._entries[citizen] for citizen in wanted}

    def put(self, trained: Mapping[UUID, Baselines]) -> None:
        """What this engine has just retrained (and committed with the caller's transaction)."""
        for citizen, baselines in trained.items():
            self._entries[citizen] = baselines
            self._entries.move_to_end(citizen)
        self._trim(0)

    def _trim(self, keep: int) -> None:
        while len(self._entries) > max(self._max_citizens, keep):
            self._entries.popitem(last=False)
