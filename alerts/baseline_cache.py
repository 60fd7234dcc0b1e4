"""The alert engine's memory of each citizen's personal baselines, kept between batches.

A citizen's baselines change only when they are retrained, and only the leading engine retrains
(alerts/retraining.py, on its tick): it puts what it trained here in the same step. A new session
(a new leadership) starts with an empty cache, so what another leader retrained in between is
read from the database. Bounded in citizens and in bytes (Baseline.footprint_bytes: about 20 KB
a series for two readings a day, about 155 KB for a dense one), the least recently used
forgotten first; a batch's own citizens are kept whatever the bound, since it is using them."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping
from uuid import UUID

from alerts import baseline_repository as repo
from alerts.context_repository import Conn
from anomaly.baseline import Baseline

Baselines = Mapping[str, Baseline]
_NONE: Baselines = {}


def _footprint(baselines: Baselines) -> int:
    return sum(baseline.footprint_bytes() for baseline in baselines.values())


class BaselineCache:
    def __init__(self, *, max_citizens: int = 20_000, max_bytes: int = 512 * 2**20) -> None:
        self._max_citizens, self._max_bytes = max_citizens, max_bytes
        self._entries: OrderedDict[UUID, Baselines] = OrderedDict()
        self._sizes: dict[UUID, int] = {}
        self.bytes = 0  # what the entries take, by Baseline.footprint_bytes
        self.loads = 0  # citizens loaded from the database (a figure for tests)

    def __len__(self) -> int:
        return len(self._entries)

    def _set(self, citizen: UUID, baselines: Baselines) -> None:
        self.bytes += (size := _footprint(baselines)) - self._sizes.get(citizen, 0)
        self._entries[citizen], self._sizes[citizen] = baselines, size
        self._entries.move_to_end(citizen)

    def baselines(self, conn: Conn, citizens: Iterable[UUID]) -> dict[UUID, Baselines]:
        wanted = list(dict.fromkeys(citizens))
        missing = [citizen for citizen in wanted if citizen not in self._entries]
        if missing:
            self.loads += len(missing)
            loaded = repo.load(conn, missing)
            for citizen in missing:
                self._set(citizen, loaded.get(citizen, _NONE))
        for citizen in wanted:
            self._entries.move_to_end(citizen)
        self._trim(len(wanted))
        return {citizen: self._entries[citizen] for citizen in wanted}

    def put(self, trained: Mapping[UUID, Baselines]) -> None:
        """What this engine has just retrained (and committed with the caller's transaction)."""
        for citizen, baselines in trained.items():
            self._set(citizen, baselines)
        self._trim(0)

    def _trim(self, keep: int) -> None:
        """Forget the least recently used while over a bound, but the `keep` most recent."""
        while len(self._entries) > keep and (len(self._entries) > self._max_citizens
                                             or self.bytes > self._max_bytes):
            citizen, _ = self._entries.popitem(last=False)
            self.bytes -= self._sizes.pop(citizen)
