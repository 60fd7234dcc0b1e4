"""A citizen's readings as FHIR R4 resources (docs/fhir.md): Observations with the vital-signs
profiles, LOINC codes and UCUM units, the Devices that measured them and the Patient, in a
searchset Bundle. Pure functions from stored rows to JSON-ready dicts; the route
(api/routes/fhir.py) checks access and reads the rows.

Plain dicts, not fhir.resources models: building a model per resource validates every field
again on the way out (thousands per page), and the package would be a runtime dependency of the
API for a check the tests make once, independently (tests/api/test_fhir.py validates every
metric's export with fhir.resources)."""

from __future__ import annotations

import hashlib
import hmac
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from uuid import UUID

from api import access
from api.deps import Caller
from core.errors import InvalidInput
from devices.catalogue import METRICS, DeviceKind
from devices.export import ObservationKey

FHIR_JSON = "application/fhir+json"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
MDC = "urn:iso:std:iso:11073:10101"
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
V3_OBSERVATION_VALUE = "http://terminology.hl7.org/CodeSystem/v3-ObservationValue"
PROFILE = "http://hl7.org/fhir/StructureDefinition/"
VITAL_SIGNS = PROFILE + "vitalsigns"
# Our own code systems and identifier systems.
TELECARE = "https://telecare.dev/fhir/"
READING_QUALITY = TELECARE + "CodeSystem/reading-quality"
DEVICE_KIND = TELECARE + "CodeSystem/device-kind"
CITIZEN_ID = TELECARE + "NamingSystem/citizen-id"
DEVICE_ID = TELECARE + "NamingSystem/device-id"
PSEUDONYM = TELECARE + "NamingSystem/pseudonym"
_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, TELECARE)

Category = Literal["vital-signs", "laboratory"]
_CATEGORY_DISPLAY = {"vital-signs": "Vital Signs", "laboratory": "Laboratory"}


@dataclass(frozen=True)
class Code:
    code: str
    display: str


@dataclass(frozen=True)
class MetricFhir:
    """How one catalogue metric is said in FHIR: the Observation it is part of (its own, or a
    panel's component), its LOINC codes (the profile's required code first), its UCUM unit, the
    category and the profile."""

    observation: str
    loinc: tuple[Code, ...]
    ucum: str
    category: Category
    profile: str | None  # the specific vital-signs profile; None: no vital sign


# One table: every catalogue metric (a test checks the UCUM units and LOINC codes against
# devices/catalogue.py). The specific profiles are those of FHIR R4's vital-signs panel.
# - Systolic and diastolic pressure are components of one blood-pressure Observation (bp).
# - A pulse rate (from a BP monitor or an oximeter) and an ECG heart rate are both LOINC 8867-4
#   under the heartrate profile; the IEEE 11073 code tells them apart.
# - SpO2: the oxygensat profile requires 2708-6; 59408-5 (by pulse oximetry) says how.
# - Capillary glucose is not a vital sign (the vital-signs value set has no glucose, so the
#   profile may not be claimed): category laboratory, the category of a blood analyte whether a
#   laboratory or a glucometer at home measured it, without a profile.
METRIC_FHIR: Mapping[str, MetricFhir] = {
    "systolic_bp": MetricFhir("blood_pressure", (Code("8480-6", "Systolic blood pressure"),),
                              "mm[Hg]", "vital-signs", "bp"),
    "diastolic_bp": MetricFhir("blood_pressure", (Code("8462-4", "Diastolic blood pressure"),),
                               "mm[Hg]", "vital-signs", "bp"),
    "pulse_rate": MetricFhir("pulse_rate", (Code("8867-4", "Heart rate"),), "/min",
                             "vital-signs", "heartrate"),
    "heart_rate": MetricFhir("heart_rate", (Code("8867-4", "Heart rate"),), "/min",
                             "vital-signs", "heartrate"),
    "spo2": MetricFhir("spo2", (Code("2708-6", "Oxygen saturation in Arterial blood"),
                                Code("59408-5", "Oxygen saturation in Arterial blood by Pulse "
                                                "oximetry")), "%", "vital-signs", "oxygensat"),
    "body_weight": MetricFhir("body_weight", (Code("29463-7", "Body weight"),), "kg",
                              "vital-signs", "bodyweight"),
    "body_temperature": MetricFhir("body_temperature", (Code("8310-5", "Body temperature"),),
                                   "Cel", "vital-signs", "bodytemp"),
    "respiration_rate": MetricFhir("respiration_rate", (Code("9279-1", "Respiratory rate"),),
                                   "/min", "vital-signs", "resprate"),
    "blood_glucose": MetricFhir("blood_glucose", (Code("15074-8", "Glucose [Moles/volume] in "
                                                          "Blood"),), "mmol/L", "laboratory",
                                None),
}


@dataclass(frozen=True)
class Panel:
    """An Observation whose metrics are components rather than its value."""

    loinc: Code
    mdc: Code
    display: str
    components: tuple[str, ...]  # metric codes, in the order the components are written


PANELS: Mapping[str, Panel] = {
    "blood_pressure": Panel(Code("85354-9", "Blood pressure panel with all children optional"),
                            Code("150020", "MDC_PRESS_BLD_NONINV"), "Blood pressure",
                            ("systolic_bp", "diastolic_bp")),
}

# IEEE 11073-20601 device specialisations (partition 8) of the kinds that have one.
DEVICE_SPECIALISATION: Mapping[str, Code] = {
    DeviceKind.BP_MONITOR: Code("528391", "MDC_DEV_SPEC_PROFILE_BP"),
    DeviceKind.PULSE_OXIMETER: Code("528388", "MDC_DEV_SPEC_PROFILE_PULS_OXIM"),
    DeviceKind.SCALE: Code("528399", "MDC_DEV_SPEC_PROFILE_SCALE"),
    DeviceKind.THERMOMETER: Code("528392", "MDC_DEV_SPEC_PROFILE_TEMP"),
    DeviceKind.GLUCOMETER: Code("528401", "MDC_DEV_SPEC_PROFILE_GLUCOSE"),
}
_DELAY = {"device": "held by the device (it was offline)",
          "transit": "delayed after it was sent (at the broker or in Telecare's backlog)",
          "unknown": "the device sent no send time, so where it waited is not known"}


class InvalidCursor(InvalidInput):
    code = "invalid_cursor"


def observations_of(metrics: Iterable[str] | None) -> dict[str, str]:
    """Metric -> observation name of what to export: every metric, or those of the
    Observations that `metrics` are part of (asking for systolic_bp gives the whole blood
    pressure, diastolic too)."""
    wanted = None if metrics is None else {METRIC_FHIR[m].observation for m in metrics}
    return {metric: f.observation for metric, f in METRIC_FHIR.items()
            if wanted is None or f.observation in wanted}


# --- who is named ------------------------------------------------------------------------

def sees_identity(caller: Caller) -> bool:
    """Whether the export names the citizen: administrators, nurses (and the local operator)
    work with the citizen by name, and a citizen is themself. A relative's proxy grants kinds
    of data (readings, alerts, devices, care), not identity: their export is pseudonymous."""
    return access.administers(caller) or caller.role in {"nurse", "citizen"}


@dataclass(frozen=True)
class Naming:
    """The ids of one export. Named: public, stable ids (the citizen's id; a device's and an
    observation's ids derived from their natural keys), the same for every caller. Pseudonymous:
    ids keyed by a secret per caller and citizen, so that a file passed on names neither the
    citizen nor the devices and two relatives' files cannot be joined by their ids."""

    citizen_id: UUID
    name: str | None
    key: bytes | None  # None: named

    @classmethod
    def named(cls, citizen_id: UUID, name: str | None) -> Naming:
        return cls(citizen_id, name, None)

    @classmethod
    def pseudonymous(cls, citizen_id: UUID, caller: Caller, secret: str) -> Naming:
        message = f"telecare-fhir-pseudonym-v1|{caller.subject}|{citizen_id}".encode()
        return cls(citizen_id, None, hmac.new(secret.encode(), message, hashlib.sha256).digest())

    @property
    def identified(self) -> bool:
        return self.key is None

    def id(self, kind: str, natural_key: str) -> str:
        """A resource id (a UUID, so that fullUrl can be urn:uuid:<id>)."""
        text = f"{kind}|{natural_key}"
        if self.key is None:
            return str(uuid.uuid5(_NAMESPACE, text))
        digest = bytearray(hmac.new(self.key, text.encode(), hashlib.sha256).digest()[:16])
        digest[6] = (digest[6] & 0x0F) | 0x80  # RFC 9562 version 8 (custom)
        digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
        return str(UUID(bytes=bytes(digest)))

    def patient_id(self) -> str:
        return str(self.citizen_id) if self.key is None else self.id("Patient", str(self.citizen_id))


# --- resources ---------------------------------------------------------------------------

def _coding(system: str, code: Code) -> dict[str, str]:
    return {"system": system, "code": code.code, "display": code.display}


def _quantity(value: float, unit: str) -> dict[str, Any]:
    return {"value": value, "unit": unit, "system": UCUM, "code": unit}


def _ref(resource_id: str) -> dict[str, str]:
    return {"reference": f"urn:uuid:{resource_id}"}


def _mdc(metric: str) -> dict[str, str]:
    m = METRICS[metric]
    return {"system": MDC, "code": str(m.mdc), "display": m.mdc_ref}


def _observation_code(metrics: Sequence[str], observation: str) -> dict[str, Any]:
    panel = PANELS.get(observation)
    if panel is not None:
        return {"coding": [_coding(LOINC, panel.loinc), _coding(MDC, panel.mdc)],
                "text": panel.display}
    metric = metrics[0]
    return {"coding": [*(_coding(LOINC, c) for c in METRIC_FHIR[metric].loinc), _mdc(metric)],
            "text": METRICS[metric].display}


def _quality(rows: Sequence[Mapping[str, Any]]) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """meta.tag codings and notes that say honestly what is unusual about the reading: late,
    outside the possible range, or measured by a device whose clock was off."""
    tags: list[dict[str, str]] = []
    notes: list[dict[str, str]] = []
    first = rows[0]
    if first["late"]:
        tags.append({"system": READING_QUALITY, "code": "late", "display": "received late"})
        cause = _DELAY.get(first["delay_cause"] or "unknown", _DELAY["unknown"])
        notes.append({"text": f"Received late ({cause}): issued is when Telecare received it; "
                              "it was evaluated as a late reading, not as a current one."})
    implausible = [r["metric"] for r in rows if r["quality"] == "implausible"]
    if implausible:
        tags.append({"system": READING_QUALITY, "code": "implausible",
                     "display": "outside the possible range"})
        for metric in implausible:
            m = METRICS[metric]
            notes.append({"text": f"{m.display} is outside the range Telecare deems possible "
                                  f"({m.possible_min:g}-{m.possible_max:g} {m.ucum}): a sensor "
                                  "fault, a measuring error or an emergency. Stored as measured."})
    if any(r["clock_suspect"] for r in rows):
        tags.append({"system": READING_QUALITY, "code": "clock-suspect",
                     "display": "device clock suspect"})
        notes.append({"text": "The device's clock was off when it sent this: the measured "
                              "time (effectiveDateTime) may be wrong."})
    return tags, notes


def observation(rows: Sequence[Mapping[str, Any]], naming: Naming) -> dict[str, Any]:
    """One Observation from the rows of one observation key (the readings it is made of)."""
    first = rows[0]
    name = first["observation"]
    by_metric = {r["metric"]: r for r in rows}
    metrics = sorted(by_metric)
    fhir = METRIC_FHIR[metrics[0]]
    key = f"{first['device_id']}|{name}|{first['measured_at'].isoformat()}|{first['seq']}"
    tags, notes = _quality(rows)
    meta: dict[str, Any] = {}
    if fhir.profile is not None:
        meta["profile"] = [VITAL_SIGNS, PROFILE + fhir.profile]
    if tags:
        meta["tag"] = tags
    resource: dict[str, Any] = {
        "resourceType": "Observation",
        "id": naming.id("Observation", key),
        "status": "final",
        "category": [{"coding": [{"system": OBSERVATION_CATEGORY, "code": fhir.category,
                                  "display": _CATEGORY_DISPLAY[fhir.category]}],
                      "text": _CATEGORY_DISPLAY[fhir.category]}],
        "code": _observation_code(metrics, name),
        "subject": _ref(naming.patient_id()),
        "effectiveDateTime": first["measured_at"].isoformat(),
        "issued": first["received_at"].isoformat(),
        "device": _ref(naming.id("Device", first["device_id"])),
    }
    if meta:
        resource["meta"] = meta
    panel = PANELS.get(name)
    if panel is None:
        resource["valueQuantity"] = _quantity(first["value"], fhir.ucum)
    else:
        resource["component"] = [_component(metric, by_metric.get(metric))
                                 for metric in panel.components]
    if notes:
        resource["note"] = notes
    return resource


def _component(metric: str, row: Mapping[str, Any] | None) -> dict[str, Any]:
    fhir = METRIC_FHIR[metric]
    component: dict[str, Any] = {
        "code": {"coding": [*(_coding(LOINC, c) for c in fhir.loinc), _mdc(metric)],
                 "text": METRICS[metric].display}}
    if row is None:  # not stored (or filtered out): said so, as the bp profile asks
        component["dataAbsentReason"] = {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/data-absent-reason",
            "code": "unknown", "display": "Unknown"}]}
    else:
        component["valueQuantity"] = _quantity(row["value"], fhir.ucum)
    return component


def device(device_id: str, kind: str | None, model: str | None, serial: str | None,
           naming: Naming) -> dict[str, Any]:
    """The Device that measured: its kind (and IEEE 11073 specialisation) and model; its
    Telecare id and serial number only in a named export (they lead to the citizen)."""
    resource: dict[str, Any] = {"resourceType": "Device", "id": naming.id("Device", device_id)}
    if naming.identified:
        resource["identifier"] = [{"system": DEVICE_ID, "value": device_id}]
        if serial:
            resource["serialNumber"] = serial
    if model:
        resource["deviceName"] = [{"name": model, "type": "model-name"}]
        resource["modelNumber"] = model
    if kind:
        resource["type"] = {"coding": [{"system": DEVICE_KIND, "code": kind}],
                            "text": kind.replace("_", " ")}
        specialisation = DEVICE_SPECIALISATION.get(kind)
        if specialisation is not None:
            resource["specialization"] = [{"systemType": {"coding": [_coding(MDC, specialisation)]}}]
    return resource


_PSEUDED = {"system": V3_OBSERVATION_VALUE, "code": "PSEUDED", "display": "pseudonymized"}


def patient(naming: Naming) -> dict[str, Any]:
    """The citizen: named by id and name, or by a pseudonym and nothing else."""
    patient_id = naming.patient_id()
    if naming.identified:
        resource: dict[str, Any] = {
            "resourceType": "Patient", "id": patient_id,
            "identifier": [{"system": CITIZEN_ID, "value": str(naming.citizen_id)}]}
        if naming.name:
            resource["name"] = [{"text": naming.name}]
        return resource
    return {"resourceType": "Patient", "id": patient_id, "meta": {"security": [_PSEUDED]},
            "identifier": [{"type": {"coding": [_PSEUDED]}, "system": PSEUDONYM,
                            "value": patient_id}]}


def _entry(resource: dict[str, Any], mode: str) -> dict[str, Any]:
    return {"fullUrl": f"urn:uuid:{resource['id']}", "resource": resource,
            "search": {"mode": mode}}


def key_of(row: Mapping[str, Any]) -> ObservationKey:
    return ObservationKey(row["measured_at"], row["device_id"], row["seq"], row["observation"])


def group(rows: Iterable[Mapping[str, Any]]) -> list[list[Mapping[str, Any]]]:
    """Rows (in the export's order) grouped by observation key."""
    groups: list[list[Mapping[str, Any]]] = []
    for row in rows:
        if groups and key_of(groups[-1][0]) == key_of(row):
            groups[-1].append(row)
        else:
            groups.append([row])
    return groups


def bundle(groups: Sequence[Sequence[Mapping[str, Any]]], naming: Naming, now: datetime,
           self_url: str, next_url: str | None) -> dict[str, Any]:
    """A searchset Bundle: the page's Observations (search mode match), then the Devices that
    measured them and the Patient (mode include), which the Observations refer to by urn:uuid."""
    entries = [_entry(observation(rows, naming), "match") for rows in groups]
    devices: dict[str, Mapping[str, Any]] = {}
    for rows in groups:
        devices.setdefault(rows[0]["device_id"], rows[0])
    for device_id in sorted(devices):
        row = devices[device_id]
        entries.append(_entry(device(device_id, row["device_kind"], row["device_model"],
                                     row["device_serial"], naming), "include"))
    entries.append(_entry(patient(naming), "include"))
    links = [{"relation": "self", "url": self_url}]
    if next_url is not None:
        links.append({"relation": "next", "url": next_url})
    result: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset",
                              "timestamp": now.isoformat(), "link": links, "entry": entries}
    if not naming.identified:
        result["meta"] = {"security": [_PSEUDED]}
    return result


# --- paging ------------------------------------------------------------------------------

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_OBSERVATIONS = sorted({f.observation for f in METRIC_FHIR.values()})
# Every token this pattern allows is a position (one no observation has is still a place to
# continue from), so a well-formed token is never refused. Measured times count microseconds
# from 1970 (no reading is older: pairings start in 1970 or later); 17 digits reach year 5138.
_CURSOR_BODY = (f"(?P<at>[0-9]{{1,17}})~(?P<device>[A-Za-z0-9_-]{{1,64}})~(?P<seq>[0-9]{{1,20}})"
                f"~(?P<observation>{'|'.join(_OBSERVATIONS)})")
_CURSOR = re.compile(_CURSOR_BODY)
CURSOR_PATTERN = "^" + re.sub(r"\(\?P<[a-z]+>", "(", _CURSOR_BODY) + "$"


def cursor(key: ObservationKey) -> str:
    """The page token that continues after `key`: measured time (microseconds since 1970),
    device, sequence number and observation. Not signed: it only says where to continue, within
    what access already allows."""
    micros = (key.measured_at - _EPOCH) // _MICROSECOND
    return f"{micros}~{key.device_id}~{key.seq}~{key.observation}"


def read_cursor(token: str) -> ObservationKey:
    """The key a page token continues after; InvalidCursor for one of another form. A sequence
    number beyond bigint is kept as it is: it compares after every stored one."""
    match = _CURSOR.fullmatch(token)
    if match is None:
        raise InvalidCursor("_cursor is not a page token of this export")
    return ObservationKey(_EPOCH + int(match["at"]) * _MICROSECOND, match["device"],
                          int(match["seq"]), match["observation"])
