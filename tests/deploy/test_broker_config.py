"""The production broker configuration on the real Mosquitto binary: deploy/mosquitto.conf
started with only ports and paths substituted, the dynamic-security plugin's file as `telecare
broker config` writes it (telecare/broker.py) for the devices dev-A and dev-B and the service
accounts, certificates from
scripts/make-certs and a password file made here with mosquitto_passwd (the registry's side of
device credentials is tested in test_broker_acl.py)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from ingest.wire import MAX_PAYLOAD_BYTES
from telecare.broker import ACL, desired_access, dynamic_security_plugin, render_access
from telecare.embedded import free_port
from tests.deploy import mosquitto_conf

REPO = Path(__file__).resolve().parents[2]
MAKE_CERTS = REPO / "scripts" / "make-certs"
PASSWORDS = {"ingest": "ingest-secret", "alerts": "alerts-secret", "dev-A": "dev-a-secret",
             "dev-B": "dev-b-secret"}
WAIT_S = 10.0
SUCCESS, GRANTED_QOS_1, NO_MATCHING_SUBSCRIBERS, NOT_AUTHORIZED = 0, 1, 0x10, 135
READINGS_A, COMMANDS_A = "telecare/v1/dev-A/readings", "telecare/v1/dev-A/commands"
WORKER_SUBSCRIPTION = "$share/ingest/telecare/v1/+/readings"


def binary(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin")
    if found is None:
        pytest.fail(f"{name} (Mosquitto 2.0) is required for the broker configuration tests", pytrace=False)
    return found


def production_config(text: str, *, tls_port: int, plain_port: int, config_dir: Path, data_dir: Path,
                      autosave_interval: int | None = None) -> str:
    """deploy/mosquitto.conf with test ports and paths; each substitution must find its target."""
    substitutions = [
        (r"^listener 8883$", f"listener {tls_port} 127.0.0.1"),
        (r"^listener 1883$", f"listener {plain_port} 127.0.0.1"),
        (r"^persistence_location /mosquitto/data/$", f"persistence_location {data_dir}/"),
        (r" /mosquitto/config/", f" {config_dir}/"),
        (r" /mosquitto/auth/", f" {config_dir}/"),
        # The eclipse-mosquitto image's plugin, for the one this machine's Mosquitto ships.
        (r"^plugin /usr/lib/mosquitto_dynamic_security.so$", f"plugin {dynamic_security_plugin()}"),
    ]
    if autosave_interval is not None:
        substitutions.append((r"^autosave_interval \d+$", f"autosave_interval {autosave_interval}"))
    for pattern, replacement in substitutions:
        text, count = re.subn(pattern, replacement, text, flags=re.MULTILINE)
        assert count, f"deploy/mosquitto.conf no longer has a line matching {pattern}"
    settings = [line for line in text.splitlines() if not line.startswith("#")]
    assert not [line for line in settings if "/mosquitto/" in line], "a production path is left"
    if os.geteuid() == 0:
        # As root Mosquitto drops to the `mosquitto` user, which cannot read a test's files.
        text += "user root\n"
    return text


def listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class Broker:
    """Mosquitto with the production configuration in a directory of its own."""

    def __init__(self, root: Path, certs: Path, passwd: Path, *, autosave_interval: int | None = None):
        self.tls_port, self.plain_port = free_port(), free_port()
        config, data = root / "config", root / "data"
        shutil.copytree(certs, config / "certs")
        shutil.copy(passwd, config / "passwd")
        (config / ACL).write_text(render_access(desired_access(
            ["dev-A", "dev-B"], ["ingest", "alerts"], root="telecare", share_group="ingest")))
        data.mkdir()
        self.ca = config / "certs" / "ca.crt"
        self.database = data / "mosquitto.db"
        self.conf = root / "mosquitto.conf"
        self.conf.write_text(production_config(
            mosquitto_conf.CONF.read_text(), tls_port=self.tls_port, plain_port=self.plain_port,
            config_dir=config, data_dir=data, autosave_interval=autosave_interval))
        self.log = root / "mosquitto.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen([binary("mosquitto"), "-c", str(self.conf)],
                                            stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + WAIT_S
        for port in (self.tls_port, self.plain_port):
            while not listening(port):
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    pytest.fail(f"Mosquitto did not start with deploy/mosquitto.conf:\n"
                                f"{self.log.read_text()}", pytrace=False)
                time.sleep(0.05)  # polls a server starting up

    def kill(self) -> None:
        """kill -9: no shutdown save."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(WAIT_S)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(WAIT_S)


class Mqtt:
    """A paho client on its own network thread, recording what the broker says and sends."""

    def __init__(self, broker: Broker, user: str, *, tls: bool = True, v5: bool = True,
                 client_id: str = "", clean_start: bool = True, manual_ack: bool = False,
                 ca: Path | None = None):
        self.messages: list[paho.MQTTMessage] = []
        self.acks: dict[int, ReasonCode] = {}
        self.subacks: dict[int, list[ReasonCode]] = {}
        self.connack: tuple[ReasonCode, Properties | None] | None = None
        self.disconnected = False
        self.auto_ack = not manual_ack
        self._changed = threading.Condition()
        # A device must connect under its own id (its plugin client is bound to it); a
        # service may choose (the broker assigns one when it is empty).
        own = user if user.startswith("dev-") else ""
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id or own,
                                  protocol=paho.MQTTv5 if v5 else paho.MQTTv311, manual_ack=manual_ack,
                                  clean_session=None if v5 else clean_start)
        self.client.username_pw_set(user, PASSWORDS[user])
        self.client.max_inflight_messages_set(1000)
        # A test sees every disconnect: no reconnect behind its back.
        self.client.reconnect_delay_set(min_delay=60, max_delay=60)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_publish = self._on_publish
        self.client.on_subscribe = self._on_subscribe
        if tls:
            self.client.tls_set(ca_certs=str(ca or broker.ca))
        port = broker.tls_port if tls else broker.plain_port
        kwargs: dict[str, Any] = {}
        if v5:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = 600
            kwargs = {"clean_start": clean_start, "properties": props}
        self.client.connect("127.0.0.1", port, keepalive=30, **kwargs)
        self.client.loop_start()

    def _record(self, change: Callable[[], None]) -> None:
        with self._changed:
            change()
            self._changed.notify_all()

    def _on_connect(self, _c: Any, _u: Any, _f: Any, reason: ReasonCode, props: Properties | None) -> None:
        self._record(lambda: setattr(self, "connack", (reason, props)))

    def _on_disconnect(self, _c: Any, _u: Any, _f: Any, _r: ReasonCode, _p: Any) -> None:
        self._record(lambda: setattr(self, "disconnected", True))

    def _on_message(self, client: paho.Client, _u: Any, message: paho.MQTTMessage) -> None:
        self._record(lambda: self.messages.append(message))
        if self.auto_ack:
            client.ack(message.mid, message.qos)

    def _on_publish(self, _c: Any, _u: Any, mid: int, reason: ReasonCode, _p: Any) -> None:
        self._record(lambda: self.acks.__setitem__(mid, reason))

    def _on_subscribe(self, _c: Any, _u: Any, mid: int, reasons: list[ReasonCode], _p: Any) -> None:
        self._record(lambda: self.subacks.__setitem__(mid, reasons))

    def wait_until(self, condition: Callable[[], bool], what: str) -> None:
        with self._changed:
            assert self._changed.wait_for(condition, WAIT_S), f"timed out waiting for {what}"

    def connected(self) -> Properties | None:
        """Waits for CONNACK; the broker's CONNACK properties (MQTT 5)."""
        self.wait_until(lambda: self.connack is not None or self.disconnected, "CONNACK")
        assert self.connack is not None and self.connack[0].value == SUCCESS, self.connack
        return self.connack[1]

    def subscribe(self, topic: str) -> int:
        """The granted QoS or refusal reason code of one subscription."""
        self.connected()
        _, mid = self.client.subscribe(topic, qos=1)
        self.wait_until(lambda: mid in self.subacks, f"SUBACK for {topic}")
        return self.subacks[mid][0].value

    def publish(self, topic: str, payload: bytes) -> int:
        self.connected()
        return self.client.publish(topic, payload, qos=1).mid

    def puback(self, mid: int) -> int:
        self.wait_until(lambda: mid in self.acks, f"PUBACK {mid}")
        return self.acks[mid].value

    def received(self, count: int) -> list[paho.MQTTMessage]:
        self.wait_until(lambda: len(self.messages) >= count, f"{count} messages")
        return list(self.messages)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A test CA and server certificate made by the script an operator runs."""
    out = tmp_path_factory.mktemp("certs")
    subprocess.run([str(MAKE_CERTS), "--out", str(out)], check=True, capture_output=True)
    return out


@pytest.fixture(scope="module")
def passwd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("passwd") / "passwd"
    path.touch(mode=0o600)
    for user, password in PASSWORDS.items():
        subprocess.run([binary("mosquitto_passwd"), "-b", str(path), user, password], check=True)
    return path


@pytest.fixture
def clients() -> Iterator[Callable[..., Mqtt]]:
    made: list[Mqtt] = []

    def make(*args: Any, **kwargs: Any) -> Mqtt:
        made.append(Mqtt(*args, **kwargs))
        return made[-1]

    yield make
    for client in made:
        client.close()


@pytest.fixture
def broker(tmp_path: Path, certs: Path, passwd: Path) -> Iterator[Broker]:
    running = Broker(tmp_path, certs, passwd)
    running.start()
    yield running
    running.stop()


def test_devices_reach_the_workers_over_tls_and_receive_their_commands(
        broker: Broker, clients: Callable[..., Mqtt]) -> None:
    worker = clients(broker, "ingest", tls=False)
    assert worker.subscribe(WORKER_SUBSCRIPTION) == GRANTED_QOS_1
    device = clients(broker, "dev-A")
    announced = device.connected()
    assert announced is not None
    conf = mosquitto_conf.load().options
    assert announced.MaximumPacketSize == int(conf["max_packet_size"])
    assert announced.ReceiveMaximum == int(conf["max_inflight_messages"])
    assert device.subscribe(COMMANDS_A) == GRANTED_QOS_1

    assert device.puback(device.publish(READINGS_A, b'{"v":1}')) == SUCCESS
    assert [(m.topic, m.payload) for m in worker.received(1)] == [(READINGS_A, b'{"v":1}')]
    worker.publish(COMMANDS_A, b'{"type":"ack"}')
    assert [(m.topic, m.payload) for m in device.received(1)] == [(COMMANDS_A, b'{"type":"ack"}')]


def test_the_tls_listener_refuses_plaintext_and_servers_the_device_does_not_trust(
        broker: Broker, tmp_path: Path) -> None:
    to_tls_port = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    to_tls_port.username_pw_set("dev-A", PASSWORDS["dev-A"])
    assert to_tls_port.connect("127.0.0.1", broker.tls_port) == paho.MQTT_ERR_SUCCESS
    # The broker expects a TLS ClientHello, gets CONNECT, and closes: no CONNACK ever.
    deadline = time.monotonic() + WAIT_S
    while to_tls_port.loop(timeout=0.1) == paho.MQTT_ERR_SUCCESS:
        assert not to_tls_port.is_connected(), "a plaintext client was let in on the TLS port"
        assert time.monotonic() < deadline, "the TLS port kept a plaintext connection open"
    assert not to_tls_port.is_connected()

    other_ca = tmp_path / "other-ca"
    subprocess.run([str(MAKE_CERTS), "--out", str(other_ca)], check=True, capture_output=True)
    with pytest.raises(ssl.SSLCertVerificationError):
        Mqtt(broker, "dev-A", ca=other_ca / "ca.crt")


@pytest.mark.parametrize("v5", [True, False], ids=["mqtt5", "mqtt311"])
def test_a_payload_over_the_protocol_limit_never_reaches_a_worker(
        broker: Broker, clients: Callable[..., Mqtt], v5: bool) -> None:
    worker = clients(broker, "ingest", tls=False)
    assert worker.subscribe(WORKER_SUBSCRIPTION) == GRANTED_QOS_1
    device = clients(broker, "dev-A", v5=v5)

    assert device.puback(device.publish(READINGS_A, b"x" * MAX_PAYLOAD_BYTES)) == SUCCESS
    too_large = device.publish(READINGS_A, b"y" * (MAX_PAYLOAD_BYTES + 1))
    # MQTT 3.1.1 gets a plain PUBACK (the broker completes the QoS flow and drops the message);
    # Mosquitto 2.0.11 answers MQTT 5 with reason code 0x95, which paho takes for a protocol
    # error and disconnects. Either way nothing says "stored".
    device.wait_until(lambda: too_large in device.acks or device.disconnected, "the broker's answer")
    if v5:
        assert too_large not in device.acks or device.acks[too_large].value != SUCCESS

    other = clients(broker, "dev-B")
    other.publish("telecare/v1/dev-B/readings", b"after")
    sizes = [len(m.payload) for m in worker.received(2)]
    assert sizes == [MAX_PAYLOAD_BYTES, len(b"after")]


def test_a_packet_over_max_packet_size_disconnects_its_sender(
        broker: Broker, clients: Callable[..., Mqtt]) -> None:
    worker = clients(broker, "ingest", tls=False)
    assert worker.subscribe(WORKER_SUBSCRIPTION) == GRANTED_QOS_1
    device = clients(broker, "dev-A", v5=False)
    device.publish(READINGS_A, b"z" * (int(mosquitto_conf.load().options["max_packet_size"]) + 1))
    device.wait_until(lambda: device.disconnected, "the broker to disconnect the sender")
    assert not device.acks
    assert "disconnected due to oversize packet" in broker.log.read_text()

    clients(broker, "dev-B").publish("telecare/v1/dev-B/readings", b"after")
    assert [m.payload for m in worker.received(1)] == [b"after"]


def test_devices_are_confined_to_their_own_topics(broker: Broker, clients: Callable[..., Mqtt]) -> None:
    worker = clients(broker, "ingest", tls=False)
    assert worker.subscribe("$share/ingest/telecare/#") == GRANTED_QOS_1
    for topic in ("telecare/v1/dev-B/readings", "telecare/v1/dev-B/status", COMMANDS_A,
                  "telecare/v1/dev-A/readings/extra", "telecare/v2/dev-A/readings"):
        # Mosquitto 2.0.11 closes the connection after a denied PUBLISH: one client per attempt
        # (each under dev-A's own client id, which takes over the one before: so first).
        intruder = clients(broker, "dev-A")
        assert intruder.puback(intruder.publish(topic, b"denied")) == NOT_AUTHORIZED, topic
    device_a, device_b = clients(broker, "dev-A"), clients(broker, "dev-B")
    # The dynamic-security plugin refuses a subscription outside the device's own commands.
    for name in ("telecare/v1/+/commands", "telecare/v1/dev-B/commands", "#", "$SYS/#"):
        assert device_a.subscribe(name) == NOT_AUTHORIZED, name
    assert device_a.subscribe(COMMANDS_A) == GRANTED_QOS_1
    assert device_b.subscribe("telecare/v1/dev-B/commands") == GRANTED_QOS_1
    for channel in ("readings", "events", "status"):
        assert device_a.puback(device_a.publish(f"telecare/v1/dev-A/{channel}", b"own")) == SUCCESS

    worker.publish("telecare/v1/dev-B/commands", b"for B")
    worker.publish(COMMANDS_A, b"for A")
    assert [m.payload for m in device_b.received(1)] == [b"for B"]
    assert [m.payload for m in device_a.received(1)] == [b"for A"]
    # The worker reads its own commands too (it subscribed to telecare/#), and nothing denied.
    received = worker.received(5)
    worker.subscribe("telecare/v1/+/none")  # after this SUBACK, nothing more is on its way
    assert sorted(m.topic for m in worker.messages) == sorted(
        [f"telecare/v1/dev-A/{c}" for c in ("readings", "events", "status", "commands")]
        + ["telecare/v1/dev-B/commands"])
    assert {m.payload for m in received} == {b"own", b"for A", b"for B"}


def test_the_alert_engine_writes_to_home_screens_and_reads_nothing_devices_send(
        broker: Broker, clients: Callable[..., Mqtt]) -> None:
    screen = clients(broker, "dev-A")
    screen.subscribe(COMMANDS_A)
    engine = clients(broker, "alerts", tls=False)
    assert engine.subscribe("telecare/#") == NOT_AUTHORIZED
    assert engine.puback(engine.publish(COMMANDS_A, b"seen")) == SUCCESS
    assert [m.payload for m in screen.received(1)] == [b"seen"]
    for topic in (READINGS_A, "telecare/v1/dev-A/status"):
        # Mosquitto closes the connection after a denied PUBLISH: one client per attempt.
        forger = clients(broker, "alerts", tls=False)
        assert forger.puback(forger.publish(topic, b"forged")) == NOT_AUTHORIZED, topic
    # 0x10 "no matching subscribers": the engine's subscription was refused, nobody else reads.
    assert screen.puback(screen.publish(READINGS_A, b"own")) == NO_MATCHING_SUBSCRIBERS
    engine.subscribe("telecare/v1/+/none")  # after this SUBACK (refused), nothing more is on its way
    assert engine.messages == []


def test_a_311_worker_gets_at_most_max_inflight_unacked_messages_and_the_rest_waits(
        broker: Broker, clients: Callable[..., Mqtt]) -> None:
    inflight = int(mosquitto_conf.load().options["max_inflight_messages"])
    total = 2 * inflight + 500  # more than inflight + the broker's default queue of 1000
    worker = clients(broker, "ingest", tls=False, v5=False, manual_ack=True)
    assert worker.subscribe("telecare/v1/+/readings") == GRANTED_QOS_1
    device = clients(broker, "dev-A", tls=False)
    mids = [device.publish(READINGS_A, str(i).encode()) for i in range(total)]
    device.wait_until(lambda: len(device.acks) == total, "every PUBACK")
    assert {device.acks[mid].value for mid in mids} == {SUCCESS}
    worker.received(inflight)
    # A SUBACK comes after every PUBLISH the broker wrote before it: then the count is final.
    worker.subscribe("telecare/v1/+/events")
    assert len(worker.messages) == inflight

    # Nothing more arrives before these acks, so none is acknowledged twice.
    worker.auto_ack = True
    for message in list(worker.messages):
        worker.client.ack(message.mid, message.qos)
    payloads = [m.payload for m in worker.received(total)]
    assert sorted(payloads) == sorted(str(i).encode() for i in range(total))


def test_what_waits_for_a_worker_survives_kill_9_up_to_the_last_autosave(
        tmp_path: Path, certs: Path, passwd: Path, clients: Callable[..., Mqtt]) -> None:
    assert int(mosquitto_conf.load().options["autosave_interval"]) == 30
    # 2 s instead of 30 s so the test waits for one save, not for half a minute.
    broker = Broker(tmp_path, certs, passwd, autosave_interval=2)
    broker.start()
    try:
        worker = clients(broker, "ingest", tls=False, client_id="worker", clean_start=False)
        assert worker.subscribe(WORKER_SUBSCRIPTION) == GRANTED_QOS_1
        worker.close()
        device = clients(broker, "dev-A")
        saved = [device.publish(READINGS_A, b"saved %d" % i) for i in range(5)]
        assert {device.puback(mid) for mid in saved} == {SUCCESS}
        wait_for_a_save(broker)
        lost = [device.publish(READINGS_A, b"after the save %d" % i) for i in range(3)]
        assert {device.puback(mid) for mid in lost} == {SUCCESS}
        broker.kill()

        broker.start()
        resumed = clients(broker, "ingest", tls=False, client_id="worker", clean_start=False)
        assert sorted(m.payload for m in resumed.received(5)) == [b"saved %d" % i for i in range(5)]
        # A SUBACK comes after everything the broker had queued for the session: nothing more.
        resumed.subscribe("telecare/v1/+/events")
        assert len(resumed.messages) == 5
    finally:
        broker.stop()


def wait_for_a_save(broker: Broker) -> None:
    """Until Mosquitto has written mosquitto.db anew (it writes a new file and renames it)."""
    def stamp() -> tuple[int, int] | None:
        try:
            status = broker.database.stat()
        except FileNotFoundError:
            return None
        return status.st_ino, status.st_mtime_ns

    before, deadline = stamp(), time.monotonic() + WAIT_S
    while stamp() == before:
        assert time.monotonic() < deadline, "Mosquitto wrote no autosave"
        time.sleep(0.01)  # polls a file the broker writes on its own schedule
