"""A citizen's personal baselines over the API: learning before any training, active with her
usual value after it, a look recorded in the audit log, an unknown citizen a 404 problem."""

from __future__ import annotations

from typing import Any
from uuid import UUID, uuid4

import psycopg
from fastapi.testclient import TestClient

from alerts.retraining import retrain
from anomaly.baseline import BaselineConfig
from tests.alerts.engine_support import enrolled, scalar
from tests.alerts.test_baselines_engine import history
from tests.api.conftest import NOW, problem

Conn = psycopg.Connection[Any]


def evaluated(conn: Conn, citizen: UUID) -> None:
    """As if the alert engine had evaluated her queued readings (retraining learns only those)."""
    conn.execute("DELETE FROM evaluation_queue WHERE citizen_id = %s", (citizen,))


def looks(conn: Conn, citizen: UUID) -> int:
    return int(scalar(conn, "SELECT count(*) FROM audit_log WHERE citizen_id = %s", citizen))


def test_baselines_are_learning_until_trained_then_show_her_usual_value(
        client: TestClient, conn: Conn) -> None:
    device, citizen = enrolled(conn, "hypertension", "bp_monitor")
    before = looks(conn, citizen)
    untrained = client.get(f"/v1/citizens/{citizen}/baselines")
    assert untrained.status_code == 200, untrained.text
    assert [(b["series"], b["status"], b["trained_at"]) for b in untrained.json()] == [
        ("diastolic_bp", "learning", None), ("pulse_rate", "learning", None),
        ("systolic_bp", "learning", None)]
    assert looks(conn, citizen) == before + 1

    history(conn, device, citizen, 30, NOW)
    evaluated(conn, citizen)
    retrain(conn, [citizen], NOW, BaselineConfig())
    trained = {b["series"]: b for b in client.get(f"/v1/citizens/{citizen}/baselines").json()}
    systolic = trained["systolic_bp"]
    assert systolic["status"] == "active" and systolic["rows"] == 60
    assert 127 <= systolic["usual"] <= 133 and systolic["usual_spread"] > 0
    assert systolic["trained_at"] == NOW.isoformat().replace("+00:00", "Z")


def test_an_unknown_citizen_is_a_404_problem(client: TestClient) -> None:
    problem(client.get(f"/v1/citizens/{uuid4()}/baselines"), 404)
    problem(client.get("/v1/citizens/not-a-uuid/baselines"), 422)


def test_a_caller_whose_window_does_not_cover_what_a_baseline_learnt_sees_only_its_status(
        client: TestClient, conn: Conn) -> None:
    from datetime import timedelta

    from alerts import baseline_repository
    from api.access import Window
    from api.routes.baselines import _public

    device, citizen = enrolled(conn, "hypertension", "bp_monitor")
    history(conn, device, citizen, 30, NOW)
    evaluated(conn, citizen)
    retrain(conn, [citizen], NOW, BaselineConfig())
    systolic = baseline_repository.load(conn, [citizen])[citizen]["systolic_bp"]
    assert systolic.first_at is not None
    everything = _public("systolic_bp", systolic, Window(systolic.first_at, NOW))
    assert everything.usual is not None and everything.rows == 60
    recent = _public("systolic_bp", systolic, Window(NOW - timedelta(days=7), NOW))
    assert (recent.status, recent.usual, recent.usual_spread, recent.rows, recent.first_at) == (
        "active", None, None, 0, None)


def test_the_citizens_export_holds_what_her_baselines_learnt(conn: Conn) -> None:
    import io
    import json
    import zipfile

    from api.citizen_export import write_archive

    device, citizen = enrolled(conn, "hypertension", "bp_monitor")
    history(conn, device, citizen, 30, NOW)
    evaluated(conn, citizen)
    retrain(conn, [citizen], NOW, BaselineConfig())
    out = io.BytesIO()
    with conn.transaction():  # the export's server-side cursors need one
        write_archive(conn, citizen, out, NOW, who_looked=False)
    care = json.loads(zipfile.ZipFile(out).read("care.json"))
    by_series = {b["series"]: b for b in care["baselines"]}
    assert set(by_series) == {"diastolic_bp", "pulse_rate", "systolic_bp"}
    assert by_series["systolic_bp"]["status"] == "active"
    assert 127 <= by_series["systolic_bp"]["usual"] <= 133
    assert "state" not in by_series["systolic_bp"]
