"""Alert benchmark: ingest with the alert engine vs the bare baseline; publish -> SSE latency.

Measured in one run:

  * throughput: as bench/ingest.py (its helpers, imported): N messages wait at the broker
    while the workers are paused, then drain; for the baseline, Telecare's ingest alone, and
    Telecare with `telecare alerts` (the engine and its senders, a separate process) evaluating
    every stored reading (the figure the target is about; ingest alone tells the engine's cost
    from ingest's). Rotated, median of the repeats. The scale citizens follow a heart-failure
    plan (weight gain, NEWS2, missed measurements are evaluated) and weigh in band: the engine
    works, raises little (NEWS2 and schedule rules may find something). Also
    reported: when the engine's queue was empty (its evaluation of the whole drain);
  * alert latency: R readings/s offered for S seconds from pulse oximeters of citizens on a
    COPD plan, ingest + engine + API (uvicorn) running, a client (own process, httpx) reading
    the team's SSE stream. A fraction of the readings is out of band (SpO2 80 %, below the red
    band 84): each for a distinct citizen who has had none before, so each opens a new
    `threshold:spo2` alert, which is pushed (a repeat of an open alert would not be). Latency =
    first pushed `threshold:spo2` event of that citizen on the stream - publish;
  * emergency button: a few presses/s in the same background, each from the button of a
    distinct citizen (a second press on an open alert is a repeat, not pushed): publish ->
    pushed `emergency_button` event on the stream."""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import queue
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import paho.mqtt.client as paho
import psycopg
from paho.mqtt.enums import CallbackAPIVersion

from alerts import service as alerts_service
from bench.ingest import (
    Probe,
    _wait_for_text,
    bench_database,
    committed,
    reset,
    start_workers,
    stop,
)
from devices import service
from devices.models import Device
from telecare.embedded import embedded_broker, free_port

OUT_OF_BAND_SPO2 = 80.0  # copd: red below 84
IN_BAND_SPO2 = 95.0
WITH_ALERTS = "telecare+alerts"
# How long after the last publish a probe's alert may still arrive (else it counts as missing).
GRACE_S = 30.0
SYSTEMS = ("baseline", "telecare", WITH_ALERTS)


class SteadyProbe(Probe):
    """bench.ingest's probe with a steady weight (within 0.1 kg): no weight-gain alert."""

    def publish(self, index: int) -> paho.MQTTMessageInfo:
        device = self.devices[index % len(self.devices)]
        self.seq += 1
        return self._reading(device, time.time(), 72.0 + (self.seq % 10) / 100)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def _env(dsn: str, port: int, root: str) -> dict[str, str]:
    return {**os.environ, "TELECARE_DATABASE_URL": dsn, "TELECARE_MQTT_HOST": "127.0.0.1",
            "TELECARE_MQTT_PORT": str(port), "TELECARE_TOPIC_ROOT": root}


def start_engine(dsn: str, port: int, root: str, logdir: Path) -> subprocess.Popen[bytes]:
    """`telecare alerts` (engine + webhook and screen senders), once it leads."""
    log = logdir / f"alerts-{root}.log"
    proc = subprocess.Popen([sys.executable, "-m", "telecare.cli", "alerts"],
                            env=_env(dsn, port, root), stdout=log.open("wb"),
                            stderr=subprocess.STDOUT)
    try:
        _wait_for_text(log, b"alert engine leading")
    except RuntimeError:
        stop([proc])
        raise
    return proc


def start_api(dsn: str, port: int, root: str, logdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    """`telecare api` (uvicorn) on a free port, once it answers; (process, base url)."""
    api_port = free_port()
    log = logdir / f"api-{root}.log"
    proc = subprocess.Popen([sys.executable, "-m", "telecare.cli", "api"],
                            # The client follows the stream as the local operator: the cost
                            # measured is the alert path's, not sign-in's.
                            env={**_env(dsn, port, root), "TELECARE_API_PORT": str(api_port),
                                 "TELECARE_AUTH_REQUIRED": "false"},
                            stdout=log.open("wb"), stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{api_port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/v1/teams", timeout=2).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    stop([proc])
    raise RuntimeError(f"the API never answered: {log.read_text()[-2000:]}")


def queued(conn: psycopg.Connection[Any]) -> int:
    """Items the engine has not evaluated yet."""
    row = conn.execute("SELECT count(*) FROM evaluation_queue").fetchone()
    return int(row[0]) if row else 0


# --- throughput ------------------------------------------------------------------------------

def drain(system: str, workers: int, port: int, dsn: str, devices: list[str], messages: int,
          logdir: Path) -> tuple[float, float | None]:
    """(readings/s committed, items/s the engine evaluated: None without it), draining
    `messages` that waited at the broker. `system`: baseline, telecare (ingest alone) or
    telecare+alerts (with the alert engine running)."""
    root = f"t{uuid.uuid4().hex[:8]}"
    workers_of = "baseline" if system == "baseline" else "telecare"
    with psycopg.connect(dsn, autocommit=True) as conn:
        reset(conn)
        conn.execute("TRUNCATE evaluation_queue")
        engine = [start_engine(dsn, port, root, logdir)] if system == WITH_ALERTS else []
        procs: list[subprocess.Popen[bytes]] = []
        try:
            procs = start_workers(workers_of, workers, port, root, dsn, logdir)
            for proc in procs:
                proc.send_signal(signal.SIGSTOP)
            probe = SteadyProbe(port, root, devices)
            last = None
            for index in range(messages):
                last = probe.publish(index)
            assert last is not None
            last.wait_for_publish(120)
            time.sleep(1.0)  # let the broker route the tail before the clock starts
            start = time.monotonic()
            for proc in procs:
                proc.send_signal(signal.SIGCONT)
            while committed(conn, workers_of) < messages:
                if time.monotonic() - start > 300:
                    raise RuntimeError(f"{system}: only {committed(conn, workers_of)} of {messages}")
                time.sleep(0.02)
            elapsed = time.monotonic() - start
            probe.close()
            evaluated = None
            if engine:
                while queued(conn) > 0:
                    if time.monotonic() - start > 300:
                        raise RuntimeError(f"engine: {queued(conn)} still queued")
                    time.sleep(0.05)
                evaluated = messages / (time.monotonic() - start)
        finally:
            stop(procs + engine)
    return messages / elapsed, evaluated


def plan_citizens(dsn: str, devices: list[str], plan: str, team: UUID) -> None:
    """Put the holders of `devices` on `plan` (from 5 minutes ago) and in `team`."""
    now = datetime.now(UTC)
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute("SELECT DISTINCT citizen_id FROM device_pairings "
                            "WHERE device_id = ANY(%s)", (devices,)).fetchall()
        for (citizen,) in rows:
            alerts_service.set_plan(conn, citizen, plan, now - timedelta(minutes=5), "bench", now)
            alerts_service.assign_citizen(conn, citizen, team)


# --- latency ---------------------------------------------------------------------------------

@dataclass
class Citizen:
    id: UUID
    oximeter: str
    button: str


def enrol_copd(dsn: str, count: int, team: UUID) -> list[Citizen]:
    """Citizens on a COPD plan in `team`, each with a pulse oximeter and an emergency button."""
    now = datetime.now(UTC)
    citizens = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        for index in range(count):
            citizen = Citizen(service.enrol_citizen(conn, "Bench COPD Citizen"),
                              f"ox-{index:04d}", f"btn-{index:04d}")
            for device_id, kind in ((citizen.oximeter, "pulse_oximeter"),
                                    (citizen.button, "emergency_button")):
                service.register_device(conn, Device(id=device_id, kind=kind, model="bench",
                                                     serial=device_id))
                service.pair_device(conn, device_id, citizen.id, now - timedelta(days=1))
            alerts_service.set_plan(conn, citizen.id, "copd", now - timedelta(minutes=5),
                                    "bench", now)
            alerts_service.assign_citizen(conn, citizen.id, team)
            citizens.append(citizen)
    return citizens


def read_stream(url: str, ready: Any, out: Any) -> None:
    """Reads the SSE stream and hands (arrival time, event data) of every event to `out`.
    Its own process: the publisher's loop must not delay the reading of events."""
    with httpx.Client(timeout=httpx.Timeout(10, read=None)) as client, \
            client.stream("GET", url) as response:
        response.raise_for_status()
        ready.set()  # the server subscribes before it answers
        data = None
        for line in response.iter_lines():
            if line.startswith("data:"):
                data = line[5:].strip()
            elif line == "" and data is not None:
                out.put((time.time(), json.loads(data)))
                data = None


@dataclass
class Latency:
    design: str
    sent: dict[tuple[str, str], float] = field(default_factory=dict)  # (citizen, rule) -> at
    arrived: dict[tuple[str, str], float] = field(default_factory=dict)
    # The engine's clock for the change (alert_history.at): splits the latency into ingest +
    # engine before it and commit + NOTIFY + the API's hub + HTTP after it.
    recorded: dict[tuple[str, str], float] = field(default_factory=dict)
    # When the ingest worker received the probe (its stored received_at): splits off the
    # broker and ingest from the engine's queue.
    received: dict[tuple[str, str], float] = field(default_factory=dict)

    def stages(self) -> str:
        """p50/p99 ms of publish -> received by ingest -> the engine's time of the change ->
        on the stream."""
        keys = [key for key in self.sent
                if key in self.arrived and key in self.recorded and key in self.received]
        if not keys:
            return "no probes arrived"
        marks = (("publish -> received by ingest", self.sent, self.received),
                 ("then -> the engine's time of the change (history.at)", self.received,
                  self.recorded),
                 ("then -> on the stream", self.recorded, self.arrived))
        parts = []
        for label, start, end in marks:
            ms = [(end[k] - start[k]) * 1000 for k in keys]
            parts.append(f"{label} p50 {statistics.median(ms):.0f} / p99 "
                         f"{_percentile(ms, 0.99):.0f} ms")
        return "; ".join(parts)

    def figures(self) -> tuple[int, int, float, float, float]:
        """(probes, missing, p50 ms, p99 ms, max ms)."""
        lat = [(self.arrived[key] - at) * 1000 for key, at in self.sent.items()
               if key in self.arrived]
        if not lat:
            return len(self.sent), len(self.sent), float("nan"), float("nan"), float("nan")
        return (len(self.sent), len(self.sent) - len(lat), statistics.median(lat),
                _percentile(lat, 0.99), max(lat))

    def over_time(self, width_s: float = 5.0) -> list[float]:
        """p99 ms of the probes sent in each `width_s` of the run: a backlog shows as a rise."""
        if not self.sent:
            return []
        first = min(self.sent.values())
        slices: dict[int, list[float]] = {}
        for key, at in self.sent.items():
            if key in self.arrived:
                slices.setdefault(int((at - first) // width_s), []).append(
                    (self.arrived[key] - at) * 1000)
        return [_percentile(slices[i], 0.99) for i in sorted(slices)]


class Publisher:
    """Readings and button presses, one per message, each device with its own seq."""

    def __init__(self, port: int, root: str) -> None:
        self.root = root
        self.seq: dict[str, int] = {}
        self.client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
        self.client.max_inflight_messages_set(1000)
        self.client.max_queued_messages_set(0)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _next(self, device: str) -> int:
        self.seq[device] = self.seq.get(device, 0) + 1
        return self.seq[device]

    def reading(self, device: str, spo2: float) -> float:
        now = time.time()
        payload = json.dumps({"v": 1, "device_id": device, "readings": [{
            "seq": self._next(device), "measured_at": datetime.fromtimestamp(now, UTC).isoformat(),
            "type": "pulse_oximetry", "values": {"spo2": spo2, "pulse": 70.0}}]})
        self.client.publish(f"{self.root}/v1/{device}/readings", payload, qos=1)
        return now

    def press(self, device: str) -> float:
        now = time.time()
        payload = json.dumps({"v": 1, "device_id": device, "events": [{
            "seq": self._next(device), "measured_at": datetime.fromtimestamp(now, UTC).isoformat(),
            "type": "emergency_button", "data": {}}]})
        self.client.publish(f"{self.root}/v1/{device}/events", payload, qos=1)
        return now

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@dataclass
class StreamRun:
    achieved: float
    stored: int
    offered_total: int
    backlog: int  # evaluation_queue rows when the last reading had been published
    events: int
    by_rule: dict[str, int]
    threshold: Latency
    button: Latency


def alert_latency(port: int, dsn: str, team: UUID, citizens: list[Citizen], workers: int,
                  rate: float, seconds: float, out_of_band: float, button_rate: float,
                  logdir: Path) -> StreamRun:
    """Background readings at `rate`/s for `seconds`, `out_of_band` of them the first low
    SpO2 of a distinct citizen, and `button_rate` presses/s of distinct citizens' buttons."""
    root = f"t{uuid.uuid4().hex[:8]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        reset(conn)
        conn.execute("TRUNCATE evaluation_queue")
    total = int(rate * seconds)
    probe_every = max(1, round(1 / out_of_band))
    press_every = max(1, round(rate / button_rate))
    if total // probe_every > len(citizens) or total // press_every > len(citizens):
        raise RuntimeError("more probes than citizens: raise --citizens")
    threshold = Latency("each out-of-band reading the first low SpO2 of a distinct citizen "
                        "(opens a new threshold:spo2 alert, pushed)")
    button = Latency("each press from a distinct citizen's button (opens a new alert, pushed)")
    procs: list[subprocess.Popen[bytes]] = []
    spawn = multiprocessing.get_context("spawn")
    ready, out = spawn.Event(), spawn.Queue()
    reader = None
    try:
        procs.append(start_engine(dsn, port, root, logdir))
        procs.extend(start_workers("telecare", workers, port, root, dsn, logdir))
        api, base = start_api(dsn, port, root, logdir)
        procs.append(api)
        reader = spawn.Process(target=read_stream,
                               args=(f"{base}/v1/teams/{team}/alerts/stream", ready, out))
        reader.start()
        if not ready.wait(30):
            raise RuntimeError("the SSE client did not connect")
        publisher = Publisher(port, root)
        probes = presses = 0
        start = time.monotonic()
        for index in range(total):
            pause = start + index / rate - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            if index % probe_every == probe_every - 1:
                citizen = citizens[probes]
                probes += 1
                at = publisher.reading(citizen.oximeter, OUT_OF_BAND_SPO2)
                threshold.sent[(str(citizen.id), "threshold:spo2")] = at
            else:
                publisher.reading(citizens[index % len(citizens)].oximeter, IN_BAND_SPO2)
            if index % press_every == press_every // 2:
                citizen = citizens[presses]
                presses += 1
                button.sent[(str(citizen.id), "emergency_button")] = publisher.press(citizen.button)
        achieved = total / (time.monotonic() - start)
        with psycopg.connect(dsn, autocommit=True) as conn:
            backlog = queued(conn)
        events, by_rule = _collect(out, threshold, button)
        publisher.close()
        with psycopg.connect(dsn, autocommit=True) as conn:
            stored = committed(conn, "telecare")
            _received(conn, threshold, button)
        return StreamRun(achieved, stored, total, backlog, events, by_rule, threshold, button)
    finally:
        if reader is not None and reader.is_alive():
            reader.terminate()
        stop(procs)


RECEIVED_PROBES = """
SELECT citizen_id::text, 'threshold:spo2', min(received_at) FROM readings
 WHERE metric = 'spo2' AND value = %s GROUP BY citizen_id
UNION ALL
SELECT citizen_id::text, 'emergency_button', min(received_at) FROM device_events
 WHERE kind = 'emergency_button' GROUP BY citizen_id"""


def _received(conn: psycopg.Connection[Any], *latencies: Latency) -> None:
    """Each probe's receive time at the ingest worker, from what it stored."""
    for citizen, rule, at in conn.execute(RECEIVED_PROBES, (OUT_OF_BAND_SPO2,)):
        for latency in latencies:
            if (citizen, rule) in latency.sent:
                latency.received[(citizen, rule)] = at.timestamp()


def _collect(out: Any, *latencies: Latency, grace_s: float = GRACE_S) -> tuple[int, dict[str, int]]:
    """Reads the client's events until every probe's has come (or `grace_s` after the last
    publish): (events, events per rule). Records the first pushed event per (citizen, rule)."""
    events, by_rule = 0, dict[str, int]()
    deadline = time.monotonic() + grace_s
    wanted = {key for latency in latencies for key in latency.sent}
    seen: set[tuple[str, str]] = set()
    while time.monotonic() < deadline and not wanted <= seen:
        try:
            at, data = out.get(timeout=0.2)
        except queue.Empty:
            continue
        events += 1
        by_rule[data["rule"]] = by_rule.get(data["rule"], 0) + 1
        key = (data["citizen_id"], data["rule"])
        if data["pushed"] and key not in seen:
            seen.add(key)
            for latency in latencies:
                if key in latency.sent:
                    latency.arrived[key] = at
                    latency.recorded[key] = datetime.fromisoformat(data["at"]).timestamp()
    return events, by_rule


# --- the run ---------------------------------------------------------------------------------

@contextmanager
def bench_setup(devices: int, citizens: int) -> Iterator[tuple[str, list[str], UUID, list[Citizen]]]:
    """A fresh database: bench.ingest's scales (heart-failure plan) and `citizens` on a COPD
    plan, all in one care team; (dsn, scale ids, team, COPD citizens)."""
    with bench_database(devices) as (dsn, scales):
        with psycopg.connect(dsn, autocommit=True) as conn:
            team = alerts_service.create_team(conn, "Bench team", datetime.now(UTC)).id
        plan_citizens(dsn, scales, "heart_failure", team)
        yield dsn, scales, team, enrol_copd(dsn, citizens, team)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=15_000, help="per drain")
    parser.add_argument("--devices", type=int, default=200, help="scales for the drains")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeat", type=int, default=3,
                        help="drains per system and worker count (0: the latency run only)")
    parser.add_argument("--rate", type=float, default=2000.0, help="background readings/s")
    parser.add_argument("--seconds", type=float, default=20.0, help="of background")
    parser.add_argument("--out-of-band", type=float, default=0.01, help="fraction of readings")
    parser.add_argument("--button-rate", type=float, default=3.0, help="presses/s")
    parser.add_argument("--stream-workers", type=int, default=1,
                        help="ingest workers during the latency run")
    parser.add_argument("--logs", type=Path, default=None,
                        help="keep the workers', engine's and API's logs in this directory")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 3,000 messages, 1 worker, 1 drain, 500/s for 5 s "
                             "(2%% out of band)")
    args = parser.parse_args()
    if args.quick:
        args.messages, args.workers, args.repeat = 3000, [1], 1
        args.rate, args.seconds, args.out_of_band = 500.0, 5.0, 0.02
    total = int(args.rate * args.seconds)
    citizens = max(total * args.out_of_band, args.button_rate * args.seconds) * 1.1 + 10

    began = time.monotonic()
    drains: dict[tuple[str, int], list[tuple[float, float | None]]] = {}
    with tempfile.TemporaryDirectory() as tmp, embedded_broker(Path(tmp) / "mqtt") as (port, _), \
            bench_setup(args.devices, int(citizens)) as (dsn, scales, team, copd):
        logs = args.logs or Path(tmp)
        logs.mkdir(parents=True, exist_ok=True)
        for workers in args.workers:
            for round_ in range(args.repeat):
                # Rotated: on a shared 2-core machine a slow minute must not hit one system only.
                order = SYSTEMS[round_ % 3:] + SYSTEMS[:round_ % 3]
                for system in order:
                    result = drain(system, workers, port, dsn, scales, args.messages, logs)
                    drains.setdefault((system, workers), []).append(result)
                    engine = "" if result[1] is None else f", engine done {result[1]:8.0f}/s"
                    print(f"  {system:15s} workers={workers} drain {round_ + 1}: "
                          f"{result[0]:8.0f}/s{engine}", flush=True)
        run = alert_latency(port, dsn, team, copd, args.stream_workers, args.rate, args.seconds,
                            args.out_of_band, args.button_rate, logs)
    report(drains, run, args, time.monotonic() - began)


def report(drains: dict[tuple[str, int], list[tuple[float, float | None]]], run: StreamRun,
           args: argparse.Namespace, elapsed: float) -> None:
    load = os.getloadavg()
    print(f"\nAlert benchmark{' (--quick)' if args.quick else ''}: {os.cpu_count()} CPUs, load "
          f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at the end, {elapsed:.0f} s in all\n")
    if drains:
        _report_drains(drains, args)
    _report_stream(run, args)


def _report_drains(drains: dict[tuple[str, int], list[tuple[float, float | None]]],
                   args: argparse.Namespace) -> None:
    print(f"Ingest with `telecare alerts` running (telecare+alerts) vs the bare baseline, and "
          f"Telecare's ingest alone: {args.messages} messages drained {args.repeat}x per system "
          f"(median, range); target telecare+alerts >= 75% of the baseline\n")
    print("| workers | system | readings/s | range | vs baseline | engine evaluated all, items/s |")
    print("|---|---|---|---|---|---|")
    for workers in args.workers:
        base = statistics.median(r[0] for r in drains[("baseline", workers)])
        for system in SYSTEMS:
            runs = drains[(system, workers)]
            rates = [r[0] for r in runs]
            median = statistics.median(rates)
            engine = [r[1] for r in runs if r[1] is not None]
            print(f"| {workers} | {system} | {median:,.0f} | {min(rates):,.0f}–{max(rates):,.0f} | "
                  f"{median / base:.0%} | "
                  f"{f'{statistics.median(engine):,.0f}' if engine else '–'} |")


def _report_stream(run: StreamRun, args: argparse.Namespace) -> None:
    print(f"\nAlerts on the SSE stream: {args.rate:.0f} readings/s offered for {args.seconds:.0f} s "
          f"(achieved {run.achieved:.0f}/s; {run.stored} reading rows stored, 2 per reading of "
          f"{run.offered_total}; {run.backlog} items in the evaluation queue after the last "
          f"publish), "
          f"{args.stream_workers} ingest worker(s), engine, API (uvicorn) and an httpx client; "
          f"{run.events} events on the stream {dict(sorted(run.by_rule.items()))}")
    for name, latency, target in (
            (f"out of band ({args.out_of_band:.0%} of readings) -> alert", run.threshold, 250),
            (f"emergency button ({args.button_rate:.0f}/s) -> alert", run.button, 1000)):
        n, missing, p50, p99, worst = latency.figures()
        verdict = "ok" if missing == 0 and p99 <= target else "MISSED"
        print(f"  {name}: n={n}, missing (not on the stream {GRACE_S:.0f} s after the last "
              f"publish)={missing}, p50 {p50:.1f} ms, p99 {p99:.1f} ms, max "
              f"{worst:.1f} ms (target p99 <= {target} ms: {verdict})\n    design: {latency.design}"
              f"\n    stages: {latency.stages()}"
              f"\n    p99 ms per 5 s of the run: "
              f"{', '.join(f'{v:.0f}' for v in latency.over_time())}")


if __name__ == "__main__":
    main()
