"""`telecare demo`: database, broker, ingest, alerts, API and simulated citizens in one command."""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import threading
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import uvicorn

from alerts import service as alerts_service
from api import relations
from api.app import create_app
from api.auth import service as auth_service
from core.clock import system_clock
from core.migrations import migrate
from core.settings import Settings
from ingest.worker import IngestWorker
from pilots import service as pilots_service
from simulators.fleet import FleetOptions, run_fleet
from simulators.population import build_fleet
from telecare.alerting import run_alerting
from telecare.embedded import embedded_broker, embedded_postgres
from telecare.maintenance import start_maintenance
from telecare.provision import provision_fleet

log = logging.getLogger(__name__)
DATA_DIR = Path(".telecare")


@contextlib.contextmanager
def servers(settings: Settings, data_dir: Path = DATA_DIR) -> Iterator[Settings]:
    """The configured servers, or embedded ones where none is configured."""
    with contextlib.ExitStack() as stack:
        update: dict[str, object] = {}
        if settings.database_url is None:
            log.info("no TELECARE_DATABASE_URL: starting embedded PostgreSQL in %s", data_dir)
            update["database_url"] = stack.enter_context(embedded_postgres(data_dir))
        if settings.mqtt_host is None:
            log.info("no TELECARE_MQTT_HOST: starting an embedded MQTT broker")
            port, protocol = stack.enter_context(embedded_broker(data_dir / "mqtt",
                                                                   settings.embedded_broker))
            update.update(mqtt_host="127.0.0.1", mqtt_port=port, mqtt_protocol=protocol)
            if protocol == "3.1.1":
                update["share_group"] = ""  # amqtt: no shared subscriptions, one worker
        yield Settings(**{**settings.model_dump(), **update})


def _thread(name: str, target: Callable[[], object]) -> threading.Thread:
    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    return thread


def run_demo(settings: Settings, *, citizens: int, speed: float, seed: int,
             stop: threading.Event) -> int:
    """Run everything until `stop` is set (Ctrl-C), then shut down in reverse order."""
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    with servers(_demo_settings(settings)) as live:
        dsn = live.database_dsn()
        migrate(dsn, storage=live.storage)
        provision_fleet(dsn, build_fleet(citizens, seed))
        worker = IngestWorker(live)
        ingest_thread = _thread("ingest", lambda: worker.run(stop))
        start_maintenance(live, stop)
        alerts_thread = _thread("alerts", lambda: run_alerting(live, stop))
        if not worker.wait_connected(30):
            raise RuntimeError("ingest could not connect to the broker")
        api = uvicorn.Server(uvicorn.Config(create_app(live), host=live.api_host,
                                            port=live.api_port, log_level="warning"))
        api_thread = _thread("api", api.run)
        options = FleetOptions(citizens=citizens, seed=seed, speed=speed, backfill_days=2,
                               faults=("duplicates", "offline", "malformed", "low_battery"),
                               ground_truth=str(DATA_DIR / "ground_truth.jsonl"))
        fleet_thread = _thread("fleet", lambda: run_fleet(live, options, stop))
        _print_welcome(live, dsn, demo_users(dsn))
        stop.wait()
        log.info("stopping: fleet, ingest, API, servers")
        fleet_thread.join(90)
        ingest_thread.join(30)
        alerts_thread.join(30)
        api.should_exit = True
        api_thread.join(10)
    return 0


# One of each role (docs/access.md): an administrator, a nurse per care team, the first
# citizen, a relative with a proxy for that citizen's readings and alerts, a project lead.
DEMO_USERS = (("admin", "administrator", "Demo Administrator"),
              ("citizen", "citizen", "Demo Citizen"), ("relative", "relative", "Demo Relative"),
              ("lead", "project_lead", "Demo Project Lead"))
PROXY_KINDS = ["readings", "alerts"]


def demo_users(dsn: str) -> dict[str, str]:
    """The demo's users with a fresh random password each (kept data keeps the users)."""
    now = system_clock()
    with psycopg.connect(dsn, autocommit=True) as conn:
        teams = alerts_service.teams(conn)
        first = conn.execute("SELECT id FROM citizens ORDER BY created_at LIMIT 1").fetchone()
        nurses = [(f"nurse{index + 1}", "nurse", f"Nurse of {team.name}")
                  for index, team in enumerate(teams)]
        passwords = _with_passwords(conn, (*DEMO_USERS, *nurses), now)
        for (username, _, _), team in zip(nurses, teams, strict=True):
            relations.add_member(conn, username, team.id, now)
        if first is not None and not relations.proxies_of(conn, first[0]):
            relations.link_citizen(conn, "citizen", first[0])
            relations.grant_proxy(conn, first[0], "relative", PROXY_KINDS,
                                  now - timedelta(days=7), None, "demo", now)
            _demo_pilot(conn, now)
    return passwords


def _demo_pilot(conn: psycopg.Connection[Any], now: datetime) -> None:
    """A pilot of every citizen, led by the project lead, from a week ago (the fleet's backfill
    starts two days ago): what a project lead sees."""
    start = now - timedelta(days=7)
    pilot = pilots_service.create_pilot(conn, "Demo pilot", "every simulated citizen", start,
                                        None, "demo", now)
    pilots_service.add_lead(conn, pilot.id, "lead", "demo", now)
    for (citizen,) in conn.execute("SELECT id FROM citizens ORDER BY id").fetchall():
        pilots_service.enrol(conn, pilot.id, citizen, start, None, "demo", now)


def _demo_settings(settings: Settings) -> Settings:
    """The demo on one's own machine: a call without a token is the local operator unless
    TELECARE_AUTH_REQUIRED says otherwise, and a pseudonym key of its own."""
    if "TELECARE_AUTH_REQUIRED" not in os.environ:
        settings = settings.model_copy(update={"auth_required": False})
    return _with_pseudonym_key(settings)


def _with_pseudonym_key(settings: Settings) -> Settings:
    """The demo's pseudonym key: the configured one, else one kept in the demo's data directory
    (so pseudonyms stay the same from one demo run to the next), never in the database."""
    if settings.pseudonym_key is not None or settings.pseudonym_key_file is not None:
        return settings
    path = DATA_DIR / "pseudonym.key"
    if not path.exists():
        DATA_DIR.mkdir(exist_ok=True)
        path.write_text(secrets.token_urlsafe(48))
        path.chmod(0o600)
    return settings.model_copy(update={"pseudonym_key_file": str(path)})


def _with_passwords(conn: psycopg.Connection[Any], users: Iterable[tuple[str, str, str]],
                    now: datetime) -> dict[str, str]:
    existing = {user.username for user in auth_service.users(conn)}
    passwords = {}
    for username, role, name in users:
        password = secrets.token_urlsafe(12)
        if username in existing:
            auth_service.set_password(conn, username, password, now)
        else:
            auth_service.create_user(conn, username, name, role, password, now)
        passwords[username] = password
    return passwords


def _print_welcome(settings: Settings, dsn: str, passwords: dict[str, str]) -> None:
    base = f"http://{settings.api_host}:{settings.api_port}"
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT id, display_name FROM citizens ORDER BY created_at LIMIT 1"
                           ).fetchone()
        team = conn.execute("SELECT id, name FROM care_teams ORDER BY name LIMIT 1").fetchone()
    example = (f"  curl '{base}/v1/citizens/{row[0]}/readings?metric=spo2&bucket=6h'   "
               f"# {row[1]}\n" if row else "")
    alerts = (f"  alert queue:   curl '{base}/v1/teams/{team[0]}/alerts'   # {team[1]}\n"
              f"  alert stream:  curl -N '{base}/v1/teams/{team[0]}/alerts/stream'\n"
              if team else "")
    print(
        "\nTelecare demo is running (Ctrl-C stops everything).\n"
        f"  API docs:      {base}/docs\n"
        f"  readiness:     {base}/ready\n"
        f"  devices:       {base}/v1/devices\n"
        f"  dead letters:  {base}/v1/dead-letters\n"
        f"{example}{alerts}"
        f"  sign in:       curl -d username=nurse1 -d password={passwords.get('nurse1')} "
        f"{base}/v1/auth/token   (/docs: Authorize)"
        f"{'' if settings.auth_required else '; without a token you are the local operator'}\n"
        f"  users:         {'  '.join(f'{u}/{p}' for u, p in passwords.items())}\n"
        f"  as each user:  {base}/v1/citizens (whom they see), {base}/v1/pilots (the lead's "
        "pseudonymised aggregates), /v1/citizens/{id}/audit (the citizen's look-ups)\n"
        f"  MQTT broker:   {settings.mqtt_host}:{settings.mqtt_port} (MQTT {settings.mqtt_protocol}),"
        f" topics {settings.topic_root}/v1/#\n"
        f"  ground truth:  {DATA_DIR / 'ground_truth.jsonl'} (JSON lines, written as it happens)\n",
        flush=True)
