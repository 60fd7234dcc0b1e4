"""The FHIR R4 export on the real database: stored readings of every catalogue metric export to
a Bundle that fhir.resources validates and that meets the vital-signs profiles as FHIR R4 states
them (written out here, apart from api/fhir.py); blood pressure is one Observation with two
components; filters by measured time and metric; keyset pages meet every observation exactly
once; the relation decides who gets anything (404 otherwise), a relative's proxy clips the range
and makes the export pseudonymous; bad parameters are 422 problems.

fhir.resources has no R4 (4.0.1) models for pydantic 2 (its 6.x releases need pydantic 1): the
R4B models validate, which for Bundle, Observation, Device and Patient are R4's (docs/fhir.md)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import psycopg
import pytest
from fastapi.testclient import TestClient
from fhir.resources.R4B.bundle import Bundle
from pydantic import SecretStr

from api import fhir
from api.app import create_app
from api.auth.models import User
from api.auth.tokens import issue_access_token, read_access_token
from core.db import open_pool
from core.settings import Settings
from devices import repository as devices_repo
from devices.catalogue import COMPONENTS, DEVICE_MEASUREMENTS, METRICS
from devices.repository import ReadingRow
from tests.alerts.delivery_data import care_team, team_citizen
from tests.api.conftest import NOW, problem
from tests.conftest import new_device, only_on

Conn = psycopg.Connection[Any]
KEY = "f" * 40
PATH = "/v1/citizens/{}/fhir/Observation"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
VITALSIGNS = "http://hl7.org/fhir/StructureDefinition/vitalsigns"
CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
# FHIR R4's vital-signs profiles: the LOINC code each requires and the UCUM units it allows.
PROFILES = {"bp": ("85354-9", {"mm[Hg]"}), "heartrate": ("8867-4", {"/min"}),
            "resprate": ("9279-1", {"/min"}), "oxygensat": ("2708-6", {"%"}),
            "bodytemp": ("8310-5", {"Cel", "[degF]"}),
            "bodyweight": ("29463-7", {"kg", "g", "[lb_av]"})}
# What each catalogue metric must become: (profile or None, category, LOINC code of the value
# or of the blood-pressure component).
EXPECTED = {"systolic_bp": ("bp", "vital-signs", "8480-6"),
            "diastolic_bp": ("bp", "vital-signs", "8462-4"),
            "pulse_rate": ("heartrate", "vital-signs", "8867-4"),
            "heart_rate": ("heartrate", "vital-signs", "8867-4"),
            "spo2": ("oxygensat", "vital-signs", "2708-6"),
            "body_weight": ("bodyweight", "vital-signs", "29463-7"),
            "body_temperature": ("bodytemp", "vital-signs", "8310-5"),
            "respiration_rate": ("resprate", "vital-signs", "9279-1"),
            "blood_glucose": (None, "laboratory", "15074-8")}
BP = ("systolic_bp", "diastolic_bp")


def store(conn: Conn, rows: list[ReadingRow]) -> None:
    devices_repo.prepare_reading_stage(conn)
    with conn.transaction():  # the stage is emptied at commit
        devices_repo.insert_readings(conn, rows)


def row(device: str, metric: str, at: datetime, seq: int, citizen: UUID, value: float, *,
        received: datetime | None = None, late: bool = False, delay: str | None = None,
        quality: str = "valid", clock_suspect: bool = False) -> ReadingRow:
    return ReadingRow(device, metric, at, seq, citizen, value, received or at, None, late, delay,
                      quality, clock_suspect)


def every_measurement(conn: Conn, citizen: UUID | None = None,
                      at: datetime = NOW - timedelta(hours=2)) -> tuple[UUID, list[ReadingRow]]:
    """A device of every kind that measures, each storing one reading of every measurement it
    makes, with a value in the middle of each metric's possible range."""
    rows: list[ReadingRow] = []
    for seq, (kind, measurements) in enumerate(sorted(DEVICE_MEASUREMENTS.items())):
        device, citizen = new_device(conn, kind.value, citizen)
        for offset, measurement in enumerate(sorted(measurements)):
            for metric in COMPONENTS[measurement].values():
                m = METRICS[metric]
                rows.append(row(device, metric, at + timedelta(minutes=seq), offset, citizen,
                                round((m.possible_min + m.possible_max) / 2, 1),
                                received=at + timedelta(minutes=seq, seconds=5)))
    store(conn, rows)
    assert citizen is not None
    return citizen, rows


def resources(body: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [e["resource"] for e in body["entry"] if e["resource"]["resourceType"] == kind]


def codes(concept: dict[str, Any], system: str = LOINC) -> set[str]:
    return {c["code"] for c in concept["coding"] if c["system"] == system}


def validated(response: Any) -> dict[str, Any]:
    """The body of a 200 FHIR answer, checked by fhir.resources and for its references."""
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/fhir+json"
    body: dict[str, Any] = response.json()
    Bundle.model_validate(body)
    assert body["type"] == "searchset"
    urls = [e["fullUrl"] for e in body["entry"]]
    assert len(urls) == len(set(urls))
    for entry in body["entry"]:
        assert entry["fullUrl"] == f"urn:uuid:{entry['resource']['id']}"
    for observation in resources(body, "Observation"):
        assert observation["subject"]["reference"] in urls
        assert observation["device"]["reference"] in urls
    assert len(resources(body, "Patient")) == 1
    return body


def walk(client: TestClient, url: str, headers: dict[str, str] | None = None,
         **params: Any) -> list[dict[str, Any]]:
    """Every page, following `next` links until there is none."""
    pages = [validated(client.get(url, params=params or None, headers=headers))]
    while (following := [link["url"] for link in pages[-1]["link"] if link["relation"] == "next"]):
        pages.append(validated(client.get(following[0], headers=headers)))
        assert len(pages) < 1000
    return pages


def readings_in(pages: list[dict[str, Any]], devices: dict[str, str]) -> list[tuple[Any, ...]]:
    """(device, measured time, metric, value) of every reading the Observations carry, in page
    order; `devices` maps Device references to device ids."""
    metric_of = {(EXPECTED[m][2], m in BP): m for m in EXPECTED if m != "heart_rate"}
    seen = []
    for body in pages:
        for obs in resources(body, "Observation"):
            parts = obs.get("component", [obs])
            for part in parts:
                code = (codes(part["code"]) & {e[2] for e in EXPECTED.values()}).pop()
                metric = metric_of[(code, "component" in obs)]
                if metric == "pulse_rate" and "147842" in codes(obs["code"], fhir.MDC):
                    metric = "heart_rate"
                seen.append((devices[obs["device"]["reference"]],
                             datetime.fromisoformat(obs["effectiveDateTime"]), metric,
                             part["valueQuantity"]["value"]))
    return seen


def device_ids(pages: list[dict[str, Any]]) -> dict[str, str]:
    return {f"urn:uuid:{d['id']}": d["identifier"][0]["value"]
            for body in pages for d in resources(body, "Device")}


def test_the_mapping_table_agrees_with_the_catalogue() -> None:
    assert set(fhir.METRIC_FHIR) == set(METRICS) == set(EXPECTED)
    for code, metric in METRICS.items():
        mapped = fhir.METRIC_FHIR[code]
        assert mapped.ucum == metric.ucum, code
        assert metric.loinc in {c.code for c in mapped.loinc}, code


def test_every_catalogue_metric_exports_to_a_valid_bundle(
        conn: Conn, client: TestClient) -> None:
    citizen, rows = every_measurement(conn)
    assert {r.metric for r in rows} == set(METRICS)  # every metric of the catalogue is stored
    body = validated(client.get(PATH.format(citizen)))
    observations = resources(body, "Observation")
    assert len(observations) == len(rows) - sum(r.metric == "diastolic_bp" for r in rows)
    devices = {f"urn:uuid:{d['id']}": d for d in resources(body, "Device")}
    stored = {(r.device_id, r.metric, r.measured_at): r for r in rows}
    for obs in observations:
        assert obs["status"] == "final"
        device = devices[obs["device"]["reference"]]
        device_id = device["identifier"][0]["value"]
        effective = datetime.fromisoformat(obs["effectiveDateTime"])
        parts = obs.get("component", [obs])
        for part in parts:
            metric = next(m for m in EXPECTED if EXPECTED[m][2] in codes(part["code"])
                          and (device_id, m, effective) in stored)
            profile, category, loinc = EXPECTED[metric]
            reading = stored[(device_id, metric, effective)]
            quantity = part["valueQuantity"]
            assert quantity["system"] == UCUM and quantity["code"] == quantity["unit"]
            assert quantity["value"] == reading.value
            assert codes(obs["category"][0], CATEGORY) == {category}
            if profile is None:
                assert VITALSIGNS not in obs.get("meta", {}).get("profile", [])
            else:
                required, units = PROFILES[profile]
                assert required in codes(obs["code"])
                assert quantity["code"] in units
                assert set(obs["meta"]["profile"]) == {
                    VITALSIGNS, f"http://hl7.org/fhir/StructureDefinition/{profile}"}
            assert datetime.fromisoformat(obs["issued"]) == reading.received_at
            assert device["type"]["coding"][0]["code"] == _kind(conn, device_id)
    patient = resources(body, "Patient")[0]
    assert patient["id"] == str(citizen) and patient["name"] == [{"text": "Test Citizen"}]


def _kind(conn: Conn, device_id: str) -> str:
    found = conn.execute("SELECT kind FROM devices WHERE id = %s", (device_id,)).fetchone()
    assert found is not None
    return str(found[0])


def test_blood_pressure_is_one_observation_with_two_components(
        conn: Conn, client: TestClient) -> None:
    device, citizen = new_device(conn, "bp_monitor")
    at = NOW - timedelta(hours=1)
    store(conn, [row(device, "systolic_bp", at, 1, citizen, 141.0),
                 row(device, "diastolic_bp", at, 1, citizen, 87.0),
                 row(device, "pulse_rate", at, 1, citizen, 66.0)])
    body = validated(client.get(PATH.format(citizen)))
    observations = resources(body, "Observation")
    assert len(observations) == 2
    bp = next(o for o in observations if "85354-9" in codes(o["code"]))
    assert [(codes(c["code"]), c["valueQuantity"]["value"], c["valueQuantity"]["code"])
            for c in bp["component"]] == [({"8480-6"}, 141.0, "mm[Hg]"),
                                          ({"8462-4"}, 87.0, "mm[Hg]")]
    assert "valueQuantity" not in bp
    pulse = next(o for o in observations if o is not bp)
    assert codes(pulse["code"]) == {"8867-4"} and pulse["valueQuantity"]["value"] == 66.0
    # Asked for by either pressure, the blood pressure comes whole, and the pulse does not.
    for metric in BP:
        asked = resources(validated(client.get(PATH.format(citizen), params={"metric": metric})),
                          "Observation")
        assert [len(o["component"]) for o in asked] == [2]


def test_time_range_and_metric_filters(conn: Conn, client: TestClient) -> None:
    oximeter, citizen = new_device(conn, "pulse_oximeter")
    scale, _ = new_device(conn, "scale", citizen)
    times = [NOW - timedelta(hours=h) for h in (30, 20, 10)]
    store(conn, [r for seq, at in enumerate(times) for r in (
        row(oximeter, "spo2", at, seq, citizen, 95.0 + seq),
        row(oximeter, "pulse_rate", at, seq, citizen, 70.0 + seq),
        row(scale, "body_weight", at, seq, citizen, 80.0 + seq))])
    url = PATH.format(citizen)

    def effective(**params: Any) -> list[tuple[str, datetime]]:
        body = validated(client.get(url, params=params))
        return sorted((sorted(codes(o["code"]))[0], datetime.fromisoformat(o["effectiveDateTime"]))
                      for o in resources(body, "Observation"))

    assert len(effective()) == 9
    # from is inclusive, until exclusive, both on the measured time.
    within = effective(**{"from": times[1].isoformat(), "until": times[2].isoformat()})
    assert {at for _, at in within} == {times[1]} and len(within) == 3
    assert {at for _, at in effective(until=times[1].isoformat())} == {times[0]}
    assert {at for _, at in effective(**{"from": times[2].isoformat()})} == {times[2]}
    assert effective(metric="spo2") == [("2708-6", at) for at in times]
    both = effective(metric=["spo2", "body_weight"])
    assert sorted({code for code, _ in both}) == ["2708-6", "29463-7"] and len(both) == 6
    only_weight = validated(client.get(url, params={"metric": "body_weight"}))
    assert [d["identifier"][0]["value"] for d in resources(only_weight, "Device")] == [scale]
    # A range that holds nothing is an empty page, as a FHIR search with no match.
    empty = validated(client.get(url, params={"from": times[2].isoformat(),
                                              "until": times[0].isoformat()}))
    assert resources(empty, "Observation") == []


def test_pages_walk_every_observation_exactly_once(conn: Conn, client: TestClient) -> None:
    first, citizen = new_device(conn, "bp_monitor")
    second, _ = new_device(conn, "bp_monitor", citizen)
    patch, _ = new_device(conn, "vitals_patch", citizen)
    rows = []
    for i in range(23):
        # Ties on every part of the order: two devices at one instant, two sequence numbers
        # of one device at one instant, two metrics of one patch reading.
        at = NOW - timedelta(hours=40) + timedelta(minutes=10 * (i // 3))
        for device in (first, second):
            rows += [row(device, "systolic_bp", at, i, citizen, 120.0 + i),
                     row(device, "diastolic_bp", at, i, citizen, 80.0 + i / 10),
                     row(device, "pulse_rate", at, i, citizen, 60.0 + i)]
        rows += [row(patch, "heart_rate", at, i, citizen, 61.0 + i),
                 row(patch, "respiration_rate", at, i, citizen, 12.0 + i / 10)]
    store(conn, rows)
    expected = sorted((r.device_id, r.measured_at, r.metric, r.value) for r in rows)
    for count in (1, 7, 100, 1000):
        pages = walk(client, PATH.format(citizen), _count=count)
        seen = readings_in(pages, device_ids(pages))
        assert sorted(seen) == expected, count
        assert len(seen) == len(set(seen)), count  # none twice
        observations = [o for body in pages for o in resources(body, "Observation")]
        assert len(observations) == 23 * 6
        assert all(len(resources(body, "Observation")) == count for body in pages[:-1])
        times = [o["effectiveDateTime"] for o in observations]
        assert times == sorted(times, key=datetime.fromisoformat)  # oldest first
    # The walk is keyset: a page continues after its position, whatever arrives meanwhile.
    pages = [validated(client.get(PATH.format(citizen), params={"_count": 10}))]
    later = NOW - timedelta(minutes=5)
    store(conn, [row(patch, "heart_rate", later, 999, citizen, 99.0)])
    next_url = next(link["url"] for link in pages[0]["link"] if link["relation"] == "next")
    rest = walk(client, next_url)
    seen = readings_in(pages + rest, device_ids(pages + rest))
    assert len(seen) == len(rows) + 1 and len(set(seen)) == len(seen)


@pytest.fixture
def signed_in(database: str) -> Iterator[TestClient]:
    pool = open_pool(database, max_size=4)
    app = create_app(Settings(database_url=database, auth_signing_key=SecretStr(KEY),
                              auth_required=True), pool=pool, clock=lambda: NOW)
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client
    pool.close()


def user(conn: Conn, role: str, citizen: UUID | None = None) -> dict[str, str]:
    """A new user of `role` (the citizen user of `citizen`), as request headers."""
    username = f"{role[:5]}-{uuid.uuid4().hex[:10]}"
    found = conn.execute(
        "INSERT INTO users (username, display_name, role, password_hash, created_at, citizen_id)"
        " VALUES (%s, 'Test', %s, 'not-a-hash', %s, %s) RETURNING id",
        (username, role, NOW, citizen)).fetchone()
    assert found is not None
    person = User(id=found[0], username=username, display_name="Test", role=role,  # type: ignore[arg-type]
                  created_at=NOW, disabled_at=None)
    return {"Authorization": "Bearer " + issue_access_token(person, KEY, NOW,
                                                            timedelta(minutes=5))}


def _user_id(_conn: Conn, headers: dict[str, str]) -> UUID:
    return read_access_token(headers["Authorization"].removeprefix("Bearer "), KEY, NOW).user_id


def _team_citizen(conn: Conn) -> tuple[UUID, UUID, str, list[ReadingRow]]:
    team = care_team(conn)
    device, citizen = new_device(conn, "scale", team_citizen(conn, team))
    rows = [row(device, "body_weight", NOW - timedelta(days=days), days, citizen, 80.0 + days)
            for days in (10, 1)]
    store(conn, rows)
    return team, citizen, device, rows


@only_on("postgres")  # the relation does not depend on the storage backend
def test_a_caller_outside_the_relation_gets_404(conn: Conn, signed_in: TestClient) -> None:
    team, citizen, _, _ = _team_citizen(conn)
    other_team = care_team(conn)
    nurse = user(conn, "nurse")
    conn.execute("INSERT INTO team_members (user_id, care_team_id, added_at) VALUES (%s, %s, %s)",
                 (_user_id(conn, nurse), other_team, NOW))
    relative_of_no_one = user(conn, "relative")
    for headers in (nurse, user(conn, "project_lead"), user(conn, "service"), relative_of_no_one,
                    user(conn, "citizen", team_citizen(conn, team))):
        problem(signed_in.get(PATH.format(citizen), headers=headers), 404, "citizen_not_found")
    admin = user(conn, "administrator")
    problem(signed_in.get(PATH.format(uuid.uuid4()), headers=admin), 404, "citizen_not_found")
    problem(signed_in.get(PATH.format(citizen)), 401, "not_signed_in")
    # Once in the team, the same nurse sees the citizen by name.
    conn.execute("INSERT INTO team_members (user_id, care_team_id, added_at) VALUES (%s, %s, %s)",
                 (_user_id(conn, nurse), team, NOW))
    body = validated(signed_in.get(PATH.format(citizen), headers=nurse))
    assert resources(body, "Patient")[0]["identifier"][0]["value"] == str(citizen)


@only_on("postgres")
def test_care_staff_and_the_citizen_see_identity(conn: Conn, signed_in: TestClient) -> None:
    team, citizen, device, _ = _team_citizen(conn)
    nurse = user(conn, "nurse")
    conn.execute("INSERT INTO team_members (user_id, care_team_id, added_at) VALUES (%s, %s, %s)",
                 (_user_id(conn, nurse), team, NOW))
    for headers in (user(conn, "administrator"), nurse, user(conn, "citizen", citizen)):
        body = validated(signed_in.get(PATH.format(citizen), headers=headers))
        patient = resources(body, "Patient")[0]
        assert patient["id"] == str(citizen) and patient["name"] == [{"text": "Test Citizen"}]
        assert resources(body, "Device")[0]["identifier"][0]["value"] == device
        assert len(resources(body, "Observation")) == 2


@only_on("postgres")
def test_a_relatives_proxy_clips_the_range_and_the_export_is_pseudonymous(
        conn: Conn, signed_in: TestClient) -> None:
    _, citizen, device, rows = _team_citizen(conn)
    relative = user(conn, "relative")
    conn.execute(
        "INSERT INTO proxies (citizen_id, relative_id, kinds, valid, granted_by, granted_at)"
        " VALUES (%s, %s, %s, tstzrange(%s, NULL), 'test', %s)",
        (citizen, _user_id(conn, relative), ["readings"], NOW - timedelta(days=3), NOW))
    url = PATH.format(citizen)
    for params in ({}, {"from": (NOW - timedelta(days=30)).isoformat()},
                   {"_count": 1}, {"_cursor": f"0~{device}~0~body_weight"}):
        pages = walk(signed_in, url, relative, **params)
        observations = [o for body in pages for o in resources(body, "Observation")]
        assert [datetime.fromisoformat(o["effectiveDateTime"]) for o in observations] == [
            NOW - timedelta(days=1)], params
    body = validated(signed_in.get(url, headers=relative, params={"_count": 1}))
    # No resource names the citizen or the device; the links are the relative's own requests,
    # which name the citizen's Telecare id (docs/fhir.md: open).
    text = json.dumps(body["entry"])
    for identifying in (str(citizen), "Test Citizen", device, f"S-{device}"):
        assert identifying not in text
    assert {link["relation"] for link in body["link"]} == {"self"}
    patient = resources(body, "Patient")[0]
    assert patient["meta"]["security"][0]["code"] == "PSEUDED"
    assert body["meta"]["security"][0]["code"] == "PSEUDED"
    assert "name" not in patient
    again = validated(signed_in.get(url, headers=relative))
    assert resources(again, "Patient")[0]["id"] == patient["id"]  # stable pseudonym
    another = user(conn, "relative")
    conn.execute(
        "INSERT INTO proxies (citizen_id, relative_id, kinds, valid, granted_by, granted_at)"
        " VALUES (%s, %s, %s, tstzrange(%s, NULL), 'test', %s)",
        (citizen, _user_id(conn, another), ["readings"], NOW - timedelta(days=3), NOW))
    theirs = validated(signed_in.get(url, headers=another))
    assert resources(theirs, "Patient")[0]["id"] != patient["id"]  # not joinable
    # A proxy for alerts only is no relation to readings.
    alerts_only = user(conn, "relative")
    conn.execute(
        "INSERT INTO proxies (citizen_id, relative_id, kinds, valid, granted_by, granted_at)"
        " VALUES (%s, %s, %s, tstzrange(%s, NULL), 'test', %s)",
        (citizen, _user_id(conn, alerts_only), ["alerts"], NOW - timedelta(days=30), NOW))
    problem(signed_in.get(url, headers=alerts_only), 404, "citizen_not_found")


def test_late_implausible_and_clock_suspect_readings_say_so(
        conn: Conn, client: TestClient) -> None:
    device, citizen = new_device(conn, "pulse_oximeter")
    at = NOW - timedelta(hours=5)
    store(conn, [
        row(device, "spo2", at, 1, citizen, 45.0, received=NOW - timedelta(hours=1), late=True,
            delay="device", quality="implausible"),
        row(device, "pulse_rate", at, 1, citizen, 70.0, received=NOW - timedelta(hours=1),
            late=True, delay="device", clock_suspect=True),
        row(device, "spo2", at + timedelta(minutes=1), 2, citizen, 97.0)])
    body = validated(client.get(PATH.format(citizen)))
    by_code = {(sorted(codes(o["code"]))[0], o["effectiveDateTime"]): o
               for o in resources(body, "Observation")}

    def tags(obs: dict[str, Any]) -> set[str]:
        return {t["code"] for t in obs.get("meta", {}).get("tag", [])}

    spo2 = by_code[("2708-6", at.isoformat())]
    assert tags(spo2) == {"late", "implausible"}
    assert spo2["valueQuantity"]["value"] == 45.0  # stored as measured, and said so
    assert datetime.fromisoformat(spo2["issued"]) - datetime.fromisoformat(
        spo2["effectiveDateTime"]) == timedelta(hours=4)
    notes = " ".join(n["text"] for n in spo2["note"])
    assert "late" in notes and "held by the device" in notes and "possible" in notes
    assert tags(by_code[("8867-4", at.isoformat())]) == {"late", "clock-suspect"}
    fine = by_code[("2708-6", (at + timedelta(minutes=1)).isoformat())]
    assert tags(fine) == set() and "note" not in fine


def test_bad_parameters_are_422_problems(conn: Conn, client: TestClient) -> None:
    _, citizen = new_device(conn, "scale")
    url = PATH.format(citizen)
    for params in ({"metric": "bogus"}, {"from": "yesterday"}, {"until": "2026-11-20T12:00:00"},
                   {"from": "2026-02-30T00:00:00Z"}, {"_count": "0"}, {"_count": "1001"},
                   {"_count": "many"}, {"_cursor": "garbage"}, {"_cursor": "1~dev~1~glucose"},
                   {"_cursor": "-1~dev~1~spo2"}):
        problem(client.get(url, params=params), 422, "invalid_request")
    problem(client.get(PATH.format("not-a-uuid")), 422, "invalid_request")
    with pytest.raises(fhir.InvalidCursor):
        fhir.read_cursor("garbage")
