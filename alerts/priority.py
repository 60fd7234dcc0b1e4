"""Which queued items the engine evaluates ahead of the queue: those that may raise an alert
that cannot wait behind a backlog of routine readings. An emergency-button press, a
questionnaire answer, a reading marked implausible, or a reading outside the warning band of
the citizen's threshold in force (the same bands the threshold rule applies).

A cheap look at each item alone, not a verdict: the rules decide what an item raises, and every
item is evaluated exactly once whichever lane takes it; only the order changes. A NEWS2 or
trend finding on in-band values waits its turn in the queue."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from uuid import UUID

from alerts.context import Configuration
from alerts.context_repository import QueuedItem
from alerts.models import Threshold
from alerts.rules.threshold import classify
from devices.catalogue import IMPLAUSIBLE, EventType

URGENT_EVENTS = frozenset({EventType.EMERGENCY_BUTTON, EventType.QUESTIONNAIRE_ANSWER})


def is_urgent(item: QueuedItem, bands: Mapping[str, Threshold]) -> bool:
    """Whether `item` may raise an alert at once, with `bands` the citizen's thresholds now."""
    if item.source == "event":
        return item.name in URGENT_EVENTS
    if item.quality == IMPLAUSIBLE:
        return True
    threshold = bands.get(item.name)
    return (threshold is not None and item.value is not None
            and classify(item.value, threshold.bands) is not None)


def urgent_citizens(items: Iterable[QueuedItem], configurations: Mapping[UUID, Configuration],
                    now: datetime) -> list[tuple[UUID, int]]:
    """The citizens with at least one urgent item, with the queue id of their first one, in
    the order those were queued."""
    bands: dict[UUID, dict[str, Threshold]] = {}
    urgent: dict[UUID, int] = {}
    for item in items:
        citizen = item.citizen_id
        if citizen in urgent:
            continue
        if citizen not in bands:
            bands[citizen] = configurations[citizen].bands_at(now)
        if is_urgent(item, bands[citizen]):
            urgent[citizen] = item.id
    return list(urgent.items())
