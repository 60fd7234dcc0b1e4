"""`telecare migrate | ingest | alerts | api | users | citizens | devices | broker | simulate | demo |
nab | evaluate | schema`."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar
from uuid import UUID

from core.logging import configure_logging
from core.migrations import migrate
from core.settings import Settings
from simulators.fleet import FAULTS

log = logging.getLogger("telecare")


def _stop_on_signals() -> threading.Event:
    """An event set by SIGINT or SIGTERM, so every command stops cleanly the same way."""
    stop = threading.Event()

    def handle(signum: int, _frame: object) -> None:
        log.info("received %s, stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGINT, handle)
    signal.signal(signal.SIGTERM, handle)
    return stop


def cmd_migrate(settings: Settings, _args: argparse.Namespace) -> int:
    applied = migrate(settings.database_dsn(), storage=settings.storage)
    print(f"applied {len(applied)} migration(s): {', '.join(applied) or 'none pending'}")
    if passwords := settings.login_passwords():
        import psycopg

        from core.roles import enable_logins

        with psycopg.connect(settings.database_dsn(), autocommit=True) as conn:
            print(f"logins: {', '.join(enable_logins(conn, passwords))}")
    return 0


def cmd_ingest(settings: Settings, _args: argparse.Namespace) -> int:
    from ingest.worker import IngestWorker
    from telecare.maintenance import start_maintenance

    stop = _stop_on_signals()
    if settings.ingest_maintenance:
        start_maintenance(settings, stop)
    IngestWorker(settings).run(stop)
    return 0


def cmd_alerts(settings: Settings, _args: argparse.Namespace) -> int:
    from telecare.alerting import run_alerting

    run_alerting(settings, _stop_on_signals())
    return 0


def cmd_alerts_replay(settings: Settings, args: argparse.Namespace) -> int:
    from alerts.replay import ReplayRequest, parse_proposed, replay
    from core.clock import system_clock

    request = ReplayRequest(start=args.start, end=args.end, citizen_ids=tuple(args.citizen or ()),
                            proposed=parse_proposed(args.thresholds) if args.thresholds else None,
                            tick_s=args.tick_s or settings.alerts_replay_tick_s,
                            requested_by=args.requested_by)
    result = replay(settings.database_dsn(), request, system_clock)
    print(json.dumps(result.summary(), indent=2, default=str))
    return 0


def cmd_alerts_requeue(settings: Settings, args: argparse.Namespace) -> int:
    import psycopg

    from alerts.context_repository import requeue

    with psycopg.connect(settings.for_process("alerts").database_dsn(), autocommit=True) as conn:
        moved = requeue(conn, args.citizen)
    print(f"requeued {moved} item(s) for evaluation")
    return 0


def cmd_maintain(settings: Settings, args: argparse.Namespace) -> int:
    from telecare.maintenance import maintain_forever, maintain_once

    if args.forever:
        maintain_forever(settings, _stop_on_signals())
        return 0
    outcomes = maintain_once(settings)
    if outcomes is None:
        print("another process is running maintenance; nothing done")
        return 0
    for outcome in outcomes:
        print(f"{outcome.job}: {'ok' if outcome.ok else 'FAILED'} ({outcome.done} done"
              f"{'' if outcome.ok else f'; {outcome.error_class} {outcome.sqlstate}'})")
    return 0 if all(outcome.ok for outcome in outcomes) else 1


def cmd_api(settings: Settings, _args: argparse.Namespace) -> int:
    import uvicorn

    from api.app import create_app

    uvicorn.run(create_app(settings), host=settings.api_host, port=settings.api_port,
                log_level="info")
    return 0


def cmd_simulate(settings: Settings, args: argparse.Namespace) -> int:
    from simulators.fleet import FleetOptions, run_fleet

    citizen_ids = (json.loads(Path(args.citizen_ids).read_text(encoding="utf-8"))
                   if args.citizen_ids else None)
    options = FleetOptions(citizens=args.citizens, seed=args.seed, speed=args.speed,
                           days=args.days, faults=tuple(args.fault or ()),
                           ground_truth=args.ground_truth, backfill_days=args.backfill_days,
                           citizen_ids=citizen_ids)
    run_fleet(settings, options, _stop_on_signals())
    return 0


def cmd_provision(settings: Settings, args: argparse.Namespace) -> int:
    from simulators.population import build_fleet
    from telecare.provision import provision_fleet

    fleet = build_fleet(args.citizens, args.seed)
    created = provision_fleet(settings.database_dsn(), fleet)
    print(f"registered {created} citizen(s) of the simulated fleet (seed {args.seed})")
    return 0


def cmd_demo(settings: Settings, args: argparse.Namespace) -> int:
    from telecare.demo import run_demo

    return run_demo(settings, citizens=args.citizens, speed=args.speed, seed=args.seed,
                    stop=_stop_on_signals())


def cmd_schema(_settings: Settings, args: argparse.Namespace) -> int:
    from telecare.schema import write_schemas

    for path in write_schemas(Path(args.out)):
        print(path)
    return 0


def _aware_time(text: str) -> datetime:
    """An RFC 3339 time with its offset (a naive time would be read in the server's zone)."""
    at = datetime.fromisoformat(text)
    if at.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} has no UTC offset")
    return at


def _password(args: argparse.Namespace) -> str:
    """From standard input (a line), or asked for twice on a terminal."""
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\r\n")
    import getpass

    first = getpass.getpass(f"password for {args.username}: ")
    if getpass.getpass("again: ") != first:
        raise SystemExit("the passwords differ")
    return first


def cmd_users(settings: Settings, args: argparse.Namespace) -> int:
    import psycopg

    from api import relations
    from api.auth import service
    from core.clock import system_clock
    from core.errors import TelecareError

    with psycopg.connect(settings.database_dsn(), autocommit=True) as conn:
        try:
            if args.users_command == "add":
                user = service.create_user(conn, args.username, args.name, args.role,
                                           _password(args), system_clock())
                print(f"added {user.username} ({user.role}) {user.id}")
            elif args.users_command == "password":
                service.set_password(conn, args.username, _password(args), system_clock())
                print(f"new password for {args.username}; its sign-ins are revoked")
            elif args.users_command == "disable":
                service.disable_user(conn, args.username, system_clock())
                print(f"disabled {args.username}; its sign-ins are revoked")
            elif args.users_command == "enable":
                service.enable_user(conn, args.username)
                print(f"enabled {args.username}")
            elif args.users_command == "unlock":
                service.unlock(conn, args.username)
                print(f"unlocked {args.username}")
            elif args.users_command in ("join", "leave"):
                change = relations.add_member if args.users_command == "join" else (
                    lambda conn, name, team, _now: relations.remove_member(conn, name, team))
                change(conn, args.username, args.team, system_clock())
                print(f"{args.username} {args.users_command}s care team {args.team}")
            elif args.users_command == "is-citizen":
                relations.link_citizen(conn, args.username, args.citizen)
                print(f"{args.username} is citizen {args.citizen}")
            elif args.users_command == "proxy":
                proxy = relations.grant_proxy(conn, args.citizen, args.username, args.kinds,
                                              args.start or system_clock(), args.end, "cli",
                                              system_clock())
                print(f"proxy {proxy.id}: {args.username} sees {','.join(proxy.kinds)} of "
                      f"citizen {args.citizen}")
            else:
                blocked = service.blocked_usernames(conn, system_clock())
                for user in service.users(conn):
                    state = "disabled" if user.disabled_at else (
                        "blocked" if user.username in blocked else "active")
                    print(f"{user.username}\t{user.role}\t{state}\t{user.display_name}")
        except TelecareError as exc:
            print(f"telecare users: {exc}", file=sys.stderr)
            return 2
    return 0


def _apply_broker_config(settings: Settings, args: argparse.Namespace, conn: Any) -> None:
    """Write passwd and the dynamic-security file (and a mosquitto.conf) into args.out_dir and
    apply the changes to a running broker; SIGHUP it if asked."""
    from telecare import broker

    out = Path(args.out_dir)
    written = broker.write_auth_files(conn, out, settings,
                                      broker.parse_owner(getattr(args, "owner", None)))
    print(f"{out / broker.PASSWD}, {out / broker.ACL}: {written.devices} device(s), services "
          f"{', '.join(written.services) or 'none'}; {'changed' if written.changed else 'unchanged'}")
    if not getattr(args, "auth_only", True):
        certs = Path(args.certs) if args.certs else out / "certs"
        conf = broker.render_conf(out, tls_port=None if args.no_tls else args.tls_port,
                                  plain_port=args.plain_port, bind=args.bind or None,
                                  certs=certs, run_as=args.run_as, settings=settings)
        (out / "data").mkdir(exist_ok=True)
        broker.write_atomically(out / broker.CONF, conf, 0o644)
        print(out / broker.CONF)
    pid = broker.broker_pid(args.pid, Path(args.pid_file) if args.pid_file else None)
    if pid is not None:
        broker.reload_broker(pid)
        print(f"broker (pid {pid}) reloads its password file")


def cmd_citizens_erase(settings: Settings, args: argparse.Namespace) -> int:
    import psycopg

    from api.erasure import Retention
    from core.clock import system_clock
    from core.errors import TelecareError
    from telecare.erasure import erase

    with psycopg.connect(settings.database_dsn()) as conn:  # the owner: it deletes readings
        try:
            report = erase(conn, args.citizen_id, Retention.of(settings), system_clock(),
                           dry_run=args.dry_run)
        except TelecareError as exc:
            print(f"telecare citizens erase: {exc}", file=sys.stderr)
            return 2
    print(report.model_dump_json(indent=2))
    return 0


def cmd_device_credentials(settings: Settings, args: argparse.Namespace) -> int:
    import psycopg

    from core.clock import system_clock
    from core.errors import TelecareError
    from devices import credentials

    with psycopg.connect(settings.database_dsn(), autocommit=True) as conn:
        try:
            if args.credentials_command == "list":
                for credential in credentials.credentials(conn, args.device_id):
                    state = "in force" if credential.in_force else (
                        f"revoked {credential.revoked_at:%Y-%m-%dT%H:%M:%S%z} by {credential.revoked_by}")
                    print(f"{credential.id}\t{credential.issued_at:%Y-%m-%dT%H:%M:%S%z}\t"
                          f"{credential.issued_by}\t{state}")
                return 0
            if args.credentials_command == "revoke":
                credentials.revoke(conn, args.device_id, "cli", system_clock())
                print(f"revoked the credentials of {args.device_id}")
            else:
                change = credentials.issue if args.credentials_command == "issue" else credentials.rotate
                issued = change(conn, args.device_id, "cli", system_clock())
                # Shown once: only its hash is kept.
                print(f"username: {issued.username}\nsecret: {issued.secret}")
                print("store the secret on the device now: it is not shown again", file=sys.stderr)
        except TelecareError as exc:
            print(f"telecare devices credentials: {exc}", file=sys.stderr)
            return 2
        if args.out_dir:
            _apply_broker_config(settings, args, conn)
        else:
            print("the broker admits the change after `telecare broker config DIR --pid-file F`",
                  file=sys.stderr)
    return 0


def cmd_broker_config(settings: Settings, args: argparse.Namespace) -> int:
    import psycopg

    if args.watch:
        from telecare import broker

        broker.watch(settings, Path(args.out_dir), args.watch, args.pid,
                     Path(args.pid_file) if args.pid_file else None, _stop_on_signals(),
                     broker.parse_owner(args.owner))
        return 0
    with psycopg.connect(settings.database_dsn(), autocommit=True) as conn:
        _apply_broker_config(settings, args, conn)
    return 0


def cmd_broker_certs(_settings: Settings, args: argparse.Namespace) -> int:
    from core.clock import system_clock
    from telecare.certs import make_certs

    issued = make_certs(Path(args.out_dir), tuple(args.names), system_clock())
    print(f"{'created' if issued.ca_created else 'kept'} CA {issued.ca}")
    print(f"issued {issued.server} for {', '.join(issued.names)}")
    return 0


T = TypeVar("T")


def _nab_input(command: str, read: Callable[[], T]) -> T | None:
    """What `read` gives, or None once the refusal of the input is told (then exit 2)."""
    from anomaly.errors import InvalidNabInput

    try:
        return read()
    except (InvalidNabInput, OSError) as exc:
        print(f"telecare nab {command}: {exc}", file=sys.stderr)
        return None


def cmd_nab_score(_settings: Settings, args: argparse.Namespace) -> int:
    from anomaly.nab.files import load_corpus
    from anomaly.nab.scoring import PROFILES, score_corpus

    corpus = _nab_input("score", lambda: load_corpus(Path(args.out_dir), Path(args.labels)))
    if corpus is None:
        return 2
    print(f"{len(corpus)} files, {sum(len(s.windows) for s in corpus)} windows")
    print(f"{'profile':<20} {'threshold':>10} {'raw':>10} {'score':>7}")
    for profile in PROFILES:
        result = score_corpus(corpus, profile)
        print(f"{profile.name:<20} {result.threshold:>10.6f} {result.raw:>10.4f} {result.normalised:>7.2f}")
    return 0


def cmd_nab_detect(_settings: Settings, args: argparse.Namespace) -> int:
    from anomaly.nab.detect import detect_tree

    written = _nab_input("detect", lambda: detect_tree(Path(args.in_dir), Path(args.out_dir)))
    if written is None:
        return 2
    print(f"{len(written)} files scored into {args.out_dir}")
    return 0


def cmd_evaluate(settings: Settings, args: argparse.Namespace) -> int:
    import time

    from evaluation import report
    from evaluation.population import default_limits
    from evaluation.service import Options, evaluate

    out = Path(args.out)
    options = Options(admin_dsn=args.dsn or settings.database_dsn(), citizens=args.citizens,
                      days=args.days, seeds=tuple(args.seeds), noise=args.noise,
                      nurses=args.nurses, out=out, keep=args.keep, jobs=args.jobs,
                      tick_s=args.tick_s, warmup_days=args.warmup_days,
                      resolve_after=(timedelta(hours=args.resolve_after_h)
                                     if args.resolve_after_h > 0 else None),
                      limits=default_limits(settings))
    began = time.monotonic()
    results = evaluate(options)
    wall_s = time.monotonic() - began
    report.write(results, options, wall_s, out)
    print(report.text_table(results))
    print(f"{report.TARGET}\nreport and figures in {out}; wall time {wall_s:.0f} s")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="telecare", description=__doc__)
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument("--json-logs", action="store_true", help="log JSON lines (production)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("migrate", help="apply database migrations").set_defaults(run=cmd_migrate)
    sub.add_parser("ingest", help="run one ingest worker (and the hourly maintenance jobs)"
                   ).set_defaults(run=cmd_ingest)
    maintain = sub.add_parser("maintain", help="run the maintenance jobs once (compression, "
                              "partitions, dead-letter retention)")
    maintain.add_argument("--forever", action="store_true",
                          help="every hour until stopped (where ingest runs without them)")
    maintain.set_defaults(run=cmd_maintain)
    sub.add_parser("api", help="serve the HTTP API").set_defaults(run=cmd_api)

    alerts = sub.add_parser("alerts", help="run the alert engine (start two: one leads); "
                            "'alerts replay' runs the rules over a stored period")
    alerts.set_defaults(run=cmd_alerts)
    alerts_sub = alerts.add_subparsers(dest="alerts_command")
    replay = alerts_sub.add_parser("replay", help="the rules over a stored period as if live, "
                                   "into a result set of its own that notifies nobody")
    replay.add_argument("--from", dest="start", required=True, type=_aware_time,
                        help="start of the period (RFC 3339, with offset)")
    replay.add_argument("--to", dest="end", required=True, type=_aware_time,
                        help="end of the period (RFC 3339, with offset)")
    replay.add_argument("--citizen", action="append", type=UUID,
                        help="only this citizen (repeatable; default every citizen)")
    replay.add_argument("--thresholds", default=None,
                        help='proposed bands instead of those in force, JSON '
                        '{"metric": {"alert_low": .., "warning_low": .., ...}}')
    replay.add_argument("--tick-s", type=float, default=None,
                        help="time-driven rules every this many measured-time seconds")
    replay.add_argument("--requested-by", default="cli")
    replay.set_defaults(run=cmd_alerts_replay)
    requeue = alerts_sub.add_parser(
        "requeue", help="put the items the engine could not evaluate (evaluation_failures) back "
                        "in its queue, once the defect is fixed")
    requeue.add_argument("--citizen", type=UUID, default=None, help="only this citizen's")
    requeue.set_defaults(run=cmd_alerts_requeue)

    users = sub.add_parser("users", help="people and integrations who sign in to the API")
    users.set_defaults(run=cmd_users, users_command="list")
    users_sub = users.add_subparsers(dest="users_command")
    users_sub.add_parser("list", help="every user, role and state")
    add = users_sub.add_parser("add", help="a new user; the password is read from standard "
                               "input (or asked for on a terminal)")
    add.add_argument("username")
    add.add_argument("--role", required=True, help="administrator, nurse, project_lead, "
                     "citizen, relative or service")
    add.add_argument("--name", required=True, help="the name shown to others")
    for name, text in (("password", "set a new password (read as for add)"),
                       ("disable", "no more sign-ins; revokes the user's refresh tokens"),
                       ("enable", "allow sign-ins again"),
                       ("unlock", "forget the failed sign-ins that hold the name up")):
        users_sub.add_parser(name, help=text).add_argument("username")
    for name, text in (("join", "the nurse works in the care team"),
                       ("leave", "the nurse no longer works in the care team")):
        member = users_sub.add_parser(name, help=text)
        member.add_argument("username")
        member.add_argument("team", type=UUID)
    linked = users_sub.add_parser("is-citizen", help="the citizen user is this citizen")
    linked.add_argument("username")
    linked.add_argument("citizen", type=UUID)
    proxy = users_sub.add_parser("proxy", help="the relative may see the citizen's data of "
                                 "these kinds measured from --from (default now) until --to")
    proxy.add_argument("username")
    proxy.add_argument("citizen", type=UUID)
    proxy.add_argument("kinds", nargs="+", choices=["readings", "alerts", "devices", "care"])
    proxy.add_argument("--from", dest="start", type=_aware_time, default=None)
    proxy.add_argument("--to", dest="end", type=_aware_time, default=None)

    citizens = sub.add_parser("citizens", help="citizen rights")
    citizens_sub = citizens.add_subparsers(dest="citizens_command", required=True)
    erase_cmd = citizens_sub.add_parser(
        "erase", help="erase a citizen within the retention rules (TELECARE_RETENTION_*): "
        "stop processing, delete what is past its retention, print the report (JSON)")
    erase_cmd.add_argument("citizen_id", type=UUID)
    erase_cmd.add_argument("--dry-run", action="store_true",
                           help="only the report: what would be deleted and kept; no change")
    erase_cmd.set_defaults(run=cmd_citizens_erase)

    reload_args = argparse.ArgumentParser(add_help=False)
    reload_args.add_argument("--pid", type=int, default=None,
                             help="send this broker process SIGHUP after writing")
    reload_args.add_argument("--pid-file", default=None,
                             help="send the broker whose pid this file holds SIGHUP after writing")

    devices = sub.add_parser("devices", help="the device registry")
    devices_sub = devices.add_subparsers(dest="devices_command", required=True)
    device_credentials = devices_sub.add_parser(
        "credentials", help="a device's broker credentials: issue, rotate, revoke, list")
    device_credentials.set_defaults(run=cmd_device_credentials)
    credentials_sub = device_credentials.add_subparsers(dest="credentials_command", required=True)
    for name, text in (("issue", "a new secret for a device without one (shown once)"),
                       ("rotate", "a new secret (shown once); the old one is revoked at once"),
                       ("revoke", "the device can no longer log in (after the broker reloads)")):
        change = credentials_sub.add_parser(name, help=text, parents=[reload_args])
        change.add_argument("device_id")
        change.add_argument("--broker-config", dest="out_dir", default=None,
                            help="then write passwd and dynamic-security.json into this directory")
    credentials_sub.add_parser("list", help="the device's credentials, newest first"
                               ).add_argument("device_id")

    broker_cmd = sub.add_parser("broker", help="the broker's password file, access rules and certificates")
    broker_sub = broker_cmd.add_subparsers(dest="broker_command", required=True)
    config = broker_sub.add_parser("config", parents=[reload_args],
                                   help="write passwd, dynamic-security.json and mosquitto.conf from the "
                                        "registry")
    config.add_argument("out_dir")
    config.add_argument("--auth-only", action="store_true",
                        help="passwd and dynamic-security.json only (compose.yaml: "
                             "deploy/mosquitto.conf reads them)")
    config.add_argument("--tls-port", type=int, default=8883)
    config.add_argument("--no-tls", action="store_true", help="no TLS listener")
    config.add_argument("--certs", default=None, help="ca.crt, server.crt, server.key "
                        "(default OUT_DIR/certs; `telecare broker certs` makes them)")
    config.add_argument("--plain-port", type=int, default=1883)
    config.add_argument("--bind", default="127.0.0.1", help="listen on this address only "
                        "('' for every interface)")
    config.add_argument("--run-as", default=None, help="the user Mosquitto drops to")
    config.add_argument("--owner", default=None, metavar="UID:GID",
                        help="give both files to the broker's user (compose: 1883:1883)")
    config.add_argument("--watch", type=float, default=None, metavar="SECONDS",
                        help="write both files again every SECONDS, applying a change")
    config.set_defaults(run=cmd_broker_config)
    certs = broker_sub.add_parser("certs", help="a local CA and a broker server certificate "
                                  "for a test setup")
    certs.add_argument("out_dir")
    certs.add_argument("names", nargs="*", help="more host names or addresses devices use")
    certs.set_defaults(run=cmd_broker_certs)

    fleet_args = argparse.ArgumentParser(add_help=False)
    fleet_args.add_argument("--citizens", type=int, default=20)
    fleet_args.add_argument("--seed", type=int, default=1)

    sim = sub.add_parser("simulate", parents=[fleet_args],
                         help="run simulated citizens' devices over MQTT")
    sim.add_argument("--speed", type=float, default=60.0,
                     help="simulated seconds per real second")
    sim.add_argument("--days", type=float, default=None,
                     help="replay this many days up to now, then stop (default: go live)")
    sim.add_argument("--backfill-days", type=float, default=1.0,
                     help="when live: replay this many days first")
    sim.add_argument("--fault", action="append", choices=FAULTS)
    sim.add_argument("--ground-truth", default=None,
                     help="append JSON lines here as the run goes: citizens, episodes, faults")
    sim.add_argument("--citizen-ids", default=None,
                     help="JSON file {citizen key: registry citizen id} to name citizens by "
                     "id in the ground truth too")
    sim.set_defaults(run=cmd_simulate)

    sub.add_parser("provision", parents=[fleet_args],
                   help="register the simulated fleet's citizens and devices"
                   ).set_defaults(run=cmd_provision)

    demo = sub.add_parser("demo", help="everything at once, embedded servers if none configured")
    demo.add_argument("--citizens", type=int, default=12)
    demo.add_argument("--seed", type=int, default=1)
    demo.add_argument("--speed", type=float, default=2000.0,
                      help="replay the last two days at this many simulated seconds per second")
    demo.set_defaults(run=cmd_demo)

    nab = sub.add_parser("nab", help="the Numenta Anomaly Benchmark (docs/nab.md)")
    nab_sub = nab.add_subparsers(dest="nab_command", required=True)
    nab_score = nab_sub.add_parser("score", help="score a detector's results with NAB's rules: the "
                                   "three profiles, each with its threshold optimised on the corpus")
    nab_score.add_argument("out_dir", help="results: one CSV with an anomaly_score column per labelled file")
    nab_score.add_argument("labels", help="labels.json: file -> list of [start, end] windows")
    nab_score.set_defaults(run=cmd_nab_score)
    nab_detect = nab_sub.add_parser("detect", help="score every timestamp,value CSV with the anomaly "
                                    "detector, causally, row by row")
    nab_detect.add_argument("in_dir", help="NAB data: timestamp,value CSVs, searched recursively")
    nab_detect.add_argument("out_dir", help="where each file goes, at the same relative path, with an "
                            "added anomaly_score column")
    nab_detect.set_defaults(run=cmd_nab_detect)

    evaluate = sub.add_parser("evaluate", help="alert quality of the rules on simulated "
                              "populations, each in a fresh database (docs/evaluation.md)")
    evaluate.add_argument("--citizens", type=int, default=60, help="per population (5 conditions)")
    evaluate.add_argument("--days", type=float, default=60.0)
    evaluate.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3],
                          help="the first is the development seed")
    evaluate.add_argument("--noise", type=float, default=2.0, help="factor on measurement noise "
                          "of one more population on the development seed (1: none)")
    evaluate.add_argument("--nurses", type=int, default=2, help="team size for alerts per nurse-day")
    evaluate.add_argument("--warmup-days", type=float, default=30.0,
                          help="days measured before the evaluated period, not replayed: the "
                          "history the personal baselines learn from first")
    evaluate.add_argument("--tick-s", type=float, default=1800.0,
                          help="time-driven rules every this many measured-time seconds")
    evaluate.add_argument("--resolve-after-h", type=float, default=24.0,
                          help="the simulated nurse resolves each alert this many hours after it "
                          "opened (0: nobody resolves)")
    evaluate.add_argument("--out", default="evaluation-report")
    evaluate.add_argument("--dsn", default=None, help="admin DSN of the server to create the "
                          "databases on (default the configured database's)")
    evaluate.add_argument("--keep", action="store_true", help="keep the databases")
    evaluate.add_argument("--jobs", type=int, default=2, help="populations evaluated at once")
    evaluate.set_defaults(run=cmd_evaluate)

    schema = sub.add_parser("schema", help="write the protocol's JSON Schemas")
    schema.add_argument("--out", default="docs/schema")
    schema.set_defaults(run=cmd_schema)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    configure_logging(args.log_level, json_lines=args.json_logs)
    settings = Settings()
    code: int = args.run(settings, args)
    return code


if __name__ == "__main__":
    sys.exit(main())
