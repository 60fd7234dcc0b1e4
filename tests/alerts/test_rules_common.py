"""Builders the rule tests share (readings, events, devices, contexts on a fixed clock), and the
tests of what every rule shares: data age, currency, pauses."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from alerts.models import (
    STALE_AFTER,
    CitizenContext,
    DeviceState,
    EventView,
    ReadingView,
    Severity,
    Threshold,
)
from alerts.rules.common import age_s, finding_about, overlaps_pause

# 09:00 local (Copenhagen, winter time) on a Wednesday.
NOW = datetime(2026, 12, 2, 8, 0, tzinfo=UTC)
CITIZEN = uuid.UUID("00000000-0000-0000-0000-000000000001")


def reading(metric: str, value: float, at: datetime = NOW, *, device: str = "dev-1", seq: int = 1,
            late: bool = False, delay_cause: str | None = None, quality: str = "valid",
            received_at: datetime | None = None) -> ReadingView:
    return ReadingView(device_id=device, metric=metric, measured_at=at, seq=seq, value=value,
                       received_at=received_at or at, late=late, delay_cause=delay_cause,
                       quality=quality)


def event(kind: str, at: datetime = NOW, *, device: str = "dev-e", seq: int = 1,
          data: dict[str, Any] | None = None, late: bool = False,
          delay_cause: str | None = None) -> EventView:
    return EventView(device_id=device, kind=kind, measured_at=at, seq=seq, received_at=at,
                     data=data or {}, late=late, delay_cause=delay_cause)


def device(device_id: str, kind: str, *, online: bool | None = True,
           status_at: datetime | None = NOW, seen_at: datetime | None = None,
           battery: float | None = 80.0, dead_letters: int = 0) -> DeviceState:
    return DeviceState(device_id=device_id, kind=kind, online=online, status_received_at=status_at,
                       last_seen_at=seen_at, battery_pct=battery, recent_dead_letters=dead_letters)


def context(plans: tuple[str, ...] = (), *, readings: tuple[ReadingView, ...] = (),
            new: tuple[ReadingView, ...] = (), events: tuple[EventView, ...] = (),
            new_events: tuple[EventView, ...] = (), devices: tuple[DeviceState, ...] = (),
            thresholds: dict[str, Threshold] | None = None,
            pauses: tuple[tuple[datetime, datetime | None], ...] = (),
            settings: dict[str, dict[str, Any]] | None = None) -> CitizenContext:
    """A context whose history holds `readings` and the new ones (as the engine builds it)."""
    history = tuple(sorted({*readings, *new}, key=lambda r: (r.measured_at, r.seq, r.metric)))
    all_events = tuple(sorted([*events, *(e for e in new_events if e not in events)],
                              key=lambda e: (e.measured_at, e.seq)))
    return CitizenContext(citizen_id=CITIZEN, plans=plans, thresholds=thresholds or {},
                          readings=history, events=all_events, new_readings=new,
                          new_events=new_events, devices=devices, pauses=pauses,
                          plan_settings=settings or {})


def test_finding_about_current_data_is_current_with_its_age() -> None:
    item = reading("spo2", 90, NOW - timedelta(minutes=10))
    found = finding_about(item, context(), NOW, rule="x", severity=Severity.RED, summary="s",
                          explanation={})
    assert found.is_current and found.data_age_s == 600 and not found.held
    assert found.occurrence == item.occurrence and found.measured_at == item.measured_at


def test_finding_about_data_held_back_by_the_device_is_old_and_says_so() -> None:
    item = reading("spo2", 90, NOW - timedelta(minutes=10), late=True, delay_cause="device")
    found = finding_about(item, context(), NOW, rule="x", severity=Severity.RED, summary="s",
                          explanation={})
    assert not found.is_current and found.delay_cause == "device"
    assert "old data" in found.summary and "device" in found.summary


def test_finding_about_transit_delay_still_recent_is_current() -> None:
    item = reading("spo2", 90, NOW - timedelta(minutes=30), late=True, delay_cause="transit")
    found = finding_about(item, context(), NOW, rule="x", severity=Severity.RED, summary="s",
                          explanation={})
    assert found.is_current


def test_finding_about_data_older_than_stale_after_is_not_current() -> None:
    item = reading("spo2", 90, NOW - STALE_AFTER - timedelta(seconds=1))
    found = finding_about(item, context(), NOW, rule="x", severity=Severity.RED, summary="s",
                          explanation={})
    assert not found.is_current


def test_finding_measured_in_a_pause_is_held_unless_not_holdable() -> None:
    ctx = context(pauses=((NOW - timedelta(days=1), None),))
    item = reading("spo2", 90)
    assert finding_about(item, ctx, NOW, rule="x", severity=Severity.RED, summary="s",
                         explanation={}).held
    assert not finding_about(item, ctx, NOW, rule="x", severity=Severity.RED, summary="s",
                             explanation={}, holdable=False).held
    ended = context(pauses=((NOW - timedelta(days=2), NOW - timedelta(days=1)),))
    assert not finding_about(item, ended, NOW, rule="x", severity=Severity.RED, summary="s",
                             explanation={}).held


def test_age_is_never_negative_and_pause_overlap_is_half_open() -> None:
    assert age_s(NOW + timedelta(minutes=5), NOW) == 0.0
    ctx = context(pauses=((NOW, NOW + timedelta(hours=1)),))
    assert overlaps_pause(ctx, NOW - timedelta(hours=1), NOW + timedelta(minutes=1))
    assert not overlaps_pause(ctx, NOW - timedelta(hours=1), NOW)
    assert not overlaps_pause(ctx, NOW + timedelta(hours=1), NOW + timedelta(hours=2))
