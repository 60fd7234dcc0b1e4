"""Alert quality against the ground truth: which alerts belong to which episode, and the
figures of docs/evaluation.md. Pure functions of episodes, alerts and the period.

Matching: an alert overlaps an episode when it was opened for the same citizen at a time in
[onset, last] (`last`: recovered and home again; so the hospital stay and the recovery count,
and no further margin is added). An episode is caught when an alert about one of the signs the
episode changes (`looks_at`: a threshold, anomaly or rate alert of one of its metrics, weight
gain for weight, NEWS2 for the vitals, the questionnaire for answers, inactivity and the button
for an inactivity episode) overlaps it: an alert about something else that falls in the
episode by chance (a diabetic's missed glucose during her blood-pressure rise, a device's
implausible value) catches nothing, though it is not a false alarm either. Its lead time
is crisis - the first overlapping alert's opening, in hours (negative: after the crisis). An
alert that overlaps no episode is non-actionable. Episodes are scored only when the rules could
see all of them: onset at or after the period's start and crisis before its end.

Catching counts the rules that look at the citizen's state, not the adherence rules (a missed
measurement, not measuring for days): those alert on absent data, which during an episode is
mostly the hospital stay after the crisis or a coincidence. The share caught by any rule,
adherence included, is given beside it. Every alert counts in the burden figures.

An alert still open (the simulated nurse resolves each a day after it opened, or nobody does)
turns a new episode's findings into repeats (count + 1) instead of a new alert. The shares "by
finding" count an episode as caught by the first raising finding (one that opened or repeated
an alert) about one of its signs in [onset, last]."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from devices.catalogue import parts_of

# Episode kinds with a prodrome: the 24-hours-ahead target counts these, pooled.
DETERIORATION = ("hf_decompensation", "copd_exacerbation", "bp_rise")
# Acute kinds: the crisis is the onset, so no alert can come ahead of it.
ACUTE = ("hypoglycaemia", "inactivity")
AHEAD = timedelta(hours=24)
LEARNING = timedelta(days=30)  # the non-actionable rate is also given after this many days
POOLED = "deterioration (target)"
ADHERENCE = ("missed:", "not_measuring")  # rule names, or their prefixes


INACTIVE = ("motion", "door", "bed")
VITALS = ("spo2", "pulse_rate", "body_temperature", "systolic_bp")
# Rules whose name does not say the metric they look at.
_SIGNS = {"trend:weight_gain": ("body_weight",), "news2": VITALS,
          "questionnaire": ("questionnaire_answer",), "anomaly:spo2_pulse": ("spo2", "pulse_rate"),
          "inactivity": INACTIVE, "anomaly:first_motion": INACTIVE, "emergency_button": INACTIVE}
_METRIC_FAMILIES = ("threshold", "anomaly", "rate")


def looks_at(rule: str) -> tuple[str, ...]:
    """The signs (metric codes, sensor event kinds) a rule's alerts are about."""
    if rule in _SIGNS:
        return _SIGNS[rule]
    family, _, name = rule.partition(":")
    if family not in _METRIC_FAMILIES or not name:
        return ()
    return parts_of(name) if family == "threshold" else (name,)


def is_adherence(rule: str) -> bool:
    """Whether the rule alerts on missing measurements rather than on what was measured."""
    return rule.startswith(ADHERENCE)


@dataclass(frozen=True)
class TrueEpisode:
    id: str
    citizen: str
    kind: str
    onset: datetime
    crisis: datetime
    last: datetime
    metrics: tuple[str, ...] = ()


@dataclass(frozen=True)
class RaisedAlert:
    citizen: str
    rule: str
    severity: str
    opened_at: datetime


@dataclass(frozen=True)
class Period:
    start: datetime
    end: datetime
    citizens: int

    @property
    def days(self) -> float:
        return (self.end - self.start) / timedelta(days=1)

    def citizen_weeks(self, since: datetime | None = None) -> float:
        begin = max(self.start, since) if since is not None else self.start
        return self.citizens * max(0.0, (self.end - begin) / timedelta(days=7))


@dataclass(frozen=True)
class Match:
    """An episode and its first overlapping alert (None: missed)."""

    episode: TrueEpisode
    first: RaisedAlert | None

    @property
    def lead_h(self) -> float | None:
        if self.first is None:
            return None
        return (self.episode.crisis - self.first.opened_at) / timedelta(hours=1)

    @property
    def ahead(self) -> bool:
        lead = self.lead_h
        return lead is not None and lead >= AHEAD / timedelta(hours=1)


@dataclass(frozen=True)
class KindFigures:
    episodes: int
    caught: float | None  # shares of the episodes
    caught_ahead: float | None
    lead_median_h: float | None
    lead_p10_h: float | None
    caught_any_rule: float | None = None  # adherence rules included
    caught_by_finding: float | None = None  # repeats of an alert held open count too
    caught_ahead_by_finding: float | None = None
    first_rules: dict[str, int] = field(default_factory=dict)  # rule of the first alert


@dataclass(frozen=True)
class RuleFigures:
    alerts: int
    overlapping: int
    non_actionable_per_citizen_week: float
    # Of the scored episodes whose signs the rule looks at: how many it alerted on, and the
    # median lead time of its first alert in each (None: none caught).
    eligible_episodes: int = 0
    caught_episodes: int = 0
    lead_median_h: float | None = None


@dataclass(frozen=True)
class Figures:
    by_kind: dict[str, KindFigures]
    by_rule: dict[str, RuleFigures]
    alerts: int
    non_actionable: int
    non_actionable_per_citizen_week: float
    non_actionable_clinical_per_citizen_week: float  # without the adherence rules
    non_actionable_per_citizen_week_after_learning: float
    alerts_per_nurse_day: float
    skipped_episodes: int  # not wholly inside the period
    # Reminders of missed measurements on the citizens' screens (not alerts: nobody triages them).
    reminders_per_citizen_week: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"by_kind": {k: vars(v) for k, v in self.by_kind.items()},
                "by_rule": {k: vars(v) for k, v in self.by_rule.items()},
                **{k: v for k, v in vars(self).items() if k not in ("by_kind", "by_rule")}}


def overlaps(alert: RaisedAlert, episode: TrueEpisode) -> bool:
    """Opened for the episode's citizen within [onset, last]."""
    return alert.citizen == episode.citizen and episode.onset <= alert.opened_at <= episode.last


def scored(episodes: Iterable[TrueEpisode], period: Period) -> list[TrueEpisode]:
    """The episodes the rules could see whole: onset in the period, crisis before its end."""
    return [e for e in episodes if period.start <= e.onset and e.crisis < period.end]


def about(alert: RaisedAlert, episode: TrueEpisode) -> bool:
    """Whether the alert is about a sign the episode changes."""
    return bool(set(looks_at(alert.rule)) & set(episode.metrics))


def match(episodes: Iterable[TrueEpisode], alerts: Sequence[RaisedAlert], *,
          any_sign: bool = False) -> list[Match]:
    """Each episode with its first overlapping alert about one of its signs (`any_sign`: about
    anything)."""
    by_citizen: dict[str, list[RaisedAlert]] = defaultdict(list)
    for alert in alerts:
        by_citizen[alert.citizen].append(alert)
    matches = []
    for episode in episodes:
        mine = [a for a in by_citizen[episode.citizen]
                if overlaps(a, episode) and (any_sign or about(a, episode))]
        matches.append(Match(episode, min(mine, key=lambda a: a.opened_at, default=None)))
    return matches


def quantile(values: Sequence[float], q: float) -> float | None:
    """The q-quantile by linear interpolation between order statistics (numpy's default);
    None without values, the value itself with one."""
    if not values:
        return None
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _share(matches: Sequence[Match], caught: Callable[[Match], bool]) -> float | None:
    return sum(caught(m) for m in matches) / len(matches) if matches else None


def kind_figures(matches: Sequence[Match], any_rule: Sequence[Match] = (),
                 by_finding: Sequence[Match] = ()) -> KindFigures:
    """Caught shares, lead median and 10th percentile (over caught episodes), first rules;
    `any_rule` are the same episodes matched with the adherence rules too, `by_finding`
    matched with the raising findings."""
    n = len(matches)
    leads = [m.lead_h for m in matches if m.lead_h is not None]
    return KindFigures(
        episodes=n,
        caught=len(leads) / n if n else None,
        caught_ahead=sum(m.ahead for m in matches) / n if n else None,
        lead_median_h=quantile(leads, 0.5), lead_p10_h=quantile(leads, 0.1),
        caught_any_rule=_share(any_rule, lambda m: m.first is not None),
        caught_by_finding=_share(by_finding, lambda m: m.first is not None),
        caught_ahead_by_finding=_share(by_finding, lambda m: m.ahead),
        first_rules=dict(Counter(m.first.rule for m in matches if m.first is not None)
                         .most_common()))


def non_actionable(alerts: Iterable[RaisedAlert], episodes: Sequence[TrueEpisode]
                   ) -> list[RaisedAlert]:
    """Alerts that overlap no episode (all episodes, scored or not: an alert during one that
    began before the period is not a false alarm)."""
    by_citizen: dict[str, list[TrueEpisode]] = defaultdict(list)
    for episode in episodes:
        by_citizen[episode.citizen].append(episode)
    return [a for a in alerts if not any(overlaps(a, e) for e in by_citizen[a.citizen])]


def figures(episodes: Sequence[TrueEpisode], alerts: Sequence[RaisedAlert], period: Period,
            nurses: int, kinds: Iterable[str] = (),
            findings: Sequence[RaisedAlert] = (), reminders: int = 0) -> Figures:
    """Every figure of the report for one population. `kinds` are listed even when empty;
    `findings` are the raising findings (opened_at: when evaluated); `reminders` the screen
    reminders sent in the period."""
    inside = [a for a in alerts if period.start <= a.opened_at < period.end]
    chosen = scored(episodes, period)
    clinical = match(chosen, [a for a in inside if not is_adherence(a.rule)])
    any_rule = match(chosen, inside, any_sign=True)
    by_finding = match(chosen, [f for f in findings if not is_adherence(f.rule)])
    by_kind = {kind: kind_figures(*_of_kinds((kind,), clinical, any_rule, by_finding))
               for kind in sorted({*kinds, *(e.kind for e in chosen)})}
    by_kind[POOLED] = kind_figures(*_of_kinds(DETERIORATION, clinical, any_rule, by_finding))
    false = non_actionable(inside, episodes)
    weeks = period.citizen_weeks()
    return Figures(
        by_kind=by_kind, by_rule=_rule_figures(inside, false, weeks, chosen),
        alerts=len(inside), non_actionable=len(false),
        non_actionable_per_citizen_week=_rate(len(false), weeks),
        non_actionable_clinical_per_citizen_week=_rate(
            sum(not is_adherence(a.rule) for a in false), weeks),
        non_actionable_per_citizen_week_after_learning=_rate(
            sum(a.opened_at >= period.start + LEARNING for a in false),
            period.citizen_weeks(period.start + LEARNING)),
        alerts_per_nurse_day=_rate(len(inside), period.days * nurses),
        skipped_episodes=len(episodes) - len(chosen),
        reminders_per_citizen_week=_rate(reminders, weeks))


def _of_kinds(kinds: Sequence[str], *matches: Sequence[Match]) -> list[list[Match]]:
    return [[m for m in ms if m.episode.kind in kinds] for ms in matches]


def _rule_figures(alerts: Sequence[RaisedAlert], false: Sequence[RaisedAlert],
                  weeks: float, episodes: Sequence[TrueEpisode]) -> dict[str, RuleFigures]:
    total = Counter(a.rule for a in alerts)
    wrong = Counter(a.rule for a in false)
    figures = {}
    for rule, n in sorted(total.items()):
        eligible = [e for e in episodes if set(looks_at(rule)) & set(e.metrics)]
        found = match(eligible, [a for a in alerts if a.rule == rule])
        leads = [m.lead_h for m in found if m.lead_h is not None]
        figures[rule] = RuleFigures(
            alerts=n, overlapping=n - wrong[rule],
            non_actionable_per_citizen_week=_rate(wrong[rule], weeks),
            eligible_episodes=len(eligible), caught_episodes=len(leads),
            lead_median_h=quantile(leads, 0.5))
    return figures


def _rate(count: int, per: float) -> float:
    return count / per if per > 0 else 0.0


def matches_by_kind(episodes: Sequence[TrueEpisode], alerts: Sequence[RaisedAlert],
                    period: Period) -> Mapping[str, list[Match]]:
    """The scored episodes' matches by kind, as caught counts them (for the figures)."""
    found: dict[str, list[Match]] = defaultdict(list)
    for m in match(scored(episodes, period), [a for a in alerts if not is_adherence(a.rule)]):
        found[m.episode.kind].append(m)
    return found
