"""The demo's fallback broker: amqtt speaks MQTT 3.1.1 without shared subscriptions, and a
single ingest worker on a plain subscription still stores what devices publish."""

from collections.abc import Callable
from typing import Any
from uuid import UUID

import paho.mqtt.client as paho
import psycopg

from core.settings import Settings
from telecare.embedded import amqtt_broker, free_port
from tests.conftest import Publisher, count, reading_message, running_worker, wait_for


def test_ingest_over_the_embedded_amqtt_broker(settings: Settings, conn: psycopg.Connection[Any],
                                               make_device: Callable[..., tuple[str, UUID]]
                                               ) -> None:
    port = free_port()
    with amqtt_broker(port):
        fallback = settings.model_copy(update={"mqtt_port": port, "mqtt_protocol": "3.1.1",
                                               "share_group": ""})
        with running_worker(fallback):
            publisher = Publisher("127.0.0.1", port, settings.topic_root, paho.MQTTv311)
            try:
                device, _ = make_device()
                publisher.publish(device, "readings", reading_message(device, range(1, 4)))
                wait_for(lambda: count(conn, "SELECT count(*) FROM readings WHERE device_id = %s",
                                       device) == 9, what="readings through amqtt")
            finally:
                publisher.close()
