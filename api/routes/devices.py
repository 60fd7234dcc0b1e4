"""Devices, who has them, and their status."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Path

from api import access, audit
from api.deps import CallerDep, DbDep, NowDep
from api.params import DeviceId
from api.problems import responses
from api.schemas import DevicePublic
from devices import repository
from devices.errors import DeviceNotFound

router = APIRouter(tags=["devices"])


@router.get("/devices", response_model=list[DevicePublic], responses=responses())
def list_devices(conn: DbDep, caller: CallerDep, now: NowDep) -> list[DevicePublic]:
    """The devices the caller may see (administrators: every registered device) with their
    current holder and status."""
    within = None if access.administers(caller) else access.visible(caller, "devices", now)
    rows = repository.devices_with_status(conn, within=within)
    audit.searched(conn, caller, "devices", (r["citizen_id"] for r in rows if r["citizen_id"]), now)
    return [DevicePublic(**row) for row in rows]


# A malformed id is 422 like a malformed citizen id, not 404: the client learns that its
# request is wrong, not that a device is missing, and the text never reaches the database.
@router.get("/devices/{device_id}", response_model=DevicePublic, responses=responses(404, 422))
def get_device(device_id: Annotated[DeviceId, Path()], conn: DbDep, caller: CallerDep,
               now: NowDep) -> DevicePublic:
    """One device with its current holder and status."""
    access.device(conn, caller, device_id, now)
    rows = repository.devices_with_status(conn, device_id=device_id)
    if not rows:
        raise DeviceNotFound(f"no device {device_id!r}")
    return DevicePublic(**rows[0])


@router.get("/citizens/{citizen_id}/devices", response_model=list[DevicePublic],
            responses=responses(404, 422))
def citizen_devices(citizen_id: UUID, conn: DbDep, caller: CallerDep,
                    now: NowDep) -> list[DevicePublic]:
    """The devices a citizen has now."""
    access.citizen(conn, caller, citizen_id, "devices", now)
    return [DevicePublic(**row) for row in repository.devices_with_status(conn, citizen_id=citizen_id)]
