"""Fixtures on real servers: the machine's PostgreSQL and Mosquitto, a TimescaleDB server when
one is given, and private PostgreSQL servers that fault tests start, restart and stop
themselves. A missing service fails the run loudly; only the TimescaleDB variants skip outside
CI when no TimescaleDB server is given, with a reason the output shows. Nothing here passes
because a server was absent.

Storage-dependent tests run once per backend: the session fixture `database` is parametrized
by `backend` ("postgres", "timescaledb"), and every fixture built on it (`conn`, `settings`,
`make_device`, `worker`, ...) follows it."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NoReturn

import paho.mqtt.client as paho
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from psycopg import sql
from psycopg.conninfo import make_conninfo

from core.migrations import migrate
from core.settings import Settings
from devices import service
from devices.models import Device
from ingest.worker import IngestWorker
from telecare.embedded import free_port

ADMIN_DSN = os.environ.get("TELECARE_TEST_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
# An admin DSN of a server with timescaledb preloaded (.ci/run starts one on 127.0.0.1:5433).
TIMESCALEDB_DSN = os.environ.get("TELECARE_TEST_TIMESCALEDB_DSN", "")
MQTT_HOST = os.environ.get("TELECARE_TEST_MQTT_HOST", "127.0.0.1")
MQTT_PORT = int(os.environ.get("TELECARE_TEST_MQTT_PORT", "1883"))
PAIRED_SINCE = datetime(2020, 1, 1, tzinfo=UTC)
BACKENDS = ("postgres", "timescaledb")
# CI runs every backend: there a server that is not available fails instead of skipping.
IN_CI = os.environ.get("CI", "").lower() in ("true", "1", "yes")


def unavailable(reason: str) -> NoReturn:
    """Skip outside CI, with `reason` in the output; fail in CI, which must run everything."""
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: every storage backend must run)", pytrace=False)
    pytest.skip(reason)


def _dsn_for(name: str, admin_dsn: str = ADMIN_DSN) -> str:
    return make_conninfo(admin_dsn, dbname=name)


def _admin(admin_dsn: str) -> psycopg.Connection[Any]:
    try:
        return psycopg.connect(admin_dsn, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL is required at {admin_dsn} and is not reachable: {exc}",
                    pytrace=False)


def timescaledb_admin_dsn() -> str:
    """The TimescaleDB server's admin DSN, checked to have timescaledb preloaded."""
    if not TIMESCALEDB_DSN:
        unavailable("TimescaleDB variant not run: set TELECARE_TEST_TIMESCALEDB_DSN to an admin DSN "
                    "of a server with timescaledb preloaded (../shared/timescaledb-pg15/install "
                    "starts one on 127.0.0.1:5433)")
    with _admin(TIMESCALEDB_DSN) as admin:
        row = admin.execute("SHOW shared_preload_libraries").fetchone()
    if row is None or "timescaledb" not in str(row[0]):
        pytest.fail(f"TELECARE_TEST_TIMESCALEDB_DSN={TIMESCALEDB_DSN} is a server without "
                    "timescaledb preloaded", pytrace=False)
    return TIMESCALEDB_DSN


def admin_dsn_of(backend: str) -> str:
    """The admin DSN of the server that holds `backend` databases."""
    return timescaledb_admin_dsn() if backend == "timescaledb" else ADMIN_DSN


@contextmanager
def empty_database(admin_dsn: str) -> Iterator[str]:
    """A new empty database on the server of `admin_dsn`, dropped afterwards; yields its DSN."""
    name = f"telecare_test_{uuid.uuid4().hex[:8]}"
    with _admin(admin_dsn) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield _dsn_for(name, admin_dsn)
    finally:
        with _admin(admin_dsn) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
                          .format(sql.Identifier(name)))


@contextmanager
def migrated_database(backend: str) -> Iterator[str]:
    """A new database of `backend` built by the real migrations; yields its DSN."""
    with empty_database(admin_dsn_of(backend)) as dsn:
        migrate(dsn, storage=backend)
        yield dsn


def only_on(backend: str) -> pytest.MarkDecorator:
    """Run a storage-dependent test on one backend only (its fixtures follow)."""
    return pytest.mark.parametrize("backend", [backend], indirect=True)


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """The storage backend of this run of a storage-dependent test."""
    return str(request.param)


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    """The session's plain-PostgreSQL database (for tests of that backend alone)."""
    with migrated_database("postgres") as dsn:
        yield dsn


@pytest.fixture(scope="session")
def timescaledb_database() -> Iterator[str]:
    """The session's TimescaleDB database (for tests of that backend alone)."""
    with migrated_database("timescaledb") as dsn:
        yield dsn


@pytest.fixture(scope="session")
def database(backend: str, request: pytest.FixtureRequest) -> str:
    """A fresh database for the session on `backend`, built by the real migrations."""
    return str(request.getfixturevalue(f"{backend}_database"))


@pytest.fixture
def fresh_database(backend: str) -> Iterator[str]:
    """A database of its own for one test (when the session's shared one would be disturbed)."""
    with migrated_database(backend) as dsn:
        yield dsn


@pytest.fixture(scope="session")
def broker() -> tuple[str, int]:
    """The machine's Mosquitto; fails the run when it is not there."""
    try:
        with socket.create_connection((MQTT_HOST, MQTT_PORT), timeout=3):
            pass
    except OSError as exc:
        pytest.fail(f"an MQTT broker is required at {MQTT_HOST}:{MQTT_PORT}: {exc}",
                    pytrace=False)
    return MQTT_HOST, MQTT_PORT


@pytest.fixture
def conn(database: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(database, autocommit=True) as connection:
        yield connection


@pytest.fixture
def settings(database: str, broker: tuple[str, int]) -> Settings:
    """Settings isolated per test: own topic root, share group and client id on the broker."""
    tag = uuid.uuid4().hex[:8]
    return Settings(database_url=database, mqtt_host=broker[0], mqtt_port=broker[1],
                    topic_root=f"t{tag}", share_group=f"g{tag}",
                    ingest_client_id=f"ingest-{tag}", session_expiry_s=600,
                    auth_required=False)


def new_device(conn: psycopg.Connection[Any], kind: str = "bp_monitor",
               citizen: uuid.UUID | None = None) -> tuple[str, uuid.UUID]:
    """Register a device paired to a (new) citizen since 2020; returns (device_id, citizen_id)."""
    device_id = f"{kind[:4]}-{uuid.uuid4().hex[:10]}"
    citizen_id = citizen or service.enrol_citizen(conn, "Test Citizen", ["hypertension"])
    service.register_device(conn, Device(id=device_id, kind=kind, model="M",  # type: ignore[arg-type]
                                         serial=f"S-{device_id}"))
    service.pair_device(conn, device_id, citizen_id, PAIRED_SINCE)
    return device_id, citizen_id


@pytest.fixture
def make_device(conn: psycopg.Connection[Any]) -> Callable[..., tuple[str, uuid.UUID]]:
    """Register a device paired to a new citizen since 2020; returns (device_id, citizen_id)."""

    def make(kind: str = "bp_monitor", citizen: uuid.UUID | None = None) -> tuple[str, uuid.UUID]:
        return new_device(conn, kind, citizen)

    return make


@contextmanager
def running_in_thread(run: Callable[[threading.Event], object], what: str,
                      join_s: float) -> Iterator[None]:
    """`run(stop)` in a thread; afterwards stopped (within `join_s`) and checked for errors."""
    stop = threading.Event()
    errors: list[BaseException] = []

    def target() -> None:
        try:
            run(stop)
        except BaseException as exc:
            errors.append(exc)
            raise

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(join_s)
    assert not thread.is_alive(), f"{what} did not stop"
    assert not errors, f"{what} raised: {errors!r}"


@contextmanager
def running_worker(settings: Settings) -> Iterator[IngestWorker]:
    """An ingest worker in a thread, subscribed; afterwards stopped and checked for errors."""
    worker = IngestWorker(settings)
    with running_in_thread(worker.run, "ingest worker", 30):
        assert worker.wait_connected(10), "ingest worker did not connect and subscribe"
        yield worker


@pytest.fixture
def worker(settings: Settings) -> Iterator[IngestWorker]:
    """An ingest worker running in a thread on the real broker and database."""
    with running_worker(settings) as running:
        yield running


class Publisher:
    """A device-side MQTT client that publishes at QoS 1 and collects command messages."""

    def __init__(self, host: str, port: int, root: str, protocol: int = paho.MQTTv5) -> None:
        self.root = root
        self.commands: list[tuple[str, bytes]] = []
        self.client = paho.Client(CallbackAPIVersion.VERSION2, protocol=protocol)
        self.client.on_message = lambda _c, _u, m: self.commands.append((m.topic, m.payload))
        self.client.connect(host, port)
        self.client.loop_start()
        self.client.subscribe(f"{root}/v1/+/commands", qos=1)

    def publish(self, device_id: str, channel: str, payload: bytes | str) -> None:
        info = self.client.publish(f"{self.root}/v1/{device_id}/{channel}", payload, qos=1)
        info.wait_for_publish(10)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def publisher(settings: Settings) -> Iterator[Publisher]:
    assert settings.mqtt_host is not None
    pub = Publisher(settings.mqtt_host, settings.mqtt_port, settings.topic_root)
    time.sleep(0.1)
    yield pub
    pub.close()


def wait_for(predicate: Callable[[], bool], timeout: float = 15.0, what: str = "condition") -> None:
    """Poll until `predicate` holds; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def count(conn: psycopg.Connection[Any], query: str, *params: Any) -> int:
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return int(row[0])


def reading_message(device_id: str, seqs: range | list[int], *, start: datetime | None = None,
                    step: timedelta = timedelta(seconds=1), systolic: float = 130.0) -> str:
    """A blood-pressure readings message, one reading per sequence number, `step` apart."""
    import json

    start = start or datetime.now(UTC) - timedelta(days=2)
    readings = [{"seq": s, "measured_at": (start + s * step).isoformat(),
                 "type": "blood_pressure",
                 "values": {"systolic": systolic, "diastolic": 80, "pulse": 70}} for s in seqs]
    return json.dumps({"v": 1, "device_id": device_id, "readings": readings})


class PrivatePostgres:
    """A PostgreSQL server of the test's own, on a free port in a temporary directory, built
    from the machine's PostgreSQL binaries: a fault test may stop and restart it without
    touching any server that others use."""

    def __init__(self, bindir: Path, preload: str | None) -> None:
        self.bindir = bindir
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="telecare-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        # PostgreSQL refuses to run as root: then the server runs as the postgres user.
        self._as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self._as:
            shutil.chown(self.root, "postgres")
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8",
                  "--no-sync")
        settings = [f"port = {self.port}", "listen_addresses = '127.0.0.1'",
                    f"unix_socket_directories = '{self.root}'"]
        if preload:
            settings += [f"shared_preload_libraries = '{preload}'",
                         "timescaledb.telemetry_level = off"]
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write("\n".join(settings) + "\n")

    @property
    def admin_dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def restart(self, down_for: float = 0.0) -> None:
        """Fast shutdown (clients are disconnected, nothing committed is lost), then start."""
        self.stop("fast")
        time.sleep(down_for)
        self.start()

    def destroy(self) -> None:
        """Stop the server whatever state it is in, and remove its files."""
        if (self.data / "postmaster.pid").exists():
            try:
                self.stop("immediate")
            except subprocess.SubprocessError:
                with suppress(ValueError, OSError):
                    pid = int((self.data / "postmaster.pid").read_text().split()[0])
                    os.kill(pid, 9)
        shutil.rmtree(self.root, ignore_errors=True)

    def _run(self, program: str, *args: str) -> None:
        try:
            subprocess.run([*self._as, str(self.bindir / program), *args], check=True,
                           capture_output=True, timeout=90, cwd=self.root)
        except subprocess.CalledProcessError as exc:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{program} failed: {exc.stderr.decode(errors='replace')}{log}"
                               ) from None


class OwnPostgres:
    """What `own_postgres` yields: the DSN of a migrated database and the server's restart."""

    def __init__(self, server: PrivatePostgres, dsn: str) -> None:
        self.server = server
        self.dsn = dsn
        self.restart = server.restart


def _postgres_bindir() -> Path:
    """The machine's PostgreSQL binaries: TELECARE_TEST_PG_BINDIR, else the newest installed."""
    given = os.environ.get("TELECARE_TEST_PG_BINDIR")
    found = [Path(given)] if given else sorted(
        Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name)
        if p.parent.name.isdigit() else 0)
    for bindir in reversed(found):
        if (bindir / "initdb").exists() and (bindir / "pg_ctl").exists():
            return bindir
    unavailable("no PostgreSQL binaries (initdb, pg_ctl) under /usr/lib/postgresql/*/bin or "
                "TELECARE_TEST_PG_BINDIR: a private server cannot be started")


def _has_timescaledb(bindir: Path) -> bool:
    def config(option: str) -> Path:
        out = subprocess.run([str(bindir / "pg_config"), option], check=True,
                             capture_output=True, text=True)
        return Path(out.stdout.strip())

    return ((config("--pkglibdir") / "timescaledb.so").exists()
            and (config("--sharedir") / "extension" / "timescaledb.control").exists())


@pytest.fixture
def own_postgres(backend: str) -> Iterator[OwnPostgres]:
    """A private PostgreSQL server (TimescaleDB preloaded on that backend) with a database
    built by the real migrations; yields its DSN and `restart()`; always stopped afterwards."""
    bindir = _postgres_bindir()
    if backend == "timescaledb" and not _has_timescaledb(bindir):
        unavailable(f"TimescaleDB is not installed for {bindir.parent}: "
                    "../shared/timescaledb-pg15/install installs it")
    server = PrivatePostgres(bindir, "timescaledb" if backend == "timescaledb" else None)
    try:
        server.start()
        with _admin(server.admin_dsn) as admin:
            admin.execute("CREATE DATABASE telecare")
        dsn = _dsn_for("telecare", server.admin_dsn)
        migrate(dsn, storage=backend)
        yield OwnPostgres(server, dsn)
    finally:
        server.destroy()
