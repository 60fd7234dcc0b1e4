"""The loop every outbox sender runs (webhooks, home screens): a connection listening to alert
changes, handed to the sender's own `serve`; a lost database or a defect costs a back-off,
never the sender."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import psycopg

from alerts import delivery_repository as repo
from core.db import connect

log = logging.getLogger(__name__)

Serve = Callable[[psycopg.Connection[Any], threading.Event], None]


def serve_outbox(dsn: str, name: str, serve: Serve, stop: threading.Event) -> None:
    """Run `serve` until `stop` is set, reconnecting after 0.5 s doubling to 10 s."""
    retry_s = 0.5
    while not stop.is_set():
        try:
            with connect(dsn) as conn:
                conn.autocommit = True  # the sender's transactions are explicit
                repo.listen_alert_changes(conn)
                retry_s = 0.5
                serve(conn, stop)
        except psycopg.Error as exc:
            log.warning("%s: database unavailable (%s); retrying in %.1f s",
                        name, type(exc).__name__, retry_s)
        except Exception:
            log.exception("%s failed; restarting in %.1f s", name, retry_s)
        stop.wait(retry_s)
        retry_s = min(retry_s * 2, 10.0)
