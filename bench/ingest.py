"""Ingest benchmark: Telecare against a bare baseline, measured in the same run.

For 1 and 2 workers (a shared subscription), for each system:
  * sustained throughput: N messages wait at the broker while the workers are paused
    (SIGSTOP); on SIGCONT we time until all are committed (readings/s, publish -> committed).
    Repeated, alternating baseline and Telecare, and the median reported: on a 2-core machine
    shared with the broker and the database one drain varies by tens of percent;
  * latency at a fixed offered rate: R messages/s for S seconds; publish -> commit per message,
    seen by the publisher as the acknowledgement that follows the commit (Telecare's
    application ack; the baseline publishes the same after each of its commits).
  * poison: a 400/s stream with 10 poison messages/s mixed in (half a status with a NUL in
    its firmware, which decoding refuses; half a reading the database refuses, through a
    CHECK constraint the benchmark adds, which the worker must isolate): ack p99 of the good
    messages (target under 1 s), Telecare only.
One reading per message. Workers are separate processes; the broker is a Mosquitto started
for the run (unbounded queues, so nothing waiting is dropped) and the database is the
machine's PostgreSQL (a fresh database per run)."""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import psycopg
from paho.mqtt.enums import CallbackAPIVersion

from core.migrations import migrate
from devices import service
from devices.models import Device
from telecare.embedded import embedded_broker

# The database refuses this weight (a CHECK constraint the poison run adds), as it would a
# reading some future constraint or trigger rejects: the worker must isolate it cheaply.
POISON_WEIGHT = 66.6
ADMIN_DSN = os.environ.get("TELECARE_BENCH_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")


@dataclass
class Result:
    system: str
    workers: int
    throughput: float  # median of the repeats
    runs: list[float]
    offered: float
    achieved: float
    p50_ms: float
    p99_ms: float


class Probe:
    """Publishes readings (one per message) and remembers when each was sent."""

    def __init__(self, port: int, root: str, devices: list[str]) -> None:
        self.root, self.devices = root, devices
        self.sent: dict[tuple[str, int], float] = {}
        self.client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
        self.client.max_inflight_messages_set(1000)
        self.client.max_queued_messages_set(0)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.seq = 0

    def publish(self, index: int) -> paho.MQTTMessageInfo:
        device = self.devices[index % len(self.devices)]
        self.seq += 1
        now = time.time()
        self.sent[(device, self.seq)] = now
        return self._reading(device, now, 70.0 + (self.seq % 100) / 10)

    def _reading(self, device: str, now: float, weight: float) -> paho.MQTTMessageInfo:
        payload = json.dumps({"v": 1, "device_id": device, "readings": [{
            "seq": self.seq, "measured_at": datetime.fromtimestamp(now, UTC).isoformat(),
            "type": "body_weight", "values": {"weight": weight}}]})
        return self.client.publish(f"{self.root}/v1/{device}/readings", payload, qos=1)

    def publish_poison(self, index: int) -> None:
        """A message that must be dead-lettered without holding up the others."""
        device = self.devices[index % len(self.devices)]
        if index % 2:
            status = json.dumps({"v": 1, "device_id": device, "online": True,
                                 "firmware": "1.4\u00002"})
            self.client.publish(f"{self.root}/v1/{device}/status", status, qos=1)
        else:
            self.seq += 1
            self._reading(device, time.time(), POISON_WEIGHT)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def listen_for_acks(port: int, root: str, sample: list[str], expected: int, ready: Any,
                    out: Any) -> None:
    """Records when each (device, seq) of the sampled devices was first acknowledged and hands
    the times back when all have been. Runs in its own process, and listens to a sample of the
    devices only: on two cores, receiving every one of Telecare's acknowledgements (one per
    device per batch; the baseline sends one per batch) would take CPU from what is measured."""
    wanted = set(sample)
    arrivals: dict[tuple[str, int], float] = {}
    complete = threading.Event()

    def on_message(_c: Any, _u: Any, msg: paho.MQTTMessage) -> None:
        now = time.time()
        if msg.topic.endswith("baseline-acks"):
            pairs = [(d, s) for d, s in json.loads(msg.payload)]
        else:
            device = msg.topic.split("/")[2]
            pairs = [(device, s) for s in json.loads(msg.payload)["stored"]]
        for pair in pairs:
            if pair[0] in wanted:
                arrivals.setdefault(pair, now)
        if len(arrivals) >= expected:
            complete.set()

    client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    client.on_message = on_message
    client.on_subscribe = lambda *_: ready.set()
    client.connect("127.0.0.1", port)
    client.subscribe([(f"{root}/v1/{device}/commands", 0) for device in sample]
                     + [(f"{root}/baseline-acks", 0)])
    client.loop_start()
    complete.wait(expected / 100 + 60)
    client.loop_stop()
    out.put(arrivals)


@contextmanager
def bench_database(devices: int) -> Iterator[tuple[str, list[str]]]:
    name = f"telecare_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    dsn = ADMIN_DSN.rsplit("/", 1)[0] + f"/{name}"
    try:
        migrate(dsn, storage="postgres")
        ids = [f"bench-{i:04d}" for i in range(devices)]
        with psycopg.connect(dsn, autocommit=True) as conn:
            for device_id in ids:
                citizen = service.enrol_citizen(conn, "Bench Citizen")
                service.register_device(conn, Device(id=device_id, kind="scale", model="bench",
                                                     serial=device_id))
                service.pair_device(conn, device_id, citizen, datetime.now(UTC) - timedelta(days=1))
        yield dsn, ids
    finally:
        with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def start_workers(system: str, count: int, port: int, root: str, dsn: str,
                  logdir: Path) -> list[subprocess.Popen[bytes]]:
    procs = []
    for index in range(count):
        log = logdir / f"{system}-{root}-{index}.log"
        if system == "baseline":
            cmd = [sys.executable, "-m", "bench.baseline", "127.0.0.1", str(port), root,
                   f"g{root}", dsn]
            env = dict(os.environ)
        else:
            cmd = [sys.executable, "-m", "telecare.cli", "ingest"]
            env = {**os.environ, "TELECARE_DATABASE_URL": dsn, "TELECARE_MQTT_HOST": "127.0.0.1",
                   "TELECARE_MQTT_PORT": str(port), "TELECARE_TOPIC_ROOT": root,
                   "TELECARE_SHARE_GROUP": f"g{root}",
                   "TELECARE_INGEST_CLIENT_ID": f"ingest-{root}-{index}"}
        procs.append(subprocess.Popen(cmd, env=env, stdout=log.open("wb"),
                                      stderr=subprocess.STDOUT))
        try:
            _wait_for_text(log, b"ready" if system == "baseline" else b"connected to the broker")
        except RuntimeError:
            stop(procs)
            raise
    time.sleep(0.5)
    return procs


def _wait_for_text(log: Path, text: bytes, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in log.read_bytes():
            return
        time.sleep(0.05)
    raise RuntimeError(f"worker never became ready: {log.read_text()[-2000:]}")


def committed(conn: psycopg.Connection[Any], system: str) -> int:
    table = "bench_baseline" if system == "baseline" else "readings"
    row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()  # noqa: S608 - fixed names
    return int(row[0]) if row else 0


def reset(conn: psycopg.Connection[Any]) -> None:
    conn.execute("CREATE TABLE IF NOT EXISTS bench_baseline (device_id text NOT NULL, "
                 "seq bigint NOT NULL, measured_at timestamptz NOT NULL, "
                 "value double precision NOT NULL)")
    conn.execute("TRUNCATE readings, bench_baseline, dead_letters CASCADE")


def sustained(system: str, workers: int, port: int, dsn: str, devices: list[str],
              messages: int, logdir: Path) -> float:
    """Readings/s committed, draining `messages` that waited at the broker."""
    root = f"t{uuid.uuid4().hex[:8]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        reset(conn)
        procs = start_workers(system, workers, port, root, dsn, logdir)
        try:
            for proc in procs:
                proc.send_signal(signal.SIGSTOP)
            probe = Probe(port, root, devices)
            last = None
            for index in range(messages):
                last = probe.publish(index)
            assert last is not None
            last.wait_for_publish(120)
            time.sleep(1.0)  # let the broker route the tail before the clock starts
            start = time.monotonic()
            for proc in procs:
                proc.send_signal(signal.SIGCONT)
            while committed(conn, system) < messages:
                if time.monotonic() - start > 300:
                    raise RuntimeError(f"{system}: only {committed(conn, system)} of {messages}")
                time.sleep(0.02)
            elapsed = time.monotonic() - start
            probe.close()
        finally:
            stop(procs)
    return messages / elapsed


def at_rate(system: str, workers: int, port: int, dsn: str, devices: list[str], rate: float,
            seconds: float, logdir: Path, sample: int = 20,
            poison_rate: float = 0.0) -> tuple[float, float, float]:
    """(achieved readings/s, p50 ms, p99 ms) at `rate` messages/s offered; latency measured on
    every message of `sample` of the devices (round robin: 1 in len(devices)/sample), with
    `poison_rate` poison messages/s mixed in."""
    root = f"t{uuid.uuid4().hex[:8]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        reset(conn)
    poison_every = int(rate / poison_rate) if poison_rate > 0 else 0
    procs = start_workers(system, workers, port, root, dsn, logdir)
    total = int(rate * seconds)
    sampled = devices[:sample]
    expected = sum(1 for index in range(total) if index % len(devices) < sample)
    spawn = multiprocessing.get_context("spawn")
    ready, out = spawn.Event(), spawn.Queue()
    listener = spawn.Process(target=listen_for_acks,
                             args=(port, root, sampled, expected, ready, out))
    try:
        listener.start()
        if not ready.wait(30):
            raise RuntimeError("the acknowledgement listener did not subscribe")
        probe = Probe(port, root, devices)
        start = time.monotonic()
        for index in range(total):
            pause = start + index / rate - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            probe.publish(index)
            if poison_every and index % poison_every == 0:
                probe.publish_poison(index // poison_every)
        arrivals: dict[tuple[str, int], float] = out.get(timeout=total / 100 + 90)
        probe.close()
        sent = {key: at for key, at in probe.sent.items() if key[0] in sampled}
        missing = sent.keys() - arrivals.keys()
        if missing:
            raise RuntimeError(f"{system}: {len(missing)} sampled readings never acknowledged")
        lat = sorted(arrivals[key] - at for key, at in sent.items())
        p50 = statistics.median(lat) * 1000
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000
        return total / (max(arrivals.values()) - min(probe.sent.values())), p50, p99
    finally:
        if listener.is_alive():
            listener.terminate()
        stop(procs)


def poisoned(workers: int, port: int, dsn: str, devices: list[str], rate: float,
             poison_rate: float, seconds: float, logdir: Path) -> tuple[float, float, int]:
    """(p50 ms, p99 ms, dead letters) of Telecare's acks at `rate` good messages/s with
    `poison_rate` poison messages/s mixed in."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("ALTER TABLE readings ADD CONSTRAINT bench_poison "
                     f"CHECK (value <> {POISON_WEIGHT}) NOT VALID")
    try:
        _, p50, p99 = at_rate("telecare", workers, port, dsn, devices, rate, seconds, logdir,
                              poison_rate=poison_rate)
        with psycopg.connect(dsn, autocommit=True) as conn:
            dead = int((conn.execute("SELECT count(*) FROM dead_letters").fetchone() or (0,))[0])
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("ALTER TABLE readings DROP CONSTRAINT bench_poison")
    return p50, p99, dead


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        proc.send_signal(signal.SIGCONT)
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=30_000, help="for sustained throughput")
    parser.add_argument("--rate", type=float, default=2000.0, help="offered messages/s")
    parser.add_argument("--seconds", type=float, default=15.0, help="at the offered rate")
    parser.add_argument("--devices", type=int, default=200)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeat", type=int, default=5, help="sustained drains per system")
    parser.add_argument("--poison-rate", type=float, default=10.0,
                        help="poison messages/s inside a 400/s stream (0: skip that run)")
    args = parser.parse_args()

    results = []
    with tempfile.TemporaryDirectory() as tmp, embedded_broker(Path(tmp) / "mqtt") as (port, _), \
            bench_database(args.devices) as (dsn, devices):
        for workers in args.workers:
            runs: dict[str, list[float]] = {"baseline": [], "telecare": []}
            for round_ in range(args.repeat):
                order = ("baseline", "telecare") if round_ % 2 == 0 else ("telecare", "baseline")
                for system in order:
                    runs[system].append(sustained(system, workers, port, dsn, devices,
                                                  args.messages, Path(tmp)))
                    print(f"  {system:9s} workers={workers} drain {round_ + 1}: "
                          f"{runs[system][-1]:8.0f}/s", flush=True)
            for system in ("baseline", "telecare"):
                achieved, p50, p99 = at_rate(system, workers, port, dsn, devices, args.rate,
                                             args.seconds, Path(tmp))
                results.append(Result(system, workers, statistics.median(runs[system]),
                                      runs[system], args.rate, achieved, p50, p99))
                print(f"  {system:9s} workers={workers} at {args.rate:.0f}/s: "
                      f"achieved={achieved:6.0f}/s p50={p50:6.1f} ms p99={p99:6.1f} ms",
                      flush=True)
        poison = None
        if args.poison_rate > 0:
            poison = poisoned(1, port, dsn, devices, 400.0, args.poison_rate, args.seconds,
                              Path(tmp))
    report(results, args)
    if poison is not None:
        print(f"\nPoison: 400 good messages/s with {args.poison_rate:.0f} poison messages/s for "
              f"{args.seconds:.0f} s, one worker: ack p50 {poison[0]:.1f} ms, p99 "
              f"{poison[1]:.1f} ms (target under 1,000 ms); {poison[2]} dead letters")


def report(results: list[Result], args: argparse.Namespace) -> None:
    print(f"\nIngest benchmark: {args.messages} messages drained {args.repeat}x per system "
          f"(median, range); {args.rate:.0f}/s offered for {args.seconds:.0f} s; one reading per "
          f"message; {os.cpu_count()} CPUs\n")
    print("| workers | system | sustained readings/s | range | vs baseline | "
          f"p50 ms @{args.rate:.0f}/s | p99 ms @{args.rate:.0f}/s |")
    print("|---|---|---|---|---|---|---|")
    for result in results:
        base = next(r for r in results if r.system == "baseline" and r.workers == result.workers)
        print(f"| {result.workers} | {result.system} | {result.throughput:,.0f} | "
              f"{min(result.runs):,.0f}–{max(result.runs):,.0f} | "
              f"{result.throughput / base.throughput:.0%} | {result.p50_ms:.1f} | "
              f"{result.p99_ms:.1f} |")


if __name__ == "__main__":
    main()
