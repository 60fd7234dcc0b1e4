"""The alert side of Telecare in one process: the engine (leading or standing by) and the
senders that drain its outboxes (webhooks, home screens). `telecare alerts` and the demo run it."""

from __future__ import annotations

import logging
import threading
from datetime import timedelta

from alerts.engine import AlertEngine
from alerts.webhooks import WebhookSender
from anomaly.baseline import BaselineConfig
from core.clock import system_clock
from core.settings import Settings
from ingest.screen import ScreenSender

log = logging.getLogger(__name__)


def baseline_config(settings: Settings) -> BaselineConfig:
    return BaselineConfig(learning_period=timedelta(days=settings.alerts_baseline_learning_days),
                          training_window=timedelta(days=settings.alerts_baseline_training_days))


def run_alerting(settings: Settings, stop: threading.Event) -> None:
    """Run the engine and the senders until `stop` is set; each stop is bounded in time."""
    settings = settings.for_process("alerts")
    dsn = settings.database_dsn()
    # Any number of senders may run (they claim rows with SKIP LOCKED), so the standby runs
    # them too: a delivery never waits for a leadership change.
    senders = [threading.Thread(target=WebhookSender(dsn, system_clock).run, args=(stop,),
                                name="webhooks")]
    if settings.mqtt_host:
        senders.append(threading.Thread(target=ScreenSender(settings, system_clock).run,
                                        args=(stop,), name="screens"))
    else:
        log.warning("TELECARE_MQTT_HOST is not set: screen messages wait in their outbox")
    for sender in senders:
        sender.start()
    engine = AlertEngine(dsn, system_clock, settings.alerts_tick_s,
                         batch_max=settings.alerts_batch_max,
                         batch_citizens=settings.alerts_batch_citizens,
                         standby_retry_s=settings.alerts_standby_retry_s,
                         stop_timeout_s=settings.stop_timeout_s,
                         baselines=baseline_config(settings),
                         retrain_every=timedelta(hours=settings.alerts_baseline_retrain_hours),
                         retrain_chunk=settings.alerts_baseline_retrain_chunk)
    try:
        engine.run(stop)
    finally:
        stop.set()
        for sender in senders:
            sender.join(settings.stop_timeout_s)
