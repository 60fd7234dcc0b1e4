"""`telecare demo`: database, broker, ingest, alerts, API and simulated citizens in one command."""

from __future__ import annotations

import contextlib
import logging
import secrets
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import uvicorn

from api.app import create_app
from api.auth import service as auth_service
from core.clock import system_clock
from core.migrations import migrate
from core.settings import Settings
from ingest.worker import IngestWorker
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
    with servers(settings) as live:
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


# Signed-in users see everything until access scoping exists (docs/access.md), so the demo
# makes only these two; the citizen, relative and project-lead accounts come with their scopes.
DEMO_USERS = (("admin", "administrator", "Demo Administrator"), ("nurse", "nurse", "Demo Nurse"))


def demo_users(dsn: str) -> dict[str, str]:
    """The demo's users with a fresh random password each (kept data keeps the users)."""
    passwords = {}
    with psycopg.connect(dsn, autocommit=True) as conn:
        existing = {user.username for user in auth_service.users(conn)}
        for username, role, name in DEMO_USERS:
            password = secrets.token_urlsafe(12)
            if username in existing:
                auth_service.set_password(conn, username, password, system_clock())
            else:
                auth_service.create_user(conn, username, name, role, password, system_clock())
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
        f"  sign in:       curl -d username=nurse -d password={passwords['nurse']} "
        f"{base}/v1/auth/token   (admin: {passwords['admin']}; /docs: Authorize)\n"
        f"  MQTT broker:   {settings.mqtt_host}:{settings.mqtt_port} (MQTT {settings.mqtt_protocol}),"
        f" topics {settings.topic_root}/v1/#\n"
        f"  ground truth:  {DATA_DIR / 'ground_truth.jsonl'} (JSON lines, written as it happens)\n",
        flush=True)
