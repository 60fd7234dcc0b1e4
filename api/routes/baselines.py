"""A citizen's personal baselines as the alert engine last retrained them: per series, whether it
is still learning (and until when at the earliest), what it learnt from, and her usual value.
The usual value is drawn from her readings, so it is shown to whoever may see those readings:
a relative whose proxy covers only part of what a baseline learnt from sees its status, not
what it learnt."""

from __future__ import annotations

from uuid import UUID

from fastapi import APIRouter

from alerts import baseline_repository, service
from alerts.baselines import series_of
from anomaly.baseline import LEARNING, Baseline
from api import access
from api.deps import CallerDep, DbDep, NowDep
from api.problems import responses
from api.schemas import BaselinePublic

router = APIRouter(tags=["care"])


def _public(series: str, baseline: Baseline | None, window: access.Window) -> BaselinePublic:
    if baseline is None:  # in her plans, not trained yet
        return BaselinePublic(series=series, status=LEARNING)
    learnt_from = (baseline.first_at, baseline.trained_through)
    if not all(at is None or window.holds(at) for at in learnt_from):
        return BaselinePublic(series=series, status=baseline.status, trained_at=baseline.trained_at)
    usual = baseline.value_feature()
    return BaselinePublic(series=series, status=baseline.status, trained_at=baseline.trained_at,
                          rows=baseline.rows, excluded=baseline.excluded,
                          first_at=baseline.first_at, trained_through=baseline.trained_through,
                          learning_until=baseline.learning_until,
                          usual=usual[0] if usual else None,
                          usual_spread=usual[1] if usual else None)


@router.get("/citizens/{citizen_id}/baselines", response_model=list[BaselinePublic],
            responses=responses(404, 422))
def baselines(citizen_id: UUID, conn: DbDep, caller: CallerDep, now: NowDep
              ) -> list[BaselinePublic]:
    """Every series her plans learn now, with its baseline's state."""
    window = access.citizen(conn, caller, citizen_id, "readings", now)
    plans = [row.plan for row in service.plans_in_force(conn, [citizen_id], now).get(citizen_id, [])]
    stored = baseline_repository.load(conn, [citizen_id]).get(citizen_id, {})
    return [_public(series, stored.get(series), window) for series in series_of(plans)]
