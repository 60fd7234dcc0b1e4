"""Rules run one by one under a guard. A rule that raises is a defect in Telecare, not a fact
about the citizen, and it must not take the other rules down with it: a personal baseline that
cannot score a value must never swallow the emergency button pressed in the same batch. Nor may
it fail silently, leaving the nurse to believe the citizen is watched: the guard turns the
exception into a `rule_failed:<rule>` finding, as severe as the worst the rule could have
raised, that says which rule could not look at what. The log gets the traceback once per
defect and process (the exception's message is left out: it may quote a reading)."""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from alerts.models import CitizenContext, EventView, Finding, ReadingView, Severity, is_current

log = logging.getLogger(__name__)

# The worst each guarded rule can raise: what its failure may hide.
WORST = {
    "threshold": Severity.RED, "weight_gain": Severity.YELLOW, "rate": Severity.YELLOW,
    "news2": Severity.RED, "events": Severity.RED, "anomaly": Severity.YELLOW,
    "missed": Severity.YELLOW, "device_offline": Severity.YELLOW,
    "battery_low": Severity.YELLOW, "invalid_payloads": Severity.YELLOW,
    "inactivity": Severity.RED,
    "first_motion": Severity.RED,
}
# Defects logged with their traceback already (bounded: a log line per defect, not per call).
_logged: set[tuple[str, str, str]] = set()
_LOGGED_MAX = 1_000

Rule = Callable[[], list[Finding]]


def run(ctx: CitizenContext, now: datetime, name: str, rule: Rule, *, tick: bool,
        worst: Severity | None = None) -> list[Finding]:
    """The rule's findings, or one `rule_failed:<name>` finding when it raised (as severe as
    `worst`, by default what WORST says of the rule)."""
    try:
        return rule()
    except Exception as exc:  # noqa: BLE001 - a defect in one rule must not stop the others
        _log_once(ctx, name, exc)
        return [failed(ctx, now, name, type(exc).__name__, tick=tick, worst=worst)]


def failed(ctx: CitizenContext, now: datetime, name: str, error: str, *, tick: bool,
           worst: Severity | None = None) -> Finding:
    """The finding that tells the care team a rule could not evaluate this citizen: on the
    tick, one occurrence per hour it keeps failing; on new items, one per item set (the newest
    item names it), current when that item is."""
    severity = worst or WORST.get(name, Severity.RED)
    if tick or not (ctx.new_readings or ctx.new_events):
        return Finding(
            rule=f"rule_failed:{name}", severity=severity,
            occurrence=f"tick:{now.strftime('%Y-%m-%dT%H')}", measured_at=now,
            summary=f"Telecare could not run its {name} rule for this citizen; until it is "
                    "fixed, what that rule watches is not watched",
            explanation={"rule": name, "error": error, "on": "tick"},
            held=name != "events" and ctx.paused_at(now))
    # What the rule would have looked at: the button's rules the events, the others the readings.
    looked_at: list[ReadingView | EventView] = (
        [*ctx.new_events] if name == "events" else [*ctx.new_readings])
    items = looked_at or [*ctx.new_readings, *ctx.new_events]
    newest = max(items, key=lambda item: (item.measured_at, item.seq))
    kind = newest.metric if isinstance(newest, ReadingView) else newest.kind
    return Finding(
        rule=f"rule_failed:{name}", severity=severity,
        occurrence=f"new:{newest.device_id}:{kind}:{newest.measured_at.isoformat()}:{newest.seq}",
        measured_at=newest.measured_at,
        summary=f"Telecare could not run its {name} rule on {len(items)} new measurement(s) or "
                "event(s) of this citizen: look at them yourself",
        explanation={"rule": name, "error": error, "on": "new", "items": len(items),
                     "newest": {"device_id": newest.device_id, "name": kind,
                                "measured_at": newest.measured_at.isoformat()}},
        # Current when any of them is: a late reading beside a button press hides nothing.
        is_current=any(is_current(item.measured_at, item.late, item.delay_cause, now)
                       for item in items),
        data_age_s=max(0.0, (now - newest.measured_at).total_seconds()),
        delay_cause=newest.delay_cause,
        # As the rule itself: the emergency button is never held by a pause.
        held=name != "events" and ctx.paused_at(newest.measured_at))


def _log_once(ctx: CitizenContext, name: str, exc: Exception) -> None:
    frames = traceback.extract_tb(exc.__traceback__)
    where = f"{frames[-1].filename}:{frames[-1].lineno}" if frames else "?"
    key = (name, type(exc).__name__, where)
    if key in _logged or len(_logged) >= _LOGGED_MAX:  # full: a thousand defects are enough
        log.debug("rule %s failed again for citizen %s (%s)", name, ctx.citizen_id, key[1])
        return
    _logged.add(key)
    log.error("rule %s failed for citizen %s (%s) at\n%s", name, ctx.citizen_id,
              type(exc).__name__, "".join(traceback.format_list(frames)))


def evaluation_failed(parked: Sequence[Mapping[str, Any]], error: str, now: datetime) -> Finding:
    """The finding for items the engine could not evaluate at all (their citizen's context or
    alert changes failed; the engine parked them): red, since any of them may be an alarm."""
    newest = max(parked, key=lambda row: (row["measured_at"], row["id"]))
    return Finding(
        rule="evaluation_failed", severity=Severity.RED,
        occurrence=f"queue:{newest['id']}", measured_at=newest["measured_at"],
        summary=f"Telecare could not evaluate {len(parked)} new measurement(s) or event(s) of "
                "this citizen: look at them yourself",
        explanation={"error": error.split(" at ", 1)[0], "items": len(parked),
                     "newest": {"device_id": newest["device_id"], "name": newest["name"],
                                "measured_at": newest["measured_at"].isoformat()}},
        data_age_s=max(0.0, (now - newest["measured_at"]).total_seconds()),
        delay_cause=newest["delay_cause"],
        is_current=any(is_current(row["measured_at"], row["late"], row["delay_cause"], now)
                       for row in parked))


def tick_failed(error: str, now: datetime) -> Finding:
    """The finding for a citizen whose time-driven rules could not run at all (her context
    failed to load, or her alert changes to store): one occurrence per hour it lasts."""
    return Finding(
        rule="evaluation_failed", severity=Severity.RED,
        occurrence=f"tick:{now.strftime('%Y-%m-%dT%H')}", measured_at=now,
        summary="Telecare could not run its time-driven rules (missed measurements, silence, "
                "inactivity) for this citizen; until it is fixed they are not watched",
        explanation={"error": error.split(" at ", 1)[0], "on": "tick"})
