"""The bare baseline: a paho subscriber at QoS 1 doing only json parsing and COPY.

Run as a process by bench/ingest.py; after each commit it publishes the (device, seq) pairs it
stored, so the benchmark measures publish -> commit for it exactly as for Telecare."""

from __future__ import annotations

import json
import os
import queue
import sys
import time
from typing import Any

import paho.mqtt.client as paho
import psycopg
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.subscribeoptions import SubscribeOptions

CREATE = """CREATE TABLE IF NOT EXISTS bench_baseline (
    device_id text NOT NULL, seq bigint NOT NULL, measured_at timestamptz NOT NULL,
    value double precision NOT NULL)"""


def main() -> None:
    host, port, root, group, dsn = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
    rows: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"baseline-{group}-{os.getpid()}",
                         protocol=paho.MQTTv5)

    def on_message(_c: Any, _u: Any, msg: paho.MQTTMessage) -> None:
        doc = json.loads(msg.payload)
        for r in doc["readings"]:
            rows.put((doc["device_id"], r["seq"], r["measured_at"], r["values"]["weight"]))

    def on_connect(c: paho.Client, *_: Any) -> None:
        c.subscribe(f"$share/{group}/{root}/v1/+/readings", options=SubscribeOptions(qos=1))

    def on_subscribe(*_: Any) -> None:
        print("ready", flush=True)

    client.on_message, client.on_connect, client.on_subscribe = on_message, on_connect, on_subscribe
    client.connect(host, port)
    client.loop_start()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(CREATE)
        while True:
            batch = [rows.get()]
            deadline = time.monotonic() + 0.01
            while len(batch) < 500 and time.monotonic() < deadline:
                try:
                    batch.append(rows.get(timeout=max(0.0, deadline - time.monotonic())))
                except queue.Empty:
                    break
            with conn.transaction(), conn.cursor() as cur:
                with cur.copy("COPY bench_baseline (device_id, seq, measured_at, value) FROM STDIN") as cp:
                    for row in batch:
                        cp.write_row(row)
            client.publish(f"{root}/baseline-acks", json.dumps([[r[0], r[1]] for r in batch]))


if __name__ == "__main__":
    main()
