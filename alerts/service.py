"""Alert operations on a connection: record findings, escalate, release held alerts,
acknowledge and resolve; thresholds, plans, pauses, care teams, escalation policies, webhooks.

The caller owns the transaction: inside one, these run in it and never commit (the engine
commits its queue deletion and the alerts together). On an autocommit connection each
operation runs in a transaction of its own, so a lock it takes is held until it is done.
Every change to an alert writes its history row, and in the same transaction the webhook
deliveries and screen messages it causes (the outboxes alerts/webhooks.py and the screen
sender deliver)."""

from __future__ import annotations

import ipaddress
import logging
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit
from uuid import UUID

import httpx
import psycopg
from psycopg import sql
from psycopg.pq import TransactionStatus
from pydantic import ValidationError

from alerts import lifecycle, plans, repository
from alerts.errors import (
    AlertNotFound,
    InvalidPause,
    InvalidPlan,
    InvalidPolicy,
    InvalidThresholds,
    InvalidWebhook,
    PauseNotFound,
    PlanConflict,
    PlanNotFound,
    TeamConflict,
    TeamNotFound,
    WebhookNotFound,
)
from alerts.escalation import DEFAULT_POLICY, EscalationPolicy, parse_policy
from alerts.lifecycle import Action, AlertState, HistoryEntry
from alerts.models import Bands, Finding, Threshold
from alerts.repository import (
    CareTeam,
    Conn,
    FindingRow,
    HistoryRow,
    Pause,
    PlanAssignment,
    ThresholdVersion,
    Webhook,
)
from alerts.webhooks import new_webhook_secret
from devices.catalogue import METRICS
from devices.errors import CitizenNotFound

log = logging.getLogger(__name__)

SEEN_TEXT = "Your nurse has seen your measurement"
REMINDER_TEXT = "Remember to take your measurement"
PAUSE_REASONS = frozenset({"hospital_admission", "holiday", "other"})
ESCALATION_BATCH = 500


@contextmanager
def _atomic(conn: Conn) -> Iterator[None]:
    """The caller's transaction when there is one, else one of our own (autocommit)."""
    if conn.autocommit and conn.info.transaction_status == TransactionStatus.IDLE:
        with conn.transaction():
            yield
    else:
        yield


# --- alerts ---------------------------------------------------------------------------------

def record_findings(conn: Conn, citizen_id: UUID, care_team_id: UUID | None,
                    findings: Sequence[Finding], now: datetime) -> list[int]:
    """Turn the citizen's findings into alert changes; returns the history ids written. A
    finding already recorded (same citizen, rule and occurrence) changes nothing."""
    reminders = [f for f in findings if f.reminder]
    findings = [f for f in findings if not f.reminder]
    if reminders:
        _remind(conn, citizen_id, reminders, now)
    if not findings:
        return []
    rules = sorted({f.rule for f in findings})
    with _atomic(conn):
        active = repository.active_alerts(conn, citizen_id, rules)
        if any(not f.clears and f.rule not in active for f in findings):
            # A new alert may open: one writer at a time decides (the lock, held to the end of
            # the transaction, is taken only then, so a tick over many citizens holds few).
            repository.lock_citizen_alerts(conn, citizen_id)
            active = repository.active_alerts(conn, citizen_id, rules)
        # A clear without an alert it could resolve is the usual tick: no further query. (An
        # alert opened earlier in this batch may be cleared later in it.)
        opening = {f.rule for f in findings if not f.clears}
        relevant = [f for f in findings if not f.clears or f.rule in opening
                    or (f.rule in active and active[f.rule].self_resolving)]
        if not relevant:
            return []
        seen = repository.recorded_occurrences(conn, citizen_id,
                                               [(f.rule, f.occurrence) for f in relevant])
        policy = policy_for(conn, care_team_id)
        written: list[int] = []
        for finding in relevant:
            key = (finding.rule, finding.occurrence)
            if key in seen:
                continue
            seen.add(key)
            before = active.get(finding.rule)
            if before is not None and care_team_id is not None:
                before = replace(before, care_team_id=care_team_id)
            after, entries = lifecycle.apply_finding(before, finding, now, policy,
                                                     citizen_id=citizen_id,
                                                     care_team_id=care_team_id)
            if after is None or not entries:
                continue
            after = _store(conn, after)
            assert after.id is not None
            repository.insert_finding(conn, citizen_id, after.id, finding, now)
            if after.active:
                active[finding.rule] = after
            else:
                active.pop(finding.rule, None)
            written += _write_history(conn, after, entries, now)
        return written


def escalate_due(conn: Conn, now: datetime) -> int:
    """Take the escalation steps due by `now` on open red alerts; returns how many were taken."""
    with _atomic(conn):
        due = repository.due_escalations(conn, now, ESCALATION_BATCH)
        policies = _policies(conn, {state.care_team_id for state in due})
        taken = 0
        for state in due:
            after, entries = lifecycle.escalate(state, now, policies.get(state.care_team_id,
                                                                         DEFAULT_POLICY))
            if after != state:
                repository.update_alert(conn, after)
            _write_history(conn, after, entries, now)
            taken += len(entries)
    if taken:
        log.info("escalation: %d steps taken over %d alerts", taken, len(due))
    return taken


def release_held(conn: Conn, citizen_ids: Sequence[UUID] | None, now: datetime) -> int:
    """Release held alerts whose citizen (of `citizen_ids`, None: any) is no longer paused;
    returns how many were released."""
    with _atomic(conn):
        held = repository.releasable(conn, citizen_ids, now)
        policies = _policies(conn, {state.care_team_id for state in held})
        for state in held:
            after, entries = lifecycle.release(state, now, policies.get(state.care_team_id,
                                                                        DEFAULT_POLICY))
            repository.update_alert(conn, after)
            _write_history(conn, after, entries, now)
    return len(held)


def acknowledge(conn: Conn, alert_id: int, actor: str, now: datetime,
                note: str | None = None) -> AlertState:
    """open -> acknowledged (escalation stops); the citizen's screen is told when the alert
    rests on a measurement. AlertNotFound, AlertConflict."""
    with _atomic(conn):
        before = _locked(conn, alert_id)
        after, entries = lifecycle.acknowledge(before, actor, now, note)
        repository.update_alert(conn, after)
        _write_history(conn, after, entries, now)
        _tell_seen(conn, after, now)
    return after


def resolve(conn: Conn, alert_id: int, actor: str, outcome: str, note: str | None,
            now: datetime) -> AlertState:
    """open | acknowledged -> resolved with an outcome. AlertNotFound, AlertConflict,
    InvalidOutcome. Resolving an alert nobody acknowledged tells the screen too."""
    with _atomic(conn):
        before = _locked(conn, alert_id)
        after, entries = lifecycle.resolve(before, actor, outcome, note, now)
        repository.update_alert(conn, after)
        _write_history(conn, after, entries, now)
        if before.state is lifecycle.AlertStatus.OPEN:
            _tell_seen(conn, after, now)
    return after


def alert(conn: Conn, alert_id: int) -> AlertState:
    """One alert; AlertNotFound."""
    state = repository.alert(conn, alert_id)
    if state is None:
        raise AlertNotFound(str(alert_id))
    return state


def history(conn: Conn, alert_id: int) -> list[HistoryRow]:
    """Everything that happened to the alert, oldest first; AlertNotFound."""
    alert(conn, alert_id)
    return repository.history(conn, alert_id)


def findings(conn: Conn, alert_id: int) -> list[FindingRow]:
    """The findings that fed the alert, by measured time; AlertNotFound."""
    alert(conn, alert_id)
    return repository.findings(conn, alert_id)


def _locked(conn: Conn, alert_id: int) -> AlertState:
    state = repository.alert_for_update(conn, alert_id)
    if state is None:
        raise AlertNotFound(str(alert_id))
    return state


def _store(conn: Conn, state: AlertState) -> AlertState:
    if state.id is None:
        return replace(state, id=repository.insert_alert(conn, state))
    repository.update_alert(conn, state)
    return state


def _write_history(conn: Conn, state: AlertState, entries: Sequence[HistoryEntry],
                   now: datetime) -> list[int]:
    """The history rows and, for those pushed, the webhook deliveries (outbox)."""
    assert state.id is not None
    ids: list[int] = []
    for entry in entries:
        history_id = repository.insert_history(conn, state.id, state.care_team_id, entry)
        ids.append(history_id)
        if entry.pushed and state.care_team_id is not None:
            repository.enqueue_team_webhooks(conn, history_id, state.care_team_id, now)
        contact = entry.detail.get("contact") if entry.action is Action.ESCALATED else None
        if contact is not None and contact["kind"] == "webhook":
            repository.enqueue_webhook(conn, history_id, int(contact["target"]), now)
    return ids


def _tell_seen(conn: Conn, state: AlertState, now: datetime) -> None:
    assert state.id is not None
    if repository.rests_on_reading(conn, state.id):
        repository.insert_screen_message(conn, state.citizen_id, "seen", state.id,
                                         {"text": SEEN_TEXT, "alert_id": state.id}, now)


def _remind(conn: Conn, citizen_id: UUID, reminders: Sequence[Finding], now: datetime) -> None:
    """Reminders of missed windows for her screen, each once; none when it is old news or she
    is paused."""
    for finding in reminders:
        if finding.is_current and not finding.held:
            repository.insert_reminder(conn, citizen_id, finding.occurrence,
                                       {"text": REMINDER_TEXT, **finding.explanation}, now)


# --- escalation policies -------------------------------------------------------------------

def get_policy(conn: Conn, team_id: UUID) -> EscalationPolicy:
    """The team's escalation policy (the default chain when it has none); TeamNotFound."""
    if repository.team(conn, team_id) is None:
        raise TeamNotFound(str(team_id))
    return policy_for(conn, team_id)


def policy_for(conn: Conn, team_id: UUID | None) -> EscalationPolicy:
    """The team's escalation policy, or the default chain."""
    return _policies(conn, {team_id}).get(team_id, DEFAULT_POLICY)


def _policies(conn: Conn, team_ids: set[UUID | None]) -> dict[UUID | None, EscalationPolicy]:
    known = [team_id for team_id in team_ids if team_id is not None]
    if not known:
        return {}
    return {team_id: parse_policy(steps)
            for team_id, steps in repository.policy_steps(conn, known).items()}


def set_policy(conn: Conn, team_id: UUID, policy: EscalationPolicy | Sequence[Mapping[str, Any]],
               now: datetime) -> EscalationPolicy:
    """Replace the team's chain (validated; a webhook step names a webhook of the team)."""
    chain = policy if isinstance(policy, EscalationPolicy) else parse_policy(policy)
    with _atomic(conn):
        if repository.team(conn, team_id) is None:
            raise TeamNotFound(str(team_id))
        own = {webhook.id for webhook in repository.webhooks_of_team(conn, team_id)}
        for step in chain.steps:
            if step.contact.kind == "webhook" and int(step.contact.target) not in own:
                raise InvalidPolicy(f"webhook {step.contact.target} is not one of the team's")
        repository.upsert_policy(conn, team_id, chain.as_json(), now)
    return chain


# --- thresholds ----------------------------------------------------------------------------

def parse_bands(data: Mapping[str, Any]) -> Bands:
    """Bands from user input; InvalidThresholds when they are not ordered or not numbers."""
    try:
        bands = Bands.model_validate(dict(data))
    except ValidationError as exc:
        error = exc.errors()[0]
        raise InvalidThresholds(str(error["msg"])) from None
    return _checked(bands)


def _checked(bands: Bands) -> Bands:
    values = [bands.alert_low, bands.warning_low, bands.warning_high, bands.alert_high]
    present = [value for value in values if value is not None]
    if not present:
        raise InvalidThresholds("at least one band must be set")
    if not all(math.isfinite(value) for value in present):
        raise InvalidThresholds("bands must be finite numbers")
    # Re-validated: a Bands built with model_construct skips its validator.
    try:
        return Bands.model_validate(bands.model_dump())
    except ValidationError as exc:
        raise InvalidThresholds(str(exc.errors()[0]["msg"])) from None


def set_thresholds(conn: Conn, citizen_id: UUID, metric: str, bands: Bands, valid_from: datetime,
                   set_by: str, now: datetime, reason: str | None = None) -> Threshold:
    """Add the next version of the citizen's bands for `metric` (nothing is overwritten).
    InvalidThresholds, CitizenNotFound."""
    if metric not in METRICS:
        raise InvalidThresholds(f"unknown metric {metric!r}")
    if valid_from.tzinfo is None:
        raise InvalidThresholds("valid_from needs a time zone")
    checked = _checked(bands)
    with _atomic(conn):
        if not repository.lock_citizen(conn, citizen_id):
            raise CitizenNotFound(str(citizen_id))
        version = repository.next_threshold_version(conn, citizen_id, metric)
        stored = repository.insert_threshold(conn, citizen_id, metric, version, checked,
                                             valid_from, set_by, now, reason)
    return stored.threshold


def thresholds_in_force(conn: Conn, citizen_ids: Sequence[UUID],
                        at: datetime) -> dict[UUID, dict[str, Threshold]]:
    """Per citizen and metric the version in force at `at` (latest valid_from <= at); metrics
    without one are absent (the caller merges them onto the plans' defaults)."""
    result: dict[UUID, dict[str, Threshold]] = {}
    for row in repository.thresholds_in_force(conn, citizen_ids, at):
        result.setdefault(row.citizen_id, {})[row.metric] = row.threshold
    return result


def threshold_history(conn: Conn, citizen_id: UUID, metric: str | None = None) -> list[ThresholdVersion]:
    """Every version of the citizen's thresholds (of `metric`, None: all), by metric and version."""
    return repository.threshold_history(conn, citizen_id, metric)


# --- plans ---------------------------------------------------------------------------------

def set_plan(conn: Conn, citizen_id: UUID, plan: str, valid_from: datetime, set_by: str,
             now: datetime, *, valid_to: datetime | None = None,
             settings: Mapping[str, Any] | None = None) -> PlanAssignment:
    """The citizen follows `plan` (a template of alerts/plans.py, with checked `settings`) from
    `valid_from` (until `valid_to`, None: open). InvalidPlan, PlanConflict (already following it
    then), CitizenNotFound."""
    plans.validate_settings(plan, settings or {})
    if valid_to is not None and valid_to <= valid_from:
        raise InvalidPlan("a plan ends after it starts")
    try:
        with conn.transaction():
            return repository.insert_plan(conn, citizen_id, plan, valid_from, valid_to,
                                          dict(settings or {}), set_by, now)
    except psycopg.errors.ExclusionViolation:
        raise PlanConflict(f"the citizen already follows {plan} during that period") from None
    except psycopg.errors.ForeignKeyViolation:
        raise CitizenNotFound(str(citizen_id)) from None


def end_plan(conn: Conn, citizen_id: UUID, plan: str, at: datetime) -> PlanAssignment:
    """End the citizen's `plan` that is in force at `at`; PlanNotFound."""
    with _atomic(conn):
        ended = repository.end_plan(conn, citizen_id, plan, at)
    if ended is None:
        raise PlanNotFound(f"{plan} is not in force for the citizen at {at.isoformat()}")
    return ended


def plans_in_force(conn: Conn, citizen_ids: Sequence[UUID],
                   at: datetime) -> dict[UUID, list[PlanAssignment]]:
    """Per citizen, the plans in force at `at`."""
    result: dict[UUID, list[PlanAssignment]] = {}
    for row in repository.plans_in_force(conn, citizen_ids, at):
        result.setdefault(row.citizen_id, []).append(row)
    return result


def plans_of(conn: Conn, citizen_id: UUID) -> list[PlanAssignment]:
    """Every plan period of the citizen, oldest first."""
    return repository.plans_of(conn, citizen_id)


# --- pauses --------------------------------------------------------------------------------

def add_pause(conn: Conn, citizen_id: UUID, start: datetime, end: datetime | None, reason: str,
              created_by: str, now: datetime, note: str | None = None) -> Pause:
    """Hold the citizen's alerts during [start, end) (end None: until cancelled).
    InvalidPause, CitizenNotFound."""
    if reason not in PAUSE_REASONS:
        raise InvalidPause(f"reason must be one of {sorted(PAUSE_REASONS)}")
    if end is not None and end <= start:
        raise InvalidPause("a pause ends after it starts")
    try:
        with conn.transaction():
            pause_id = repository.insert_pause(conn, citizen_id, start, end, reason, note,
                                               created_by, now)
    except psycopg.errors.ForeignKeyViolation:
        raise CitizenNotFound(str(citizen_id)) from None
    stored = repository.pause(conn, pause_id)
    assert stored is not None
    return stored


def cancel_pause(conn: Conn, pause_id: int, now: datetime) -> Pause:
    """End the pause at `now` (a pause not begun yet never takes effect); PauseNotFound.
    Cancelling a cancelled pause changes nothing."""
    with _atomic(conn):
        repository.cancel_pause(conn, pause_id, now)
        stored = repository.pause(conn, pause_id)
    if stored is None:
        raise PauseNotFound(str(pause_id))
    return stored


def pauses_for(conn: Conn, citizen_ids: Sequence[UUID], start: datetime,
               end: datetime) -> dict[UUID, list[Pause]]:
    """Per citizen, the pauses in force at some time in [start, end)."""
    result: dict[UUID, list[Pause]] = {}
    for row in repository.pauses_for(conn, citizen_ids, start, end):
        result.setdefault(row.citizen_id, []).append(row)
    return result


# --- care teams and webhooks ---------------------------------------------------------------

def create_team(conn: Conn, name: str, now: datetime) -> CareTeam:
    """A new care team; TeamConflict when the name is taken."""
    if not name.strip():
        raise TeamConflict("a care team needs a name")
    try:
        with conn.transaction():
            return repository.insert_team(conn, name.strip(), now)
    except psycopg.errors.UniqueViolation:
        raise TeamConflict(f"a care team named {name!r} exists") from None


def teams(conn: Conn, within: tuple[sql.Composable, dict[str, Any]] | None = None
          ) -> list[CareTeam]:
    """Every care team (with `within`, a subquery of team ids: those), by name."""
    return repository.teams(conn, within)


def team(conn: Conn, team_id: UUID) -> CareTeam:
    """One care team; TeamNotFound."""
    found = repository.team(conn, team_id)
    if found is None:
        raise TeamNotFound(str(team_id))
    return found


def assign_citizen(conn: Conn, citizen_id: UUID, team_id: UUID | None) -> None:
    """Put the citizen in the team (None: in none); the team takes over their alerts in hand.
    TeamNotFound, CitizenNotFound."""
    with _atomic(conn):
        if team_id is not None and repository.team(conn, team_id) is None:
            raise TeamNotFound(str(team_id))
        if not repository.assign_citizen(conn, citizen_id, team_id):
            raise CitizenNotFound(str(citizen_id))


def team_of(conn: Conn, citizen_id: UUID) -> UUID | None:
    """The citizen's care team (None: none); CitizenNotFound."""
    found = repository.teams_of(conn, [citizen_id])
    if citizen_id not in found:
        raise CitizenNotFound(str(citizen_id))
    return found[citizen_id]


def teams_of(conn: Conn, citizen_ids: Sequence[UUID]) -> dict[UUID, UUID | None]:
    """The care team of each known citizen among `citizen_ids`, in one query."""
    return repository.teams_of(conn, citizen_ids)


def _sendable(url: str) -> bool:
    """An http(s) URL that the sender can encode (httpx, IDNA), with a port in range."""
    try:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.port == 0:
            return False
        httpx.URL(url).host.encode("idna")
    except (ValueError, UnicodeError, httpx.InvalidURL):
        return False
    return True


def points_inside(url: str) -> bool:
    """Whether a webhook URL names this machine or a link-local address (a cloud's metadata
    service): what the API refuses, so that a caller cannot make Telecare post alert data to
    itself. (A name is resolved only when sending; a name that resolves there is not seen.)"""
    host = (urlsplit(url).hostname or "").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        # Digits that are no dotted address ("2130706433", "0x7f000001") are one to the resolver.
        return bool(re.fullmatch(r"[0-9.]+|0x[0-9a-fx.]*", host))
    return address.is_loopback or address.is_link_local or address.is_unspecified \
        or address.is_multicast


def add_webhook(conn: Conn, team_id: UUID, url: str, secret: str | None, now: datetime) -> Webhook:
    """A webhook of the team, sent every pushed change, signed with `secret` (None: a new random
    one, which the caller shows once). TeamNotFound, InvalidWebhook (not an http(s) URL)."""
    if not _sendable(url):
        raise InvalidWebhook("a webhook needs an http(s) URL with a host that can be sent to")
    if secret == "":
        raise InvalidWebhook("a webhook needs a secret to sign with")
    with _atomic(conn):
        if repository.team(conn, team_id) is None:
            raise TeamNotFound(str(team_id))
        return repository.insert_webhook(conn, team_id, url, secret or new_webhook_secret(), now)


def set_webhook_active(conn: Conn, webhook_id: int, active: bool,
                       team_id: UUID | None = None) -> Webhook:
    """Switch a webhook on or off (deliveries already queued still go when it is on);
    WebhookNotFound when there is no such webhook (of `team_id`, when given)."""
    with _atomic(conn):
        changed = repository.set_webhook_active(conn, webhook_id, active, team_id)
    if changed is None:
        raise WebhookNotFound(f"no webhook {webhook_id}")
    return changed


def webhooks_of_team(conn: Conn, team_id: UUID) -> list[Webhook]:
    """The team's webhooks."""
    return repository.webhooks_of_team(conn, team_id)
