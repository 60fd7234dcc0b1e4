"""The side-by-side report: one column per population (the development seed first, the other
seeds, the noisier population), as a text table for the terminal, Markdown and JSON."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from alerts.replay import STATUS_RULES
from evaluation.quality import ACUTE, DETERIORATION, POOLED, Figures, KindFigures
from evaluation.service import KINDS, Options, PopulationResult

TARGET = ("target: >= 90% of deterioration episodes (" + ", ".join(DETERIORATION)
          + ") caught >= 24 h before their crisis, <= 0.5 non-actionable alerts per citizen-week")


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.0f}%"


def _hours(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


Row = tuple[str, Callable[[Figures], str]]


def _kind_rows(kind: str) -> list[Row]:
    def get(f: Figures) -> KindFigures | None:
        return f.by_kind.get(kind)

    def cell(text: Callable[[KindFigures], str]) -> Callable[[Figures], str]:
        return lambda f: text(k) if (k := get(f)) is not None else "-"

    rows: list[Row] = [(f"{kind}: episodes", cell(lambda k: str(k.episodes))),
                       (f"{kind}: caught", cell(lambda k: _pct(k.caught))),
                       (f"{kind}: caught by any alert, adherence rules too",
                        cell(lambda k: _pct(k.caught_any_rule)))]
    if kind not in ACUTE:
        rows.append((f"{kind}: caught >= 24 h ahead", cell(lambda k: _pct(k.caught_ahead))))
    rows.append((f"{kind}: caught by finding", cell(lambda k: _pct(k.caught_by_finding))))
    if kind not in ACUTE:
        rows.append((f"{kind}: caught by finding >= 24 h ahead",
                     cell(lambda k: _pct(k.caught_ahead_by_finding))))
    rows += [(f"{kind}: lead median h", cell(lambda k: _hours(k.lead_median_h))),
             (f"{kind}: lead p10 h", cell(lambda k: _hours(k.lead_p10_h)))]
    return rows


def rows(results: Sequence[PopulationResult]) -> list[Row]:
    """The table's rows: per episode kind, then the burden figures, then per rule."""
    table: list[Row] = []
    for kind in (POOLED, *KINDS):
        table += _kind_rows(kind)
    table += [("alerts", lambda f: str(f.alerts)),
              ("non-actionable alerts", lambda f: str(f.non_actionable)),
              ("non-actionable per citizen-week",
               lambda f: f"{f.non_actionable_per_citizen_week:.2f}"),
              ("  without the adherence rules (missed, not_measuring)",
               lambda f: f"{f.non_actionable_clinical_per_citizen_week:.2f}"),
              ("  the same after day 30",
               lambda f: f"{f.non_actionable_per_citizen_week_after_learning:.2f}"),
              ("alerts per nurse-day", lambda f: f"{f.alerts_per_nurse_day:.1f}"),
              ("screen reminders of a missed measurement per citizen-week",
               lambda f: f"{f.reminders_per_citizen_week:.2f}")]
    rules = sorted({rule for r in results for rule in r.figures.by_rule})
    table += [(f"rule {rule}: alerts / overlapping / non-act. per cw / episodes caught, "
               "median lead", _rule_cell(rule))
              for rule in rules]
    return table


def _rule_cell(rule: str) -> Callable[[Figures], str]:
    def cell(f: Figures) -> str:
        x = f.by_rule.get(rule)
        if x is None:
            return "-"
        caught = (f" / {x.caught_episodes} of {x.eligible_episodes}, {_hours(x.lead_median_h)} h"
                  if x.eligible_episodes else "")
        return f"{x.alerts} / {x.overlapping} / {x.non_actionable_per_citizen_week:.2f}{caught}"
    return cell


def _header(results: Sequence[PopulationResult]) -> list[str]:
    return [("dev " if i == 0 else "") + r.spec.label for i, r in enumerate(results)]


def text_table(results: Sequence[PopulationResult]) -> str:
    """The table for the terminal."""
    table = [(name, [cell(r.figures) for r in results]) for name, cell in rows(results)]
    header = _header(results)
    first = max(len(name) for name, _ in table)
    widths = [max(len(h), *(len(cells[i]) for _, cells in table)) for i, h in enumerate(header)]
    lines = ["  ".join([" " * first, *(h.rjust(w) for h, w in zip(header, widths, strict=True))])]
    lines += ["  ".join([name.ljust(first), *(c.rjust(w) for c, w in zip(cells, widths,
                                                                          strict=True))])
              for name, cells in table]
    return "\n".join(lines)


def markdown(results: Sequence[PopulationResult], options: Options, wall_s: float) -> str:
    """report.md: the conditions, the table, counts and what is not replayed."""
    header = _header(results)
    out = [f"# telecare evaluate: {options.citizens} citizens, {options.days:g} days after "
           f"{options.warmup_days:g} of history, "
           f"{options.nurses} nurses, tick {options.tick_s:g} s, alerts resolved "
           + (f"{options.resolve_after.total_seconds() / 3600:g} h after opening"
              if options.resolve_after else "by nobody"), "",
           f"Development seed {options.seeds[0]}; other seeds "
           f"{', '.join(map(str, options.seeds[1:])) or 'none'}; noisier population: noise "
           f"x{options.noise:g} on the development seed. Wall time {wall_s:.0f} s.", "",
           TARGET + ".", "",
           "| | " + " | ".join(header) + " |", "|---|" + "---:|" * len(header)]
    out += [f"| {name} | " + " | ".join(cell(r.figures) for r in results) + " |"
            for name, cell in rows(results)]
    out += ["", "Counts (nothing lost: stored = generated - refused):", "",
            "| | " + " | ".join(header) + " |", "|---|" + "---:|" * len(header)]
    for key in results[0].counts:
        if key != "not_replayed_rules":
            out.append(f"| {key} | " + " | ".join(str(r.counts[key]) for r in results) + " |")
    out += ["", "Rules not replayed (their status history is not stored): "
            + ", ".join(sorted(STATUS_RULES)) + ".", "",
            "Figures: " + ", ".join(Path(p).name for p in results[0].plots), ""]
    return "\n".join(out)


def as_json(results: Sequence[PopulationResult], options: Options, wall_s: float
            ) -> dict[str, Any]:
    """report.json: everything of the Markdown, machine-readable."""
    return {"citizens": options.citizens, "days": options.days, "nurses": options.nurses,
            "tick_s": options.tick_s, "development_seed": options.seeds[0],
            "seeds": list(options.seeds), "noise": options.noise, "wall_s": wall_s,
            "target": TARGET, "not_replayed_rules": sorted(STATUS_RULES),
            "populations": [{"label": r.spec.label, "seed": r.spec.seed, "noise": r.spec.noise,
                             "start": r.spec.start.isoformat(), "end": r.spec.end.isoformat(),
                             "data_start": r.spec.data_start.isoformat(),
                             "figures": r.figures.as_dict(), "counts": r.counts,
                             "seconds": r.seconds, "plots": r.plots} for r in results]}


def write(results: Sequence[PopulationResult], options: Options, wall_s: float,
          out: Path) -> list[Path]:
    """report.json and report.md in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    as_md = out / "report.md"
    as_md.write_text(markdown(results, options, wall_s), encoding="utf-8")
    as_js = out / "report.json"
    as_js.write_text(json.dumps(as_json(results, options, wall_s), indent=2, default=str),
                     encoding="utf-8")
    return [as_js, as_md]


__all__ = ["TARGET", "as_json", "markdown", "rows", "text_table", "write"]
