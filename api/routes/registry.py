"""Citizens and devices in the registry: who is enrolled, enrolment and discharge, devices
registered, given to a citizen and taken back. Changes are for administrators; every look at a
citizen's record and every change is in the audit log (docs/access.md)."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Path, Query, Response

from api import access, audit, registry
from api.deps import CallerDep, DbDep, NowDep, require_role
from api.params import DeviceId, OptionalTime
from api.problems import responses
from api.schemas import (
    CitizenCreate,
    CitizenDischarge,
    CitizenPublic,
    DeviceCreate,
    DeviceHolderSet,
    DevicePublic,
)
from devices import repository as devices_repo
from devices import service as devices_service
from devices.errors import CitizenNotFound, DeviceNotFound
from devices.models import Device

router = APIRouter(tags=["registry"])


@router.get("/citizens", response_model=list[CitizenPublic], responses=responses(422))
def list_citizens(conn: DbDep, caller: CallerDep, now: NowDep,
                  after: Annotated[UUID | None, Query(description="page on: the last id seen")] = None,
                  limit: Annotated[int, Query(ge=1, le=500)] = 100) -> list[CitizenPublic]:
    """The citizens whose care the caller may see, in id order."""
    within = None if access.administers(caller) else access.visible(caller, "care", now)
    rows = registry.citizens(conn, within=within, after=after, limit=limit)
    audit.searched(conn, caller, "registry", (row["id"] for row in rows), now)
    return [CitizenPublic(**row) for row in rows]


@router.post("/citizens", response_model=CitizenPublic, status_code=201,
             responses=responses(400, 403, 404, 422))
def enrol_citizen(body: CitizenCreate, conn: DbDep, caller: CallerDep, now: NowDep) -> CitizenPublic:
    """Enrol a citizen, in a care team if one is given (404 for an unknown team).
    Administrators only."""
    require_role(caller, "administrator")
    citizen_id = registry.enrol(conn, body.display_name, body.conditions, body.care_team_id)
    audit.record(conn, caller, "change", "registry", [citizen_id], now)
    return CitizenPublic(**registry.citizens(conn, citizen_id=citizen_id)[0])


@router.get("/citizens/{citizen_id}", response_model=CitizenPublic, responses=responses(404, 422))
def get_citizen(citizen_id: UUID, conn: DbDep, caller: CallerDep, now: NowDep) -> CitizenPublic:
    """One citizen's record, for those who may see the citizen's care."""
    access.citizen(conn, caller, citizen_id, "care", now)
    return CitizenPublic(**registry.citizens(conn, citizen_id=citizen_id)[0])


@router.post("/citizens/{citizen_id}/discharge", response_model=CitizenPublic,
             responses=responses(400, 403, 404, 409, 422))
def discharge_citizen(citizen_id: UUID, body: CitizenDischarge, conn: DbDep, caller: CallerDep,
                      now: NowDep) -> CitizenPublic:
    """End the citizen's telecare: their devices are taken back and their plans end (409 when a
    device has data measured after the time, or the citizen is discharged already); the record
    and the data stay. Administrators only."""
    require_role(caller, "administrator")
    _known_citizen(conn, citizen_id)
    registry.discharge(conn, citizen_id, body.at or now)
    audit.record(conn, caller, "change", "registry", [citizen_id], now)
    return CitizenPublic(**registry.citizens(conn, citizen_id=citizen_id)[0])


@router.post("/devices", response_model=DevicePublic, status_code=201,
             responses=responses(400, 403, 409, 422))
def register_device(body: DeviceCreate, conn: DbDep, caller: CallerDep) -> DevicePublic:
    """Add a device to the stock (409 for a known id or serial). Administrators only."""
    require_role(caller, "administrator")
    devices_service.register_device(conn, Device(id=body.id, kind=body.kind, model=body.model,
                                                 serial=body.serial))
    return _device(conn, body.id)


@router.put("/devices/{device_id}/holder", response_model=DevicePublic,
            responses=responses(400, 403, 404, 409, 422))
def give_device(device_id: Annotated[DeviceId, Path()], body: DeviceHolderSet, conn: DbDep,
                caller: CallerDep, now: NowDep) -> DevicePublic:
    """Give the device to a citizen from `valid_from` on, ending its pairing with anyone else
    then; what it sent since then moves to the new holder. Administrators only."""
    require_role(caller, "administrator")
    previous = _holder(conn, device_id)
    devices_service.pair_device(conn, device_id, body.citizen_id, body.valid_from or now,
                                actor=caller.username or caller.role)
    changed = [body.citizen_id] + ([previous] if previous else [])
    audit.record(conn, caller, "change", "devices", changed, now)
    return _device(conn, device_id)


@router.delete("/devices/{device_id}/holder", status_code=204,
               responses=responses(403, 404, 409, 422))
def take_back_device(device_id: Annotated[DeviceId, Path()], conn: DbDep, caller: CallerDep,
                     now: NowDep,
                     at: Annotated[OptionalTime, Query(description="default: now")] = None,
                     ) -> Response:
    """End the device's pairing at `at` (back in stock); 409 when it has data measured since
    then or no pairing open then. Administrators only."""
    require_role(caller, "administrator")
    previous = _holder(conn, device_id)
    devices_service.unpair_device(conn, device_id, at or now)
    if previous is not None:
        audit.record(conn, caller, "change", "devices", [previous], now)
    return Response(status_code=204)


def _known_citizen(conn: DbDep, citizen_id: UUID) -> None:
    if not devices_repo.citizen_exists(conn, citizen_id):
        raise CitizenNotFound(f"no citizen {citizen_id}")


def _holder(conn: DbDep, device_id: str) -> UUID | None:
    rows = devices_repo.devices_with_status(conn, device_id=device_id)
    if not rows:
        raise DeviceNotFound(f"no device {device_id!r}")
    holder: UUID | None = rows[0]["citizen_id"]
    return holder


def _device(conn: DbDep, device_id: str) -> DevicePublic:
    return DevicePublic(**devices_repo.devices_with_status(conn, device_id=device_id)[0])
