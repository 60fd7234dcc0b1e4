"""`telecare evaluate` end to end on the real database: a small population generated, stored
through ingest, replayed through the real rules, matched and drawn."""

from __future__ import annotations

import json
from collections import Counter
from datetime import timedelta
from pathlib import Path

import matplotlib.image
import pytest

from evaluation.population import Spec, generate
from evaluation.quality import POOLED, Period, TrueEpisode, scored
from evaluation.service import Options, evaluate
from telecare.cli import main
from tests.conftest import admin_dsn_of

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SPEC = Spec(citizens=10, days=20, seed=1)


def ground_truth_kinds() -> Counter[str]:
    """The episode kinds the rules could see whole, from the simulators' own plan."""
    _, episodes = generate(SPEC)
    truth = [TrueEpisode(e.id, e.citizen, e.kind, e.onset, e.crisis, e.last) for e in episodes]
    return Counter(e.kind for e in scored(truth, Period(SPEC.start, SPEC.end, SPEC.citizens)))


def test_the_command_reports_every_episode_kind_and_loses_nothing(
        backend: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--log-level", "WARNING", "evaluate", "--dsn", admin_dsn_of(backend),
                 "--citizens", str(SPEC.citizens), "--days", str(SPEC.days), "--seeds", "1",
                 "--noise", "1", "--jobs", "1", "--warmup-days", "10", "--out", str(tmp_path)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "wall time" in printed and "non-actionable per citizen-week" in printed
    report = json.loads((tmp_path / "report.json").read_text(encoding="utf-8"))
    (population,) = report["populations"]
    # Ten days of history before the period: stored, not scored (the kinds below are the
    # period's alone).
    assert population["data_start"] == (SPEC.start - timedelta(days=10)).isoformat()
    kinds = ground_truth_kinds()
    assert len(kinds) == 5, kinds  # the small population has every kind: the test means it
    by_kind = population["figures"]["by_kind"]
    assert {kind: by_kind[kind]["episodes"] for kind in kinds} == dict(kinds)
    assert POOLED in by_kind
    counts = population["counts"]
    # Nothing lost: every generated reading is stored or refused with a reason (the clock
    # reset days ahead), and the table holds exactly the stored ones.
    assert counts["readings_refused"] > 0
    assert counts["readings_stored"] == counts["readings_generated"] - counts["readings_refused"]
    assert counts["events_stored"] == counts["events_generated"]
    # The faults happened: offline spells and a clock behind (late), sensor glitches.
    assert counts["readings_late"] + counts["events_late"] > 0
    assert counts["readings_implausible"] > 0
    assert set(counts["not_replayed_rules"]) == {"device_offline", "battery_low",
                                                 "invalid_payloads"}
    for kind in kinds:
        png = tmp_path / f"episode_{kind}.png"
        assert png.read_bytes()[:8] == PNG_MAGIC
        height, width, _ = matplotlib.image.imread(png).shape
        assert height > 100 and width > 100
    assert (tmp_path / "report.md").read_text(encoding="utf-8").startswith("# telecare evaluate")


def test_two_runs_of_one_seed_give_the_same_figures(backend: str) -> None:
    options = Options(admin_dsn=admin_dsn_of(backend), citizens=5, days=10, seeds=(2,),
                      noise=1.0, jobs=1, storage=backend, warmup_days=5)
    first, second = evaluate(options), evaluate(options)
    assert first[0].figures == second[0].figures
    assert first[0].counts == second[0].counts
