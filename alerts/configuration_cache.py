"""The alert engine's memory of each citizen's configuration (plan periods, threshold versions,
pauses), kept between batches.

Without it every batch read them again for each of its citizens, three queries whose answer
changes only when a nurse edits something. Why it is never stale: every change to those tables
raises alert_configuration_version in its own transaction (migrations/0011), and the engine reads
that version first in each transaction that uses the cache; when it moved, everything held is
forgotten. A change that commits after the version was read and before the configuration was
loaded is held under the old version and forgotten at the next read. Bounded: at most
`max_citizens`, the least recently used forgotten first."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from uuid import UUID

from alerts import context_repository as repo
from alerts.context import Configuration, Conn, load_configurations
from core.clock import FAR_FUTURE, FAR_PAST


class ConfigurationCache:
    def __init__(self, *, max_citizens: int = 200_000) -> None:
        self._max_citizens = max_citizens
        self._version: int | None = None
        self._entries: OrderedDict[UUID, Configuration] = OrderedDict()
        self.loads = 0  # citizens loaded from the database (a figure for tests)

    def __len__(self) -> int:
        return len(self._entries)

    def configurations(self, conn: Conn, citizens: Iterable[UUID]) -> dict[UUID, Configuration]:
        """Each citizen's whole configuration (every version: callers pick by time)."""
        wanted = list(dict.fromkeys(citizens))
        version = repo.configuration_version(conn)  # before any load: see the module's doc
        if version != self._version:
            self._entries.clear()
            self._version = version
        missing = [citizen for citizen in wanted if citizen not in self._entries]
        if missing:
            self.loads += len(missing)
            self._entries.update(load_configurations(conn, missing, None, FAR_PAST, FAR_FUTURE))
        for citizen in wanted:
            self._entries.move_to_end(citizen)
        while len(self._entries) > max(self._max_citizens, len(wanted)):
            self._entries.popitem(last=False)
        return {citizen: self._entries[citizen] for citizen in wanted}
