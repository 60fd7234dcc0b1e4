"""Registers a simulated fleet's citizens and devices, as a municipality's device desk would."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg

from devices import repository, service
from devices.models import Device
from simulators.population import CitizenSpec

# Pairings start well before any simulated reading, so the whole replay is attributable.
PAIRED_SINCE = timedelta(days=400)


def provision_fleet(dsn: str, fleet: list[CitizenSpec], now: datetime | None = None) -> int:
    """Register every citizen not yet registered; returns how many were added."""
    since = (now or datetime.now(UTC)) - PAIRED_SINCE
    added = 0
    with psycopg.connect(dsn, autocommit=True) as conn:
        for citizen in fleet:
            if repository.device_kind(conn, citizen.devices[0].id) is not None:
                continue
            with conn.transaction():
                citizen_id = service.enrol_citizen(conn, citizen.display_name,
                                                   [citizen.condition])
                for spec in citizen.devices:
                    service.register_device(conn, Device(id=spec.id, kind=spec.kind,
                                                         model=spec.model, serial=spec.serial))
                    service.pair_device(conn, spec.id, citizen_id, since)
            added += 1
    return added
