"""Silence of different kinds, told apart:
- device_offline: the last will said offline, or nothing (status or any message) within its
  heartbeat;
- not_measuring (alerts/rules/schedule.py, with the missed windows it counts): the device is
  online (heard from since the run of misses began, not offline now) but the citizen missed
  the windows of a metric it measures;
- battery_low: below 15 % (cleared at 20 % or more, so a battery near the limit does not flap);
- invalid_payloads: N or more dead letters from one device within 24 h.
All are condition rules: self-resolving, and a clear when the condition has gone."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from alerts.models import CitizenContext, DeviceState, Finding, Severity
from alerts.rules.common import age_s, local_date
from devices.catalogue import COMPONENTS, DEVICE_MEASUREMENTS, DeviceKind

# The protocol asks a status "at least every few hours" and the reference kit sends one every
# 6 h: a device is offline when nothing came for 6 h plus an hour's slack.
HEARTBEAT = timedelta(hours=7)
BATTERY_LOW_PCT = 15.0
BATTERY_CLEAR_PCT = 20.0
INVALID_PAYLOADS = 5
DEAD_LETTER_WINDOW = timedelta(hours=24)  # what DeviceState.recent_dead_letters must count


def last_contact(device: DeviceState, ctx: CitizenContext | None = None) -> datetime | None:
    """When Telecare last heard from the device: its status, last-seen mark, or the arrival of
    a reading or event of it in the context (whichever is newest)."""
    times = [t for t in (device.status_received_at, device.last_seen_at) if t is not None]
    if ctx is not None:
        times += [r.received_at for r in ctx.readings if r.device_id == device.device_id]
        times += [e.received_at for e in ctx.events if e.device_id == device.device_id]
    return max(times) if times else None


def offline_since(device: DeviceState, now: datetime, ctx: CitizenContext | None = None,
                  heartbeat: timedelta = HEARTBEAT) -> tuple[datetime, datetime] | None:
    """(last contact, when it became offline) of an offline device; None when online or never
    heard of (a device that never spoke has no time to reason from)."""
    contact = last_contact(device, ctx)
    if contact is None:
        return None
    if device.online is False:
        # Ingest marks a device online again when a reading arrives after its last will.
        return contact, device.status_received_at or contact
    if now - contact > heartbeat:
        return contact, contact + heartbeat
    return None


def _held(ctx: CitizenContext, at: datetime, now: datetime) -> bool:
    return ctx.paused_at(at) or ctx.paused_at(now)


def _clear(rule: str, now: datetime) -> Finding:
    return Finding(rule=rule, severity=Severity.YELLOW, occurrence=f"clear:{now.isoformat()}",
                   measured_at=now, summary="condition cleared", self_resolving=True, clears=True)


def device_offline(ctx: CitizenContext, now: datetime) -> list[Finding]:
    """A finding per offline device, or a clear when every device is online."""
    findings = []
    for device in sorted(ctx.devices, key=lambda d: d.device_id):
        offline = offline_since(device, now, ctx)
        if offline is None:
            continue
        contact, since = offline
        how = "its last will said offline" if device.online is False else "no status or data"
        findings.append(Finding(
            rule="device_offline", severity=Severity.YELLOW,
            occurrence=f"{device.device_id}:{contact.isoformat()}", measured_at=since,
            summary=f"Device {device.device_id} ({device.kind}) offline: {how} since "
                    f"{contact.isoformat(timespec='minutes')}",
            explanation={"device_id": device.device_id, "kind": device.kind,
                         "online": device.online, "last_contact": contact.isoformat(),
                         "heartbeat_s": HEARTBEAT.total_seconds()},
            data_age_s=age_s(contact, now), self_resolving=True, held=_held(ctx, since, now)))
    return findings or [_clear("device_offline", now)]


def battery_low(ctx: CitizenContext, now: datetime) -> list[Finding]:
    """A finding per device below 15 % (one a day), a clear when all are at 20 % or more."""
    findings = []
    settled = True
    for device in sorted(ctx.devices, key=lambda d: d.device_id):
        if device.battery_pct is None:
            continue
        if device.battery_pct < BATTERY_CLEAR_PCT:
            settled = False
        if device.battery_pct >= BATTERY_LOW_PCT:
            continue
        at = device.status_received_at or now
        findings.append(Finding(
            rule="battery_low", severity=Severity.YELLOW,
            occurrence=f"{device.device_id}:{local_date(now).isoformat()}", measured_at=at,
            summary=f"Battery of {device.device_id} ({device.kind}) at {device.battery_pct:g} %",
            explanation={"device_id": device.device_id, "kind": device.kind,
                         "battery_pct": device.battery_pct, "limit_pct": BATTERY_LOW_PCT},
            data_age_s=age_s(at, now), self_resolving=True, held=_held(ctx, at, now)))
    if findings:
        return findings
    return [_clear("battery_low", now)] if settled else []


def invalid_payloads(ctx: CitizenContext, now: datetime) -> list[Finding]:
    """A finding per device with INVALID_PAYLOADS or more recent dead letters (one a day)."""
    findings = []
    for device in sorted(ctx.devices, key=lambda d: d.device_id):
        if device.recent_dead_letters < INVALID_PAYLOADS:
            continue
        findings.append(Finding(
            rule="invalid_payloads", severity=Severity.YELLOW,
            occurrence=f"{device.device_id}:{local_date(now).isoformat()}", measured_at=now,
            summary=(f"{device.device_id} ({device.kind}) sent {device.recent_dead_letters} "
                     "invalid messages within 24 h"),
            explanation={"device_id": device.device_id, "kind": device.kind,
                         "dead_letters": device.recent_dead_letters,
                         "limit": INVALID_PAYLOADS, "window_s": DEAD_LETTER_WINDOW.total_seconds()},
            self_resolving=True, held=_held(ctx, now, now)))
    return findings or [_clear("invalid_payloads", now)]


def measures(device: DeviceState, metric: str) -> bool:
    """Whether this kind of device measures `metric`."""
    try:
        kind = DeviceKind(device.kind)
    except ValueError:
        return False
    return any(metric in COMPONENTS[m].values() for m in DEVICE_MEASUREMENTS.get(kind, ()))


def online_through(device: DeviceState, since: datetime, now: datetime,
                   ctx: CitizenContext) -> bool:
    """Whether the device is online now and Telecare has heard from it since `since`."""
    contact = last_contact(device, ctx)
    return offline_since(device, now, ctx) is None and contact is not None and contact >= since


def evaluate(ctx: CitizenContext, now: datetime,
             rules: Sequence[str] = ("device_offline", "battery_low", "invalid_payloads"),
             ) -> list[Finding]:
    """All silence findings (and clears) for one citizen at `now`."""
    findings: list[Finding] = []
    if "device_offline" in rules:
        findings += device_offline(ctx, now)
    if "battery_low" in rules:
        findings += battery_low(ctx, now)
    if "invalid_payloads" in rules:
        findings += invalid_payloads(ctx, now)
    return findings
