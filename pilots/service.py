"""Pilots: managing them (administrators), and the pseudonymised aggregates a project lead sees
of the pilots they lead (docs/access.md, "Project leads"). Functions take a connection and
never commit; errors are domain errors.

What an aggregate may show: counts, ratios and medians over the pilot's citizens, and one row
per citizen under their pseudonym. Never a citizen id, device id, name, care team or a time
finer than a day; counts of 1 to 4 are shown as "<5" (small cells), ratios and medians only
when at least 5 values stand behind them, and the per-citizen rows only when at least 5
citizens took part in the period."""

from __future__ import annotations

import statistics
from collections import defaultdict
from datetime import date, datetime, time, timedelta
from uuid import UUID

import psycopg

from alerts.plans import LOCAL
from devices.errors import CitizenNotFound
from pilots import repository
from pilots.adherence import PlanPeriod, Tally, adherence, scheduled_metrics
from pilots.errors import (
    EnrolmentNotFound,
    InvalidLead,
    InvalidPilot,
    LeadNotFound,
    PilotConflict,
    PilotNotFound,
    PseudonymKeyMissing,
)
from pilots.models import (
    SUPPRESS_BELOW,
    SUPPRESSED,
    Acknowledgement,
    Aggregates,
    AlertSummary,
    CitizenRow,
    Count,
    Enrolment,
    Lead,
    MetricSummary,
    OutcomeSummary,
    Pilot,
    Viewer,
)
from pilots.pseudonyms import pseudonym
from pilots.repository import Conn

# The longest period one aggregate covers (adherence walks every window of every citizen).
MAX_DAYS = 731


def cell(n: int) -> Count:
    """A count as shown: 0 and from SUPPRESS_BELOW on as it is, else "<5"."""
    return n if n == 0 or n >= SUPPRESS_BELOW else SUPPRESSED


def ratio(part: int, whole: int) -> float | None:
    return round(part / whole, 2) if whole >= SUPPRESS_BELOW else None


# --- what a viewer sees -----------------------------------------------------------------------

def pilots(conn: Conn, viewer: Viewer) -> list[Pilot]:
    """The pilots the viewer leads (every pilot: administrators)."""
    return repository.visible_pilots(conn, viewer)


def pilot(conn: Conn, viewer: Viewer, pilot_id: UUID) -> Pilot:
    """The pilot; PilotNotFound when it does not exist or the viewer does not lead it."""
    found = repository.visible_pilot(conn, viewer, pilot_id)
    if found is None:
        raise PilotNotFound(f"no pilot {pilot_id}")
    return found


def _local_start(day: date) -> datetime:
    return datetime.combine(day, time(0), LOCAL)


def period_of(found: Pilot, from_day: date | None, to_day: date | None,
              now: datetime) -> tuple[date, date]:
    """The local days asked about, both included; by default the pilot's period up to today
    (at most MAX_DAYS back)."""
    for day in (from_day, to_day):  # far days would overflow the date arithmetic below
        if day is not None and not date(2000, 1, 1) <= day <= date(2999, 12, 31):
            raise InvalidPilot("days lie between 2000-01-01 and 2999-12-31")
    today = now.astimezone(LOCAL).date()
    last = today if found.ends_at is None else min(
        today, (found.ends_at - timedelta(microseconds=1)).astimezone(LOCAL).date())
    to_day = to_day or last
    from_day = from_day or max(found.starts_at.astimezone(LOCAL).date(),
                               to_day - timedelta(days=MAX_DAYS - 1))
    if from_day > to_day:
        raise InvalidPilot("the period starts after it ends")
    if (to_day - from_day).days + 1 > MAX_DAYS:
        raise InvalidPilot(f"a period of at most {MAX_DAYS} days")
    return from_day, to_day


def aggregates(conn: Conn, viewer: Viewer, pilot_id: UUID, key: bytes | None,
               from_day: date | None, to_day: date | None, now: datetime) -> Aggregates:
    """The pilot's pseudonymised aggregates over the local days from_day..to_day."""
    found = pilot(conn, viewer, pilot_id)  # a stranger learns nothing, key or not
    if key is None:
        raise PseudonymKeyMissing("no pseudonym key is configured (TELECARE_PSEUDONYM_KEY)")
    from_day, to_day = period_of(found, from_day, to_day, now)
    lo = max(_local_start(from_day), found.starts_at)
    hi = min(_local_start(to_day + timedelta(days=1)), now)
    if found.ends_at is not None:
        hi = min(hi, found.ends_at)
    hi = max(hi, lo)
    return _aggregate(conn, found, key, from_day, to_day, lo, hi, now)


def _aggregate(conn: Conn, found: Pilot, key: bytes, from_day: date, to_day: date,
               lo: datetime, hi: datetime, now: datetime) -> Aggregates:
    enrolled: dict[UUID, list[tuple[datetime, datetime]]] = defaultdict(list)
    for citizen, since, until in repository.clipped_enrolments(conn, found.id, lo, hi):
        if since < until:
            enrolled[citizen].append((since, until))
    citizens = sorted(enrolled)
    per_citizen_readings: dict[UUID, int] = defaultdict(int)
    readings: dict[str, int] = defaultdict(int)
    reading_citizens: dict[str, set[UUID]] = defaultdict(set)
    for citizen, metric, count in repository.reading_counts(conn, found.id, lo, hi):
        per_citizen_readings[citizen] += count
        readings[metric] += count
        reading_citizens[metric].add(citizen)

    tallies = _adherence(conn, found.id, citizens, enrolled, lo, hi, now)
    scheduled: dict[str, Tally] = defaultdict(Tally)
    for per_metric in tallies.values():
        for metric, tally in per_metric.items():
            known = scheduled[metric]
            scheduled[metric] = Tally(known.scheduled + tally.scheduled,
                                      known.on_time + tally.on_time)

    alert_counts: dict[tuple[str, str], int] = defaultdict(int)
    alert_citizens: dict[tuple[str, str], set[UUID]] = defaultdict(set)
    outcomes: dict[str, int] = defaultdict(int)
    per_citizen_alerts: dict[UUID, int] = defaultdict(int)
    per_citizen_red: dict[UUID, int] = defaultdict(int)
    minutes: list[float] = []
    for citizen, rule, severity, opened, acknowledged, outcome in repository.alerts(
            conn, found.id, lo, hi):
        alert_counts[(rule, severity)] += 1
        alert_citizens[(rule, severity)].add(citizen)
        per_citizen_alerts[citizen] += 1
        per_citizen_red[citizen] += severity == "red"
        if outcome is not None:
            outcomes[outcome] += 1
        if acknowledged is not None:
            minutes.append((acknowledged - opened).total_seconds() / 60)

    shown = len(citizens) >= SUPPRESS_BELOW
    rows = []
    if shown:
        for citizen in citizens:
            days = sum((until - since for since, until in enrolled[citizen]), timedelta())
            own = tallies.get(citizen, {})
            rows.append(CitizenRow(
                pseudonym=pseudonym(key, found.id, citizen),
                enrolled_days=cell(round(days / timedelta(days=1))),
                readings=cell(per_citizen_readings[citizen]),
                alerts=cell(per_citizen_alerts[citizen]),
                red_alerts=cell(per_citizen_red[citizen]),
                adherence=ratio(sum(t.on_time for t in own.values()),
                                sum(t.scheduled for t in own.values()))))
        rows.sort(key=lambda r: r.pseudonym)  # not in enrolment order: that would tell who is who
    return Aggregates(
        pilot_id=found.id, name=found.name, from_day=from_day, to_day=to_day,
        suppressed_below=SUPPRESS_BELOW, citizens_enrolled=cell(len(citizens)),
        readings=[MetricSummary(
            metric=metric, readings=cell(readings.get(metric, 0)),
            citizens=cell(len(reading_citizens.get(metric, ()))),
            scheduled=cell(scheduled[metric].scheduled), on_time=cell(scheduled[metric].on_time),
            adherence=ratio(scheduled[metric].on_time, scheduled[metric].scheduled))
            for metric in sorted(set(readings) | set(scheduled))],
        alerts=[AlertSummary(rule=rule, severity=severity, alerts=cell(n),
                             citizens=cell(len(alert_citizens[(rule, severity)])))
                for (rule, severity), n in sorted(alert_counts.items())],
        time_to_acknowledge=Acknowledgement(
            acknowledged=cell(len(minutes)),
            median_minutes=(round(statistics.median(minutes)) if len(minutes) >= SUPPRESS_BELOW
                            else None)),
        outcomes=[OutcomeSummary(outcome=o, alerts=cell(n)) for o, n in sorted(outcomes.items())],
        citizens_shown=shown, citizens=rows)


def _adherence(conn: Conn, pilot_id: UUID, citizens: list[UUID],
               enrolled: dict[UUID, list[tuple[datetime, datetime]]], lo: datetime,
               hi: datetime, now: datetime) -> dict[UUID, dict[str, Tally]]:
    if not citizens:
        return {}
    periods: dict[UUID, list[PlanPeriod]] = defaultdict(list)
    for citizen, plan, valid_from, valid_until, settings in repository.plans(conn, citizens, lo, hi):
        periods[citizen].append(PlanPeriod(plan, valid_from, valid_until, settings))
    pauses: dict[UUID, list[tuple[datetime, datetime | None]]] = defaultdict(list)
    for citizen, start, end in repository.pauses(conn, citizens, lo, hi):
        pauses[citizen].append((start, end))
    metrics = scheduled_metrics([p for ps in periods.values() for p in ps])
    times: dict[UUID, dict[str, list[datetime]]] = defaultdict(lambda: defaultdict(list))
    if metrics:
        for citizen, metric, at in repository.reading_times(conn, pilot_id, lo, hi, metrics):
            times[citizen][metric].append(at)  # sorted by the query
    return {citizen: adherence(periods[citizen], enrolled[citizen], pauses[citizen],
                               times[citizen], now)
            for citizen in citizens if periods.get(citizen)}


# --- management: administrators ---------------------------------------------------------------

def _existing(conn: Conn, pilot_id: UUID) -> Pilot:
    found = repository.pilot(conn, pilot_id)
    if found is None:
        raise PilotNotFound(f"no pilot {pilot_id}")
    return found


def create_pilot(conn: Conn, name: str, description: str, starts_at: datetime,
                 ends_at: datetime | None, created_by: str, now: datetime) -> Pilot:
    """A new pilot running from starts_at (until ends_at, when given)."""
    if ends_at is not None and ends_at <= starts_at:
        raise InvalidPilot("a pilot ends after it starts")
    try:
        with conn.transaction():
            return repository.insert_pilot(conn, name, description, starts_at, ends_at,
                                           created_by, now)
    except psycopg.errors.UniqueViolation:
        raise PilotConflict(f"a pilot named {name!r} exists already") from None


def _lead_user(conn: Conn, username: str) -> UUID:
    found = repository.user_role(conn, username)
    if found is None:
        raise LeadNotFound(f"no user {username!r}")
    if found[1] != "project_lead":
        raise InvalidLead(f"{username!r} is a {found[1]}, not a project_lead")
    return found[0]


def add_lead(conn: Conn, pilot_id: UUID, username: str, added_by: str, now: datetime) -> None:
    """The project lead leads the pilot (again: nothing changes)."""
    _existing(conn, pilot_id)
    repository.add_lead(conn, pilot_id, _lead_user(conn, username), added_by, now)


def remove_lead(conn: Conn, pilot_id: UUID, username: str) -> None:
    _existing(conn, pilot_id)
    found = repository.user_role(conn, username)
    if found is None:
        raise LeadNotFound(f"no user {username!r}")
    repository.remove_lead(conn, pilot_id, found[0])


def leads(conn: Conn, pilot_id: UUID) -> list[Lead]:
    _existing(conn, pilot_id)
    return repository.leads(conn, pilot_id)


def enrol(conn: Conn, pilot_id: UUID, citizen_id: UUID, valid_from: datetime,
          valid_until: datetime | None, enrolled_by: str, now: datetime) -> Enrolment:
    """The citizen takes part in the pilot from valid_from (until valid_until), within the
    pilot's period; PilotConflict when that overlaps an enrolment they have."""
    found = _existing(conn, pilot_id)
    if valid_until is not None and valid_until <= valid_from:
        raise InvalidPilot("an enrolment ends after it starts")
    if valid_from < found.starts_at or (found.ends_at is not None and (
            valid_from >= found.ends_at or valid_until is None or valid_until > found.ends_at)):
        raise InvalidPilot("an enrolment lies within the pilot's period")
    if not repository.citizen_exists(conn, citizen_id):
        raise CitizenNotFound(f"no citizen {citizen_id}")
    try:
        with conn.transaction():
            return repository.insert_enrolment(conn, pilot_id, citizen_id, valid_from,
                                               valid_until, enrolled_by, now)
    except psycopg.errors.ExclusionViolation:
        raise PilotConflict(f"citizen {citizen_id} is enrolled in the pilot then already"
                            ) from None


def enrolments(conn: Conn, pilot_id: UUID) -> list[Enrolment]:
    _existing(conn, pilot_id)
    return repository.enrolments(conn, pilot_id)


def end_enrolment(conn: Conn, pilot_id: UUID, enrolment_id: int, now: datetime) -> Enrolment:
    """The citizen leaves the pilot now; an enrolment that has not started yet is removed.
    Returns the enrolment as it was (whose citizen the caller's audit record names)."""
    found = repository.enrolment(conn, pilot_id, enrolment_id)
    if found is None:
        raise EnrolmentNotFound(f"pilot {pilot_id} has no enrolment {enrolment_id}")
    if found.valid_from >= now:
        repository.remove_enrolment(conn, enrolment_id)
    elif found.valid_until is None or found.valid_until > now:
        repository.end_enrolment(conn, enrolment_id, now)
    return found
