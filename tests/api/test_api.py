"""The API over a real database, through FastAPI's test client."""

from collections.abc import Callable
from datetime import timedelta
from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest
from fastapi.testclient import TestClient

from devices.repository import prepare_reading_stage, storage_backend
from ingest.decode import Inbound
from ingest.pipeline import Limits, process_batch
from tests.api.conftest import NOW
from tests.conftest import reading_message

MakeDevice = Callable[..., tuple[str, UUID]]


@pytest.fixture
def citizen_with_readings(conn: psycopg.Connection[Any], make_device: MakeDevice) -> UUID:
    """A citizen with 48 blood pressures, one every 30 minutes over the day before NOW."""
    device, citizen = make_device()
    message = reading_message(device, range(48), start=NOW - timedelta(days=1),
                              step=timedelta(minutes=30), systolic=120)
    limits = Limits("telecare", 65536, timedelta(minutes=10), timedelta(minutes=5))
    prepare_reading_stage(conn)
    with conn.transaction():
        process_batch(conn, [Inbound(f"telecare/v1/{device}/readings", message.encode(), NOW)],
                      limits)
    return citizen


def _is_problem(response: Any, status: int) -> None:
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["status"] == status and response.json()["detail"]


def test_raw_readings_in_a_range(client: TestClient, citizen_with_readings: UUID) -> None:
    response = client.get(f"/v1/citizens/{citizen_with_readings}/readings", params={
        "metric": "systolic_bp", "start": (NOW - timedelta(hours=6)).isoformat(),
        "end": NOW.isoformat()})
    assert response.status_code == 200
    body = response.json()
    assert body["unit"] == "mm[Hg]"
    assert len(body["readings"]) == 12 and {r["value"] for r in body["readings"]} == {120.0}
    times = [r["measured_at"] for r in body["readings"]]
    assert times == sorted(times)


def test_bucketed_readings_give_min_mean_max_count(client: TestClient,
                                                   citizen_with_readings: UUID) -> None:
    response = client.get(f"/v1/citizens/{citizen_with_readings}/readings", params={
        "metric": "pulse_rate", "bucket": "6h", "start": (NOW - timedelta(days=1)).isoformat(),
        "end": NOW.isoformat()})
    assert response.status_code == 200
    buckets = response.json()["buckets"]
    assert [b["count"] for b in buckets] == [12, 12, 12, 12]
    assert all(b["min"] == b["mean"] == b["max"] == 70.0 for b in buckets)
    assert response.json()["bucket_seconds"] == 6 * 3600


@pytest.mark.parametrize("params", [
    {"metric": "not_a_metric"},
    {"metric": "spo2", "bucket": "3 weeks"},
    {"metric": "spo2", "bucket": "1s", "start": "2020-01-01T00:00:00Z"},
    {"metric": "spo2", "start": "2026-11-20T00:00:00"},
    {"metric": "spo2", "start": "2026-11-20T00:00:00Z", "end": "2026-11-19T00:00:00Z"},
    {"metric": "spo2", "limit": "0"},
    {},
])
def test_bad_queries_are_422_problems(client: TestClient, citizen_with_readings: UUID,
                                      params: dict[str, str]) -> None:
    _is_problem(client.get(f"/v1/citizens/{citizen_with_readings}/readings", params=params), 422)


def test_unknown_things_are_404_problems(client: TestClient) -> None:
    _is_problem(client.get(f"/v1/citizens/{uuid4()}/readings", params={"metric": "spo2"}), 404)
    _is_problem(client.get(f"/v1/citizens/{uuid4()}/devices"), 404)
    _is_problem(client.get("/v1/devices/nope"), 404)
    _is_problem(client.get("/v1/no-such-route"), 404)


def test_devices_with_holder_and_status(client: TestClient, make_device: MakeDevice) -> None:
    device, citizen = make_device("scale")
    listed = client.get(f"/v1/citizens/{citizen}/devices").json()
    assert [(d["id"], d["kind"], d["citizen_id"]) for d in listed] == [
        (device, "scale", str(citizen))]
    assert client.get(f"/v1/devices/{device}").json()["id"] == device


def test_dead_letter_report_counts_by_reason(client: TestClient,
                                             conn: psycopg.Connection[Any]) -> None:
    limits = Limits("telecare", 65536, timedelta(minutes=10), timedelta(minutes=5))
    with conn.transaction():
        process_batch(conn, [Inbound("telecare/v1/x-api/readings", b"{nope-api", NOW)], limits)
    report = client.get("/v1/dead-letters", params={"since": (NOW - timedelta(minutes=1))
                                                    .isoformat()}).json()
    assert report["total"] >= 1
    assert "invalid_json" in {r["reason"] for r in report["by_reason"]}
    assert "payload" not in report["recent"][0]


def test_health_readiness_and_catalogue(client: TestClient,
                                        conn: psycopg.Connection[Any]) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    ready = client.get("/ready").json()
    # The suite runs on each storage backend: the one this database was migrated for.
    assert ready["status"] == "ready" and ready["storage"] == storage_backend(conn)
    assert ready["storage"] in ("postgres", "timescaledb")
    metrics = {m["code"]: m for m in client.get("/v1/metrics").json()}
    assert metrics["spo2"]["loinc"] == "59408-5" and metrics["spo2"]["ucum"] == "%"
