"""Devices on the real broker with the configuration `telecare broker config` writes from the
registry (real PostgreSQL, a Mosquitto of the test's own on free ports, certificates from
`telecare broker certs`, the real ingest worker logged in as `ingest`).

What Mosquitto 2.0.11 really answers, as these tests assert it (the password file for logins,
the dynamic-security plugin for everything an account may do):
- CONNECT with a wrong, revoked or unknown secret: CONNACK 0x87 "Not authorized";
- PUBLISH outside the account's role: PUBACK 0x87 and the message goes nowhere;
- SUBSCRIBE to anything but the device's own commands (`#`, `<root>/#`, every device's
  commands, another device's, `$SYS/#`, the control topic): SUBACK 0x87, refused. (The
  acl_file of 2.0.11 granted every one of them, `topic deny` or not, and only filtered the
  deliveries; with both configured it still grants them, so there is no acl_file.)
- a change at run time: the plugin's clients and roles over its control topic (a revoked
  device's client deleted, which disconnects it), then SIGHUP for the password file: connected
  clients whose credentials stay are still connected, with their subscriptions; one whose
  secret was revoked or rotated is disconnected."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from pydantic import SecretStr

from core.settings import Settings
from devices import credentials
from telecare import broker as broker_config
from telecare.cli import main as telecare
from telecare.embedded import free_port
from tests.conftest import count, new_device, reading_message, running_worker, wait_for
from tests.deploy import mosquitto_conf

WAIT_S = 10.0
SUCCESS, GRANTED_QOS_1, NO_MATCHING_SUBSCRIBERS, NOT_AUTHORIZED = 0, 1, 0x10, 0x87
INGEST_SECRET, ALERTS_SECRET = "ingest-secret-for-tests", "alerts-secret-for-tests"
ADMIN_SECRET = "broker-admin-secret-for-tests"
ROOT = "telecare"


def mosquitto() -> str:
    found = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/bin")
    if found is None:
        pytest.skip("the mosquitto binary (Mosquitto 2.0) is not installed: the broker ACL "
                    "tests need a real broker")
    return found


def listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class Broker:
    """Mosquitto started with the generated mosquitto.conf, passwd and acl in `out`."""

    def __init__(self, out: Path, env: dict[str, str]) -> None:
        self.out, self.env = out, env
        self.tls_port, self.plain_port = free_port(), free_port()
        self.ca = out / "certs" / "ca.crt"
        self.log = out / "mosquitto.log"
        self.process: subprocess.Popen[bytes] | None = None

    def configure(self, *extra: str) -> None:
        """`telecare broker config OUT_DIR …` with the test's database and service secrets."""
        args = ["broker", "config", str(self.out), "--tls-port", str(self.tls_port),
                "--plain-port", str(self.plain_port), *extra]
        if os.geteuid() == 0:
            # As root Mosquitto drops to the `mosquitto` user, which cannot read a test's files.
            args += ["--run-as", "root"]
        run_telecare(self.env, args)

    def apply(self) -> None:
        """Write the files again from the registry and wait until the broker has reloaded them."""
        reloads = self.reloads()
        self.configure("--pid-file", str(self.out / "mosquitto.pid"))
        wait_for(lambda: self.reloads() == reloads + 1, what="the broker's reload")

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen([mosquitto(), "-c", str(self.out / "mosquitto.conf")],
                                            stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + WAIT_S
        while not (listening(self.tls_port) and listening(self.plain_port)
                   and (self.out / "mosquitto.pid").exists()):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"Mosquitto did not start with the generated configuration:\n"
                            f"{self.log.read_text()}", pytrace=False)
            time.sleep(0.05)  # polls a server starting up

    def reloads(self) -> int:
        return self.log.read_text().count("Reloading config.")

    def kicked(self, client_id: str) -> bool:
        """Whether the plugin disconnected `client_id` (deleteClient over the control topic)."""
        return f"Client {client_id} been disconnected by administrative action." in (
            self.log.read_text())

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(WAIT_S)


def run_telecare(env: dict[str, str], args: list[str]) -> None:
    """The `telecare` command in this process, with `env` as its TELECARE_* environment."""
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    try:
        assert telecare(args) == 0, args
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


class Device:
    """A paho client over TLS with the device's credentials, recording the broker's answers."""

    def __init__(self, broker: Broker, username: str, secret: str, *, client_id: str | None = None,
                 tls: bool = True) -> None:
        self.messages: list[paho.MQTTMessage] = []
        self.acks: dict[int, ReasonCode] = {}
        self.subacks: dict[int, list[ReasonCode]] = {}
        self.connack: ReasonCode | None = None
        self.disconnected = threading.Event()
        self._changed = threading.Condition()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id or username,
                                  protocol=paho.MQTTv5)
        self.client.username_pw_set(username, secret)
        self.client.reconnect_delay_set(min_delay=60, max_delay=60)  # no reconnect behind our back
        self.client.on_connect = lambda _c, _u, _f, reason, _p: self._record("connack", reason)
        self.client.on_disconnect = lambda *_: (self.disconnected.set(), self._record(None, None))
        self.client.on_message = lambda _c, _u, m: self._record("message", m)
        self.client.on_publish = lambda _c, _u, mid, reason, _p: self._record("ack", (mid, reason))
        self.client.on_subscribe = lambda _c, _u, mid, reasons, _p: self._record(
            "suback", (mid, reasons))
        if tls:
            self.client.tls_set(ca_certs=str(broker.ca))
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = 600
        self.client.connect("127.0.0.1", broker.tls_port if tls else broker.plain_port,
                            keepalive=30, clean_start=True, properties=props)
        self.client.loop_start()

    def _record(self, what: str | None, value: Any) -> None:
        with self._changed:
            if what == "connack":
                self.connack = value
            elif what == "message":
                self.messages.append(value)
            elif what == "ack":
                self.acks[value[0]] = value[1]
            elif what == "suback":
                self.subacks[value[0]] = value[1]
            self._changed.notify_all()

    def wait_until(self, condition: Callable[[], bool], what: str) -> None:
        with self._changed:
            assert self._changed.wait_for(condition, WAIT_S), f"timed out waiting for {what}"

    def connack_code(self) -> int:
        self.wait_until(lambda: self.connack is not None, "CONNACK")
        assert self.connack is not None
        return int(self.connack.value)

    def connected(self) -> None:
        assert self.connack_code() == SUCCESS, self.connack

    def subscribe(self, topic: str) -> int:
        self.connected()
        _, mid = self.client.subscribe(topic, qos=1)
        self.wait_until(lambda: mid in self.subacks, f"SUBACK for {topic}")
        return int(self.subacks[mid][0].value)

    def publish(self, topic: str, payload: bytes | str, *, retain: bool = False) -> int:
        """Publish at QoS 1 and return the PUBACK's reason code."""
        self.connected()
        mid = self.client.publish(topic, payload, qos=1, retain=retain).mid
        self.wait_until(lambda: mid in self.acks, f"PUBACK of {topic}")
        code = int(self.acks[mid].value)
        # 0x10 "No matching subscribers" is a success too: the broker took the message.
        return SUCCESS if code == NO_MATCHING_SUBSCRIBERS else code

    def received(self, condition: Callable[[list[paho.MQTTMessage]], bool], what: str
                 ) -> list[paho.MQTTMessage]:
        self.wait_until(lambda: condition(self.messages), what)
        return list(self.messages)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def topic(device_id: str, channel: str) -> str:
    return f"{ROOT}/v1/{device_id}/{channel}"


@pytest.fixture
def conn(postgres_database: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(postgres_database, autocommit=True) as connection:
        yield connection


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("certs")
    assert telecare(["broker", "certs", str(out)]) == 0
    return out


@pytest.fixture
def env(postgres_database: str) -> dict[str, str]:
    return {"TELECARE_DATABASE_URL": postgres_database, "TELECARE_MQTT_PASSWORD": INGEST_SECRET,
            "TELECARE_MQTT_ALERTS_PASSWORD": ALERTS_SECRET,
            "TELECARE_MQTT_ADMIN_PASSWORD": ADMIN_SECRET, "TELECARE_TOPIC_ROOT": ROOT,
            "TELECARE_SHARE_GROUP": "ingest"}


@pytest.fixture
def broker(tmp_path: Path, certs: Path, env: dict[str, str]) -> Iterator[Broker]:
    out = tmp_path / "broker"
    out.mkdir()
    shutil.copytree(certs, out / "certs")
    running = Broker(out, env)
    # Where `telecare broker config` finds the running broker's control topic.
    running.env = {**env, "TELECARE_MQTT_HOST": "127.0.0.1",
                   "TELECARE_MQTT_PORT": str(running.plain_port)}
    running.configure()  # nothing listens yet: the broker reads the file when it starts
    running.start()
    yield running
    running.stop()


@pytest.fixture
def clients() -> Iterator[Callable[..., Device]]:
    made: list[Device] = []

    def make(*args: Any, **kwargs: Any) -> Device:
        made.append(Device(*args, **kwargs))
        return made[-1]

    yield make
    for client in made:
        client.close()


def with_credentials(conn: psycopg.Connection[Any], count_: int) -> list[tuple[str, str]]:
    """`count_` registered, paired devices with credentials: (device_id, secret)."""
    made = []
    for _ in range(count_):
        device_id, _citizen = new_device(conn)
        made.append((device_id, credentials.issue(conn, device_id, "test", datetime.now(UTC)).secret))
    return made


def ingest_settings(database: str, broker: Broker) -> Settings:
    tag = uuid.uuid4().hex[:8]
    return Settings(database_url=database, mqtt_host="127.0.0.1", mqtt_port=broker.plain_port,
                    mqtt_username="ingest", mqtt_password=SecretStr(INGEST_SECRET),
                    topic_root=ROOT, share_group="ingest", ingest_client_id=f"ingest-{tag}",
                    session_expiry_s=600)


def readings_of(conn: psycopg.Connection[Any], device_id: str) -> int:
    return count(conn, "SELECT count(*) FROM readings WHERE device_id = %s", device_id)


def test_a_device_publishes_its_own_readings_they_are_stored_and_it_gets_its_ack(
        conn: psycopg.Connection[Any], postgres_database: str, broker: Broker,
        clients: Callable[..., Device]) -> None:
    (device_id, secret), = with_credentials(conn, 1)
    broker.apply()
    with running_worker(ingest_settings(postgres_database, broker)):
        device = clients(broker, device_id, secret)
        assert device.subscribe(topic(device_id, "commands")) == GRANTED_QOS_1
        assert device.publish(topic(device_id, "readings"),
                              reading_message(device_id, [1, 2])) == SUCCESS
        wait_for(lambda: readings_of(conn, device_id) == 2 * 3, what="the readings stored")
        acks = device.received(bool, "the application ack")
        assert json.loads(acks[0].payload)["stored"] == [1, 2]
        # The payload names another device on the device's own topic: the broker lets it
        # through, ingest refuses it (topic id = payload id).
        assert device.publish(topic(device_id, "readings"),
                              reading_message("someone-else", [3])) == SUCCESS
        wait_for(lambda: count(conn, "SELECT count(*) FROM dead_letters WHERE topic = %s AND "
                               "reason = 'device_mismatch'", topic(device_id, "readings")) == 1,
                 what="the device_mismatch dead letter")
        assert readings_of(conn, device_id) == 2 * 3


def test_publishing_under_another_devices_id_is_refused_and_nothing_is_stored(
        conn: psycopg.Connection[Any], postgres_database: str, broker: Broker,
        clients: Callable[..., Device]) -> None:
    (a, secret_a), (b, secret_b) = with_credentials(conn, 2)
    broker.apply()
    with running_worker(ingest_settings(postgres_database, broker)):
        forged = {channel: reading_message(b, [7]) if channel == "readings" else json.dumps(
            {"v": 1, "device_id": b, "online": True}) for channel in ("readings", "events", "status")}
        attempts = [(topic(b, channel), payload) for channel, payload in forged.items()] + [
            # Not another device's commands, nor anything outside its own three topics.
            (name, "{}") for name in (topic(b, "commands"), topic(a, "commands"),
                                      f"{ROOT}/v1/{a}/readings/x", f"{ROOT}/v2/{a}/readings",
                                      "elsewhere", "$CONTROL/dynamic-security/v1")]
        for name, payload in attempts:
            # Over TLS, 2.0.11 answers PUBACK 0x87 and then drops the connection ("Bad socket
            # read/write"): one connection per attempt.
            forger = clients(broker, a, secret_a)
            assert forger.publish(name, payload) == NOT_AUTHORIZED, name
        # B's own reading is stored after whatever the broker had taken from A: nothing of A's.
        owner = clients(broker, b, secret_b)
        assert owner.publish(topic(b, "readings"), reading_message(b, [1])) == SUCCESS
        wait_for(lambda: readings_of(conn, b) == 3, what="B's own reading stored")
        time.sleep(0.3)  # a forged message that got through would be stored by now too
        assert readings_of(conn, b) == 3
        assert count(conn, "SELECT count(*) FROM dead_letters WHERE topic LIKE %s",
                     f"{ROOT}/v1/{b}/%") == 0


def test_a_device_cannot_take_over_another_devices_client_id(
        conn: psycopg.Connection[Any], broker: Broker, clients: Callable[..., Device]) -> None:
    (a, secret_a), (b, secret_b) = with_credentials(conn, 2)
    broker.apply()
    victim = clients(broker, a, secret_a)
    assert victim.subscribe(topic(a, "commands")) == GRANTED_QOS_1
    # b's own secret under a's client id: refused, so the broker does not hand a's session over.
    assert clients(broker, b, secret_b, client_id=a).connack_code() == NOT_AUTHORIZED
    assert clients(broker, b, secret_b, client_id=f"{b}-other").connack_code() == NOT_AUTHORIZED
    assert not victim.disconnected.wait(0.5) and not broker.kicked(a)
    assert clients(broker, b, secret_b).connack_code() == SUCCESS


def test_subscribing_to_everything_or_to_another_devices_commands_is_refused(
        conn: psycopg.Connection[Any], broker: Broker, clients: Callable[..., Device]) -> None:
    (a, secret_a), (b, secret_b) = with_credentials(conn, 2)
    broker.apply()
    other = clients(broker, b, secret_b)
    assert other.publish(topic(b, "status"), json.dumps({"v": 1, "device_id": b, "online": True}),
                         retain=True) == SUCCESS
    spy = clients(broker, a, secret_a)
    for name in ("#", f"{ROOT}/#", f"{ROOT}/v1/+/commands", topic(b, "commands"), "$SYS/#",
                 f"{ROOT}/v1/{a}/#", f"{ROOT}/v1/{a}/+", topic(b, "status"),
                 "$CONTROL/dynamic-security/v1/response", f"$share/ingest/{ROOT}/#"):
        assert spy.subscribe(name) >= 0x80, name
    assert spy.subscribe(topic(a, "commands")) == GRANTED_QOS_1
    # The refusals cost the device nothing: it stays connected and gets its own commands only.
    worker = clients(broker, "ingest", INGEST_SECRET, client_id=f"w-{uuid.uuid4().hex[:6]}",
                     tls=False)
    assert other.publish(topic(b, "readings"), reading_message(b, [1])) == SUCCESS
    assert other.publish(topic(b, "events"), b"{}") == SUCCESS
    assert worker.publish(topic(b, "commands"), b'{"for": "B"}') == SUCCESS
    # The last: once it arrives, whatever the broker routed before it has arrived too.
    assert worker.publish(topic(a, "commands"), b'{"for": "A"}') == SUCCESS
    received = spy.received(lambda m: any(x.payload == b'{"for": "A"}' for x in m), "A's command")
    assert [(m.topic, m.payload) for m in received] == [(topic(a, "commands"), b'{"for": "A"}')]
    assert not spy.disconnected.is_set()
    # B gets its own command (the broker is not simply shut).
    other_commands = clients(broker, b, secret_b)
    assert other_commands.subscribe(topic(b, "commands")) == GRANTED_QOS_1
    assert worker.publish(topic(b, "commands"), b'{"again": "B"}') == SUCCESS
    assert [m.payload for m in other_commands.received(bool, "B's command")] == [b'{"again": "B"}']


def test_wrong_unknown_and_revoked_credentials_are_refused_and_a_reload_keeps_the_others(
        conn: psycopg.Connection[Any], broker: Broker, clients: Callable[..., Device]) -> None:
    (a, secret_a), (c, secret_c) = with_credentials(conn, 2)
    broker.apply()
    unregistered, _ = new_device(conn)  # registered, but never given credentials
    assert clients(broker, a, secret_a + "x").connack_code() == NOT_AUTHORIZED
    assert clients(broker, a, secret_c).connack_code() == NOT_AUTHORIZED
    assert clients(broker, unregistered, secret_a).connack_code() == NOT_AUTHORIZED
    assert clients(broker, "ingest", "wrong", client_id="w-x", tls=False
                   ).connack_code() == NOT_AUTHORIZED

    staying = clients(broker, a, secret_a)
    assert staying.subscribe(topic(a, "commands")) == GRANTED_QOS_1
    revoked = clients(broker, c, secret_c)
    revoked.connected()
    reloads = broker.reloads()
    run_telecare(broker.env, ["devices", "credentials", "revoke", c, "--broker-config",
                              str(broker.out), "--pid-file", str(broker.out / "mosquitto.pid")])
    wait_for(lambda: broker.reloads() == reloads + 1, what="the broker's reload")
    # Its client deleted over the control topic (before the reload), its password line gone.
    assert revoked.disconnected.wait(WAIT_S), "a revoked device stayed connected"
    assert broker.kicked(c)
    assert clients(broker, c, secret_c, client_id=f"{c}-again").connack_code() == NOT_AUTHORIZED
    # A new device: admitted with its own topics, and the others stay connected.
    (d, secret_d), = with_credentials(conn, 1)
    broker.apply()
    newcomer = clients(broker, d, secret_d)
    assert newcomer.subscribe(topic(d, "commands")) == GRANTED_QOS_1
    assert newcomer.subscribe(topic(a, "commands")) == NOT_AUTHORIZED
    # The device whose credentials stay keeps its connection and its subscription.
    assert not staying.disconnected.is_set()
    assert not broker.kicked(a)
    worker = clients(broker, "ingest", INGEST_SECRET, client_id=f"w-{uuid.uuid4().hex[:6]}",
                     tls=False)
    assert worker.publish(topic(a, "commands"), b"still here") == SUCCESS
    assert [m.payload for m in staying.received(bool, "a command after the reload")] == [b"still here"]
    assert staying.publish(topic(a, "readings"), b"{}") == SUCCESS
    assert staying.subscribe("#") == NOT_AUTHORIZED
    assert not staying.disconnected.is_set()


def test_deleting_a_revoked_devices_client_cuts_it_off_before_any_reload(
        conn: psycopg.Connection[Any], broker: Broker, clients: Callable[..., Device]) -> None:
    (a, secret_a), (c, secret_c) = with_credentials(conn, 2)
    broker.apply()
    staying, revoked = clients(broker, a, secret_a), clients(broker, c, secret_c)
    assert revoked.subscribe(topic(c, "commands")) == GRANTED_QOS_1
    staying.connected()
    credentials.revoke(conn, c, "test", datetime.now(UTC) + timedelta(seconds=1))
    reloads = broker.reloads()
    broker.configure()  # no --pid-file: the control topic only, no SIGHUP
    assert revoked.disconnected.wait(WAIT_S), "a revoked device stayed connected"
    assert broker.kicked(c) and broker.reloads() == reloads
    # Until the reload the broker still knows its old secret: it may log in, and do nothing.
    again = clients(broker, c, secret_c, client_id=f"{c}-again")
    assert again.subscribe(topic(c, "commands")) == NOT_AUTHORIZED
    assert again.publish(topic(c, "readings"), reading_message(c, [1])) == NOT_AUTHORIZED
    broker.apply()
    assert clients(broker, c, secret_c, client_id=f"{c}-later").connack_code() == NOT_AUTHORIZED
    assert not staying.disconnected.is_set()


def test_rotation_refuses_the_old_secret_and_admits_the_new_one(
        conn: psycopg.Connection[Any], broker: Broker, clients: Callable[..., Device]) -> None:
    (a, old), = with_credentials(conn, 1)
    broker.apply()
    connected_with_old = clients(broker, a, old)
    connected_with_old.connected()
    rotated = credentials.rotate(conn, a, "test", datetime.now(UTC) + timedelta(seconds=1))
    reloads = broker.reloads()
    broker.configure("--pid-file", str(broker.out / "mosquitto.pid"))
    wait_for(lambda: broker.reloads() == reloads + 1, what="the broker's reload")
    assert connected_with_old.disconnected.wait(WAIT_S), "the old secret stayed connected"
    assert clients(broker, a, old).connack_code() == NOT_AUTHORIZED
    fresh = clients(broker, a, rotated.secret)
    assert fresh.subscribe(topic(a, "commands")) == GRANTED_QOS_1
    # Rotation changes the password file only: the device's client and role stay.
    assert not broker.kicked(a)


def test_the_watcher_brings_a_running_broker_up_to_date(
        conn: psycopg.Connection[Any], postgres_database: str, broker: Broker,
        clients: Callable[..., Device]) -> None:
    (a, secret_a), = with_credentials(conn, 1)
    stop = threading.Event()
    settings = Settings(database_url=postgres_database, mqtt_host="127.0.0.1",
                        mqtt_port=broker.plain_port, mqtt_password=SecretStr(INGEST_SECRET),
                        mqtt_alerts_password=SecretStr(ALERTS_SECRET),
                        mqtt_admin_password=SecretStr(ADMIN_SECRET), topic_root=ROOT,
                        share_group="ingest")
    watcher = threading.Thread(target=broker_config.watch, args=(
        settings, broker.out, 0.2, None, broker.out / "mosquitto.pid", stop))
    watcher.start()
    try:
        wait_for(lambda: broker.reloads() >= 1, what="the watcher's first reload")
        device = clients(broker, a, secret_a)
        assert device.subscribe(topic(a, "commands")) == GRANTED_QOS_1
        (b, secret_b), = with_credentials(conn, 1)
        wait_for(lambda: broker.reloads() >= 2, what="the reload for the new device")
        newcomer = clients(broker, b, secret_b)
        assert newcomer.subscribe(topic(b, "commands")) == GRANTED_QOS_1
        credentials.revoke(conn, b, "test", datetime.now(UTC) + timedelta(seconds=1))
        assert newcomer.disconnected.wait(WAIT_S), "a revoked device stayed connected"
        wait_for(lambda: broker.reloads() >= 3, what="the reload for the revocation")
        assert broker.kicked(b)
        assert clients(broker, b, secret_b, client_id=f"{b}-again").connack_code() == NOT_AUTHORIZED
        assert not device.disconnected.is_set()
    finally:
        stop.set()
        watcher.join(WAIT_S)


def test_the_alert_account_writes_commands_only(
        conn: psycopg.Connection[Any], broker: Broker, clients: Callable[..., Device]) -> None:
    (a, secret_a), = with_credentials(conn, 1)
    broker.apply()
    screen = clients(broker, a, secret_a)
    assert screen.subscribe(topic(a, "commands")) == GRANTED_QOS_1
    engine = clients(broker, "alerts", ALERTS_SECRET, client_id=f"al-{uuid.uuid4().hex[:6]}",
                     tls=False)
    assert engine.publish(topic(a, "commands"), b"seen") == SUCCESS
    assert [m.payload for m in screen.received(bool, "the screen message")] == [b"seen"]
    assert engine.subscribe(f"{ROOT}/#") == NOT_AUTHORIZED
    assert engine.publish(topic(a, "readings"), b"{}") == NOT_AUTHORIZED


def test_the_admin_account_may_use_the_control_topic_only(
        conn: psycopg.Connection[Any], broker: Broker, clients: Callable[..., Device]) -> None:
    (a, _), = with_credentials(conn, 1)
    broker.apply()
    admin = clients(broker, "broker-admin", ADMIN_SECRET, client_id=f"adm-{uuid.uuid4().hex[:6]}",
                    tls=False)
    assert admin.subscribe("$CONTROL/dynamic-security/v1/response") == GRANTED_QOS_1
    for name in ("#", f"{ROOT}/#", topic(a, "commands")):
        assert admin.subscribe(name) == NOT_AUTHORIZED, name
    assert admin.publish(topic(a, "commands"), b"{}") == NOT_AUTHORIZED


def test_the_generated_files_name_each_device_explicitly_and_nothing_else(
        conn: psycopg.Connection[Any], env: dict[str, str], tmp_path: Path) -> None:
    (a, secret_a), (b, _) = with_credentials(conn, 2)
    credentials.revoke(conn, b, "test", datetime.now(UTC) + timedelta(seconds=1))
    run_telecare(env, ["broker", "config", str(tmp_path), "--auth-only"])
    document = json.loads((tmp_path / broker_config.ACL).read_text())
    passwd = broker_config.read_passwd(tmp_path / "passwd")
    assert credentials.verify(secret_a, passwd[a])
    assert b not in passwd
    for account, secret in (("ingest", INGEST_SECRET), ("alerts", ALERTS_SECRET),
                            ("broker-admin", ADMIN_SECRET)):
        assert credentials.verify(secret, passwd[account]), account
    assert oct((tmp_path / "passwd").stat().st_mode & 0o777) == "0o600"
    assert not (tmp_path / "mosquitto.conf").exists()
    assert document["defaultACLAccess"] == {"publishClientSend": False,
                                            "publishClientReceive": False, "subscribe": False,
                                            "unsubscribe": True}
    # No passwords in the plugin: it leaves every login to the password file. A device's
    # client is bound to its own client id; a service's is not (each worker has its own).
    services = {"ingest", "alerts", "broker-admin"}
    assert not [c for c in document["clients"] if c["username"] not in services
                and (set(c) != {"username", "clientid", "roles"} or c["clientid"] != c["username"])]
    assert not [c for c in document["clients"] if c["username"] in services
                and set(c) != {"username", "roles"}]
    clients = {c["username"]: [r["rolename"] for r in c["roles"]] for c in document["clients"]}
    roles = {r["rolename"]: {(acl["acltype"], acl["topic"], acl["allow"]) for acl in r["acls"]}
             for r in document["roles"]}
    assert b not in clients and f"device:{b}" not in roles
    assert clients[a] == [f"device:{a}"]
    assert roles[f"device:{a}"] == {
        ("publishClientSend", f"{ROOT}/v1/{a}/readings", True),
        ("publishClientSend", f"{ROOT}/v1/{a}/events", True),
        ("publishClientSend", f"{ROOT}/v1/{a}/status", True),
        ("subscribeLiteral", f"{ROOT}/v1/{a}/commands", True),
        ("publishClientReceive", f"{ROOT}/v1/{a}/commands", True)}
    wildcards = {(name, acl) for name, acls in roles.items() for acl in acls
                 if "#" in acl[1] or "+" in acl[1]}
    assert wildcards == {
        ("ingest", ("subscribePattern", f"$share/ingest/{ROOT}/#", True)),
        ("ingest", ("subscribePattern", f"{ROOT}/#", True)),
        ("ingest", ("publishClientReceive", f"{ROOT}/#", True)),
        ("ingest", ("publishClientSend", f"{ROOT}/v1/+/commands", True)),
        ("alerts", ("publishClientSend", f"{ROOT}/v1/+/commands", True))}
    assert roles["broker-admin"] == {
        ("publishClientSend", "$CONTROL/dynamic-security/v1", True),
        ("subscribeLiteral", "$CONTROL/dynamic-security/v1/response", True),
        ("publishClientReceive", "$CONTROL/dynamic-security/v1/response", True)}
    # Written again with nothing changed, the files stay as they are (no needless reload).
    before = {(tmp_path / name).read_text() for name in (broker_config.ACL, "passwd")}
    run_telecare(env, ["broker", "config", str(tmp_path), "--auth-only"])
    assert {(tmp_path / name).read_text() for name in (broker_config.ACL, "passwd")} == before
    # Nor when the broker saved the same state in its own layout (it does after each change).
    (tmp_path / broker_config.ACL).write_text(json.dumps(document, indent=None))
    run_telecare(env, ["broker", "config", str(tmp_path), "--auth-only"])
    assert (tmp_path / broker_config.ACL).read_text() == json.dumps(document, indent=None)


def test_the_broker_is_sent_only_what_differs_from_the_registry() -> None:
    desired = broker_config.desired_access(["dev-a", "dev-b"], ["ingest", "broker-admin"],
                                           root=ROOT, share_group="ingest")
    assert broker_config.plan(desired, desired) == []
    actual = broker_config.desired_access(["dev-b", "dev-gone"], ["ingest", "broker-admin"],
                                          root="old", share_group="ingest")
    commands = broker_config.plan(desired, actual)
    names = [(c["command"], c.get("username") or c.get("rolename")) for c in commands]
    # dev-b's five topics move from old/v1/dev-b/... to telecare/v1/dev-b/..., in its role.
    assert names.count(("removeRoleACL", "device:dev-b")) == 5
    assert names.count(("addRoleACL", "device:dev-b")) == 5
    assert ("createRole", "device:dev-a") in names and ("createClient", "dev-a") in names
    assert names.index(("createRole", "device:dev-a")) < names.index(("createClient", "dev-a"))
    assert names[-2:] == [("deleteClient", "dev-gone"), ("deleteRole", "device:dev-gone")]
    assert ("deleteClient", "dev-b") not in names
    created = next(c for c in commands if c["command"] == "createClient")
    assert created["clientid"] == "dev-a"
    # A broker whose clients carry no client id yet (configured before the binding) gets it.
    unbound = broker_config.Access(desired.roles, desired.clients, desired.default)
    assert broker_config.plan(desired, unbound) == [
        {"command": "setClientId", "username": name, "clientid": name}
        for name in ("dev-a", "dev-b")]


def test_no_device_can_take_a_service_accounts_name_or_a_wildcard_in_the_files() -> None:
    for name in ("ingest", "alerts", "broker-admin"):
        with pytest.raises(ValueError, match="service account"):
            broker_config.desired_access([name], ["ingest", "alerts"], root=ROOT,
                                         share_group="ingest")
    with pytest.raises(ValueError, match="not a device id"):
        broker_config.render_passwd([("a/#", "$7$101$AA==$AA==")], [], {})
    with pytest.raises(ValueError, match="not a device id"):
        broker_config.desired_access(["+"], [], root=ROOT, share_group="ingest")


def test_the_generated_mosquitto_conf_has_the_production_options(tmp_path: Path) -> None:
    generated = mosquitto_conf.parse(broker_config.render_conf(
        tmp_path, tls_port=8883, plain_port=1883, bind=None, certs=tmp_path / "certs",
        run_as=None, settings=Settings()))
    production = mosquitto_conf.load()
    paths = {"password_file", "plugin", "plugin_opt_config_file", "persistence_location",
             "pid_file"}
    assert {k: v for k, v in generated.options.items() if k not in paths} == {
        k: v for k, v in production.options.items() if k not in paths}
    for port in (8883, 1883):
        assert (set(generated.listener(port).options) == set(production.listener(port).options))
    assert generated.options["password_file"] == f"{tmp_path.resolve()}/passwd"
    assert generated.options["plugin_opt_config_file"] == (
        f"{tmp_path.resolve()}/dynamic-security.json")
    # An acl_file beside the plugin would grant every subscription the plugin refuses.
    assert "acl_file" not in generated.options and "acl_file" not in production.options
    assert Path(generated.options["plugin"]).name == Path(production.options["plugin"]).name
