from datetime import UTC, datetime

import psycopg

from alerts import service as alerts_service
from simulators.population import build_fleet
from telecare.provision import CARE_TEAMS, provision_fleet


def test_provisioned_citizens_are_in_a_care_team_on_their_condition_s_plan(database: str) -> None:
    fleet = build_fleet(4, seed=11, prefix="prov")
    now = datetime.now(UTC)
    assert provision_fleet(database, fleet, now) == 4
    assert provision_fleet(database, fleet, now) == 0  # a second run adds nothing
    with psycopg.connect(database) as conn:
        teams = {team.name: team.id for team in alerts_service.teams(conn)}
        rows = conn.execute("SELECT c.id, c.conditions, c.care_team_id FROM citizens c "
                            "JOIN device_pairings p ON p.citizen_id = c.id WHERE p.device_id = ANY(%s)",
                            ([citizen.devices[0].id for citizen in fleet],)).fetchall()
        plans = alerts_service.plans_in_force(conn, [row[0] for row in rows], now)
    assert set(CARE_TEAMS) <= teams.keys()
    assert {row[2] for row in rows} == {teams[name] for name in CARE_TEAMS}
    assert {row[0]: [plan.plan for plan in plans[row[0]]] for row in rows} == {
        row[0]: row[1] for row in rows}
