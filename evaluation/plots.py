"""One PNG per episode kind: the citizen's series around an episode, the episode shaded, its
crisis marked, and the alerts as vertical lines with their rule names, so that a reader sees
what the rules saw. matplotlib with the Agg backend: files only, no display needed."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # before pyplot: no display on a server or in CI
import matplotlib.dates as mdates
import matplotlib.pyplot as plt
from matplotlib.axes import Axes

from evaluation.quality import RaisedAlert, TrueEpisode

SEVERITY_COLOURS = {"red": "tab:red", "yellow": "goldenrod"}


@dataclass(frozen=True)
class EpisodeView:
    """What one figure shows: the episode, whether it was caught, the citizen's readings by
    metric (implausible ones apart), event times by kind, and her alerts in the window."""

    episode: TrueEpisode
    condition: str
    caught: bool
    lead_h: float | None
    readings: Mapping[str, Sequence[tuple[datetime, float]]]
    implausible: Mapping[str, Sequence[tuple[datetime, float]]]
    events: Mapping[str, Sequence[datetime]]
    alerts: Sequence[RaisedAlert]
    window: tuple[datetime, datetime]
    population: str


def _x(at: datetime) -> float:
    """A time as matplotlib's date axis counts it (its typed signatures take numbers)."""
    return float(mdates.date2num(at))  # type: ignore[no-untyped-call]


def _title(view: EpisodeView) -> str:
    e = view.episode
    verdict = (f"caught, first alert {view.lead_h:+.1f} h before the crisis"
               if view.caught and view.lead_h is not None else "missed")
    return f"{e.kind} of {e.citizen} ({view.condition}, {view.population}): {verdict}"


def plot_episode(view: EpisodeView, path: Path) -> Path:
    """Write the figure of `view` to `path` (PNG)."""
    panels = [m for m in view.readings if view.readings[m] or view.implausible.get(m)]
    if view.events:
        panels.append("events")
    panels = panels or ["events"]
    fig, axes = plt.subplots(len(panels), 1, sharex=True, squeeze=False,
                             figsize=(11, 2.2 * len(panels) + 1.2))
    for ax, panel in zip(axes[:, 0], panels, strict=True):
        if panel == "events":
            _events(ax, view.events)
        else:
            _series(ax, panel, view.readings.get(panel, ()), view.implausible.get(panel, ()))
        _episode_marks(ax, view)
    _alert_marks(axes[0, 0], list(axes[:, 0]), view.alerts)
    axes[-1, 0].set_xlim(_x(view.window[0]), _x(view.window[1]))
    axes[-1, 0].xaxis.set_major_formatter(mdates.DateFormatter("%d %b"))  # type: ignore[no-untyped-call]
    fig.suptitle(_title(view), fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _series(ax: Axes, metric: str, points: Sequence[tuple[datetime, float]],
            implausible: Sequence[tuple[datetime, float]]) -> None:
    if points:
        ax.plot([_x(at) for at, _ in points], [v for _, v in points], ".-", ms=3, lw=0.6,
                color="tab:blue")
    if implausible:
        ax.plot([_x(at) for at, _ in implausible], [v for _, v in implausible], "x", ms=5,
                color="grey", label="implausible")
        ax.legend(loc="upper left", fontsize=7)
    ax.set_ylabel(metric, fontsize=8)


def _events(ax: Axes, events: Mapping[str, Sequence[datetime]]) -> None:
    kinds = sorted(events)
    for row, kind in enumerate(kinds):
        ax.plot([_x(at) for at in events[kind]], [row] * len(events[kind]), "|", ms=8)
    ax.set_yticks(range(len(kinds)), kinds, fontsize=7)
    ax.set_ylim(-0.7, max(len(kinds), 1) - 0.3)
    ax.set_ylabel("events", fontsize=8)


def _episode_marks(ax: Axes, view: EpisodeView) -> None:
    e = view.episode
    ax.axvspan(_x(e.onset), _x(e.last), color="tab:orange", alpha=0.15, lw=0)
    ax.axvline(_x(e.crisis), color="tab:orange", lw=1.5, ls="--")


def _alert_marks(top: Axes, axes: Sequence[Axes], alerts: Sequence[RaisedAlert]) -> None:
    for alert in alerts:
        colour = SEVERITY_COLOURS.get(alert.severity, "black")
        for ax in axes:
            ax.axvline(_x(alert.opened_at), color=colour, lw=0.9)
        top.annotate(alert.rule, (_x(alert.opened_at), 1.0),
                     xycoords=("data", "axes fraction"), rotation=90, fontsize=6,
                     va="bottom", ha="right", color=colour)
