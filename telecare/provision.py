"""Registers a simulated fleet's citizens and devices, as a municipality's device desk would,
and puts each citizen in a care team on the monitoring plan of their condition."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import UUID

import psycopg

from alerts import service as alerts_service
from devices import repository, service
from devices.models import Device
from simulators.population import CitizenSpec

# Pairings start well before any simulated reading, so the whole replay is attributable.
PAIRED_SINCE = timedelta(days=400)
# The demo municipality's care teams; citizens are shared out between them in turn.
CARE_TEAMS = ("Team North", "Team South")
PROVISIONER = "provision"


def provision_fleet(dsn: str, fleet: list[CitizenSpec], now: datetime | None = None) -> int:
    """Register every citizen not yet registered; returns how many were added."""
    now = now or datetime.now(UTC)
    since = now - PAIRED_SINCE
    added = 0
    with psycopg.connect(dsn, autocommit=True) as conn:
        teams = _care_teams(conn, now)
        for index, citizen in enumerate(fleet):
            if repository.device_kind(conn, citizen.devices[0].id) is not None:
                continue
            with conn.transaction():
                citizen_id = service.enrol_citizen(conn, citizen.display_name,
                                                   [citizen.condition])
                for spec in citizen.devices:
                    service.register_device(conn, Device(id=spec.id, kind=spec.kind,
                                                         model=spec.model, serial=spec.serial))
                    service.pair_device(conn, spec.id, citizen_id, since)
                alerts_service.assign_citizen(conn, citizen_id, teams[index % len(teams)])
                alerts_service.set_plan(conn, citizen_id, citizen.condition, since, PROVISIONER,
                                        now)
            added += 1
    return added


def _care_teams(conn: psycopg.Connection[object], now: datetime) -> list[UUID]:
    """The demo's care teams, created the first time."""
    existing = {team.name: team.id for team in alerts_service.teams(conn)}
    for name in CARE_TEAMS:
        if name not in existing:
            existing[name] = alerts_service.create_team(conn, name, now).id
    return [existing[name] for name in CARE_TEAMS]
