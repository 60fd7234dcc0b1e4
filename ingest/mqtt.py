"""The paho-mqtt client settings shared by ingest: protocol, persistent session, credentials."""

from __future__ import annotations

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from core.settings import Settings


def new_client(settings: Settings, client_id: str, *, manual_ack: bool = False) -> paho.Client:
    """A paho client for `settings.mqtt_protocol`, with a session that survives restarts."""
    v5 = settings.mqtt_protocol == "5"
    client = paho.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=paho.MQTTv5 if v5 else paho.MQTTv311,
        # 3.1.1 has no session expiry: a persistent session is "clean session off".
        clean_session=None if v5 else False,
        manual_ack=manual_ack,
    )
    if settings.mqtt_username:
        password = settings.mqtt_password.get_secret_value() if settings.mqtt_password else None
        client.username_pw_set(settings.mqtt_username, password)
    client.reconnect_delay_set(min_delay=1, max_delay=30)
    return client


def connect_async(client: paho.Client, settings: Settings, *, receive_maximum: int | None) -> None:
    """Start connecting; paho's loop keeps reconnecting (and resuming the session) on its own."""
    host = settings.mqtt_host or "127.0.0.1"
    if settings.mqtt_protocol == "5":
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = settings.session_expiry_s
        if receive_maximum is not None:
            # The broker may have at most this many un-acknowledged messages in flight to us:
            # the protocol-level backpressure that keeps our own queue from ever filling.
            props.ReceiveMaximum = receive_maximum
        client.connect_async(host, settings.mqtt_port, keepalive=30, clean_start=False,
                             properties=props)
    else:
        client.connect_async(host, settings.mqtt_port, keepalive=30)
