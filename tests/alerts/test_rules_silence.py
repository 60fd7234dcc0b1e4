"""Silence told apart: device offline (last will, or nothing within the heartbeat), battery low
(with hysteresis), invalid payloads (dead letters from one device); each self-resolving with
a clear when the condition has gone, held in a pause."""

from __future__ import annotations

from datetime import timedelta

from alerts.models import Severity
from alerts.rules import evaluate_tick
from alerts.rules.silence import BATTERY_LOW_PCT, HEARTBEAT, INVALID_PAYLOADS
from tests.alerts.test_rules_common import NOW, context, device


def _rule(findings: list, rule: str) -> list:
    return [f for f in findings if f.rule == rule]


def test_last_will_means_offline_at_once() -> None:
    will = device("ox", "pulse_oximeter", online=False, status_at=NOW - timedelta(minutes=1))
    (found,) = _rule(evaluate_tick(context(devices=(will,)), NOW), "device_offline")
    assert not found.clears and found.self_resolving and found.severity is Severity.YELLOW
    assert found.explanation["device_id"] == "ox" and found.measured_at == NOW - timedelta(minutes=1)
    assert found.occurrence == f"ox:{(NOW - timedelta(minutes=1)).isoformat()}"


def test_silence_beyond_the_heartbeat_is_offline_and_within_it_is_not() -> None:
    quiet = device("sc", "scale", status_at=NOW - HEARTBEAT - timedelta(seconds=1))
    (found,) = _rule(evaluate_tick(context(devices=(quiet,)), NOW), "device_offline")
    assert not found.clears
    recent = device("sc", "scale", status_at=NOW - HEARTBEAT)
    assert [f.clears for f in _rule(evaluate_tick(context(devices=(recent,)), NOW),
                                    "device_offline")] == [True]


def test_a_recent_message_counts_as_contact_too() -> None:
    seen = device("sc", "scale", status_at=NOW - timedelta(days=1), seen_at=NOW - timedelta(hours=1))
    assert [f.clears for f in _rule(evaluate_tick(context(devices=(seen,)), NOW),
                                    "device_offline")] == [True]


def test_one_offline_device_of_two_keeps_the_condition() -> None:
    off = device("a", "scale", online=False, status_at=NOW - timedelta(hours=1))
    on = device("b", "bp_monitor")
    found = _rule(evaluate_tick(context(devices=(off, on)), NOW), "device_offline")
    assert [(f.explanation["device_id"], f.clears) for f in found] == [("a", False)]


def test_a_device_never_heard_of_is_not_called_offline() -> None:
    never = device("n", "scale", online=None, status_at=None, seen_at=None)
    assert [f.clears for f in _rule(evaluate_tick(context(devices=(never,)), NOW),
                                    "device_offline")] == [True]


def test_battery_low_below_15_cleared_at_20() -> None:
    def battery(pct: float) -> list:
        return _rule(evaluate_tick(context(devices=(device("b", "scale", battery=pct),)), NOW),
                     "battery_low")
    (low,) = battery(BATTERY_LOW_PCT - 0.1)
    assert not low.clears and low.explanation["battery_pct"] == 14.9 and low.self_resolving
    assert battery(BATTERY_LOW_PCT) == [] and battery(19.9) == []   # no alarm, no clear
    assert [f.clears for f in battery(20.0)] == [True]


def test_battery_occurrence_is_one_per_device_and_local_day() -> None:
    low = device("b", "scale", battery=10.0)
    first = _rule(evaluate_tick(context(devices=(low,)), NOW), "battery_low")
    later = _rule(evaluate_tick(context(devices=(low,)), NOW + timedelta(hours=3)), "battery_low")
    assert first[0].occurrence == later[0].occurrence == "b:2026-12-02"


def test_invalid_payloads_from_one_device() -> None:
    def dead(count: int) -> list:
        return _rule(evaluate_tick(context(devices=(device("x", "scale", dead_letters=count),)), NOW),
                     "invalid_payloads")
    assert [f.clears for f in dead(INVALID_PAYLOADS - 1)] == [True]
    (found,) = dead(INVALID_PAYLOADS)
    assert not found.clears and found.explanation["dead_letters"] == INVALID_PAYLOADS


def test_silence_findings_are_held_in_a_pause() -> None:
    will = device("ox", "pulse_oximeter", online=False, status_at=NOW - timedelta(days=2))
    ctx = context(devices=(will,), pauses=((NOW - timedelta(hours=1), None),))
    (found,) = _rule(evaluate_tick(ctx, NOW), "device_offline")
    assert found.held


def test_silence_kinds_are_told_apart() -> None:
    devices = (device("off", "scale", online=False, status_at=NOW - timedelta(hours=2)),
               device("low", "bp_monitor", battery=5.0),
               device("bad", "glucometer", dead_letters=9))
    found = [f for f in evaluate_tick(context(devices=devices), NOW) if not f.clears]
    assert sorted((f.rule, f.explanation["device_id"]) for f in found) == [
        ("battery_low", "low"), ("device_offline", "off"), ("invalid_payloads", "bad")]


def test_a_reading_that_arrived_recently_is_contact() -> None:
    from tests.alerts.test_rules_common import reading
    quiet = device("sc", "scale", status_at=NOW - timedelta(days=1))
    weighed = reading("body_weight", 80, NOW - timedelta(hours=1), device="sc")
    found = _rule(evaluate_tick(context(devices=(quiet,), readings=(weighed,)), NOW), "device_offline")
    assert [f.clears for f in found] == [True]
