"""Reads deploy/mosquitto.conf the way Mosquitto 2.0 does: global options, and listeners with
the options that follow each `listener` line."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CONF = REPO / "deploy" / "mosquitto.conf"

# Options that belong to the listener above them (mosquitto.conf(5), "Listeners").
LISTENER_OPTIONS = {
    "protocol", "cafile", "capath", "certfile", "keyfile", "tls_version", "ciphers",
    "ciphers_tls1.3", "require_certificate", "use_identity_as_username",
    "use_subject_as_username", "crlfile", "bind_interface", "mount_point", "socket_domain",
    "max_connections", "http_dir", "psk_hint", "dhparamfile", "tls_engine", "tls_keyform",
}


@dataclass
class Listener:
    port: int
    bind: str | None
    options: dict[str, str] = field(default_factory=dict)


@dataclass
class MosquittoConf:
    options: dict[str, str]
    listeners: list[Listener]

    def listener(self, port: int) -> Listener:
        found = [listener for listener in self.listeners if listener.port == port]
        assert len(found) == 1, f"expected one listener on port {port}, found {len(found)}"
        return found[0]


def parse(text: str) -> MosquittoConf:
    """Global options (each set once) and listeners; comments and blank lines skipped."""
    options: dict[str, str] = {}
    listeners: list[Listener] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, _, value = line.partition(" ")
        if key == "listener":
            port, _, bind = value.partition(" ")
            listeners.append(Listener(int(port), bind or None))
        elif key in LISTENER_OPTIONS:
            assert listeners, f"line {number}: {key} before any listener"
            listeners[-1].options[key] = value
        else:
            assert key not in options, f"line {number}: {key} set twice"
            options[key] = value
    return MosquittoConf(options, listeners)


def load() -> MosquittoConf:
    return parse(CONF.read_text())
