"""The paho-mqtt client settings shared by ingest: protocol, persistent session, credentials."""

from __future__ import annotations

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from core.settings import Settings

# Room for the topic, packet id and properties of a PUBLISH around the largest payload we take.
PACKET_HEADROOM_BYTES = 4096
# After a broker restart every publish before we resubscribe reaches no shared-subscription
# member (Mosquitto 2.0.11 keeps none for an offline one): reconnect fast. paho sleeps floats
# (time.sleep) although its signature says int; it doubles the delay after each failed attempt
# and starts again from the minimum after a CONNACK.
RECONNECT_MIN_S = 0.1
RECONNECT_MAX_S = 0.5


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
    client.reconnect_delay_set(min_delay=RECONNECT_MIN_S,  # type: ignore[arg-type]
                               max_delay=RECONNECT_MAX_S)  # type: ignore[arg-type]
    return client


def max_packet_bytes(settings: Settings) -> int:
    """The largest packet we let the broker send us (MQTT 5 Maximum Packet Size)."""
    return settings.max_payload_bytes + PACKET_HEADROOM_BYTES


def connect_async(client: paho.Client, settings: Settings, *, receive_maximum: int | None) -> None:
    """Start connecting; paho's loop keeps reconnecting (and resuming the session) on its own."""
    host = settings.mqtt_host or "127.0.0.1"
    if settings.mqtt_protocol == "5":
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = settings.session_expiry_s
        # The broker must not send us more than this: a payload over the limit is refused
        # anyway, and reading it whole would cost its size in memory.
        props.MaximumPacketSize = max_packet_bytes(settings)
        if receive_maximum is not None:
            # The broker may have at most this many un-acknowledged messages in flight to us.
            props.ReceiveMaximum = receive_maximum
        client.connect_async(host, settings.mqtt_port, keepalive=30, clean_start=False,
                             properties=props)
    else:
        client.connect_async(host, settings.mqtt_port, keepalive=30)


def subscriptions(settings: Settings
                  ) -> list[tuple[str, SubscribeOptions]] | list[tuple[str, int]]:
    """Everything under the topic root, so a misaddressed message reaches decode and becomes
    an `invalid_topic` dead letter instead of vanishing. (Our own downlink matches too; the
    worker drops it on arrival.)"""
    prefix = f"$share/{settings.share_group}/" if settings.share_group else ""
    name = f"{prefix}{settings.topic_root}/#"
    # Without Retain As Published the retain flag marks only the stored copies the broker sends
    # on subscribing: old news, whose `reported_at` says nothing about the device clock now.
    # (An empty status, a device clearing its retained message, is ignored either way.)
    return [(name, 1)]
