"""Citizen rights over the API (docs/access.md): the archive of everything held about a
citizen, for the citizen and administrators; the erasure plan (a dry run) for administrators.
The erasure itself runs as the database owner: `telecare citizens erase`."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from typing import IO
from uuid import UUID

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from api import access, audit, erasure
from api.citizen_export import write_archive
from api.deps import CallerDep, DbDep, NowDep, require_role
from api.problems import responses
from api.schemas import ErasureReport

router = APIRouter(tags=["citizen rights"])

ZIP = "application/zip"


class ZipResponse(StreamingResponse):
    media_type = ZIP

_SPOOL_BYTES = 8 * 1024 * 1024  # in memory up to this, then on disk
_CHUNK = 64 * 1024


@router.get("/citizens/{citizen_id}/export", response_class=ZipResponse,
            responses={200: {"content": {ZIP: {"schema": {"type": "string", "format": "binary"}}},
                             "description": "a zip archive: README.txt and manifest.json say "
                             "what each file holds, when it was made and how many rows"},
                       **responses(404, 422)})
def export_citizen(citizen_id: UUID, conn: DbDep, caller: CallerDep,
                   now: NowDep) -> ZipResponse:
    """Everything held about the citizen as a zip archive, for the citizen themselves and
    administrators (others: 404). The look-ups in it tell the citizen when, in which role, what
    and why, not who. Recorded as an export."""
    who_looked = access.archive(conn, caller, citizen_id, now)
    spooled = tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES)  # closed by _chunks
    try:
        write_archive(conn, citizen_id, spooled, now, who_looked=who_looked)
    except BaseException:
        spooled.close()
        raise
    spooled.seek(0)
    name = f"telecare-citizen-{citizen_id}-{now:%Y%m%dT%H%M%SZ}.zip"
    return ZipResponse(_chunks(spooled), media_type=ZIP,
                             headers={"Content-Disposition": f'attachment; filename="{name}"'})


def _chunks(spooled: IO[bytes]) -> Iterator[bytes]:
    try:
        while chunk := spooled.read(_CHUNK):
            yield chunk
    finally:
        spooled.close()


@router.get("/citizens/{citizen_id}/erasure", response_model=ErasureReport,
            responses=responses(403, 404, 422))
def erasure_plan(citizen_id: UUID, request: Request, conn: DbDep, caller: CallerDep,
                 now: NowDep) -> ErasureReport:
    """What erasing the citizen now would delete, what it would keep (with the reason and the
    date it may go) and what it would stop: a dry run that changes nothing. Administrators
    only; the erasure is `telecare citizens erase`. Recorded as a read of `erasure`."""
    require_role(caller, "administrator")
    report = erasure.plan(conn, citizen_id, request.app.state.retention, now)
    audit.record(conn, caller, "read", "erasure", [citizen_id], now)
    return report
