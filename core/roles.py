"""Least privilege in the database: each process works under its own role (docs/access.md).

The migrating user owns the schema. The API, ingest and the alert process each connect under a
role that holds only what that process does to each table, so that a defect or an injection in
one of them cannot, say, rewrite the audit log (the API may only add to it and read it), read
password hashes (ingest), or delete readings (anyone but the owner's retention job).

`PRIVILEGES` is the one place that says who may do what to which table, in PostgreSQL's own
letters: r SELECT, a INSERT, w UPDATE, d DELETE (SELECT … FOR UPDATE / FOR SHARE
takes UPDATE). Every table must be named here (a test checks),
so a table added later gets privileges on purpose, not by accident. `apply_privileges` runs
after every migration (core/migrations.py) and makes the grants exactly these: what is not
listed is revoked.

In a deployment each process logs in as a user that is a member of its role only. Where one
login serves them all (the demo, the tests, a developer's database), the process switches to
its role when it connects (`process_dsn`, `-c role=…`), which a superuser login could undo: the
switch protects against our own mistakes there, the separate logins against an attacker.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

log = logging.getLogger(__name__)

Process = Literal["api", "ingest", "alerts"]
ROLES: dict[Process, str] = {"api": "telecare_api", "ingest": "telecare_ingest",
                             "alerts": "telecare_alerts"}
_LETTERS = {"r": "SELECT", "a": "INSERT", "w": "UPDATE", "d": "DELETE"}

# table: (api, ingest, alerts)
PRIVILEGES: dict[str, tuple[str, str, str]] = {
    # the ledger of the schema itself: the owner's
    "schema_migrations": ("r", "r", "r"),
    "storage_backend": ("r", "r", "r"),
    "maintenance_jobs": ("r", "", ""),
    # the registry: managed over the API; ingest reads it and keeps device status
    # (never deleted over the API: a citizen is discharged, a pairing ended, both kept; only
    # the owner's erasure deletes)
    "citizens": ("raw", "r", "r"),
    "care_teams": ("raw", "", "r"),
    "devices": ("raw", "r", "r"),
    "device_pairings": ("raw", "r", "r"),
    "device_status": ("r", "raw", "r"),
    "attribution_changes": ("ra", "", ""),
    # broker credentials of devices (hashes only): issued, rotated, revoked over the API;
    # `telecare broker config` reads them as the owner; no device-facing process needs them.
    # The API writes the hash but never reads it back (HIDDEN_COLUMNS).
    "device_credentials": ("raw", "", ""),
    # what devices send: written by ingest only; re-pairing re-attributes (the API)
    "readings": ("rw", "ra", "r"),
    "device_events": ("rw", "ra", "r"),
    "dead_letters": ("r", "raw", "r"),  # a repeated payload counts up
    "dead_letter_items": ("r", "ra", ""),
    # (the engine claims rows FOR UPDATE, which takes UPDATE; `alerts requeue` adds)
    "evaluation_queue": ("a", "a", "rawd"),
    # items the engine could not evaluate (a defect), parked with their error; requeued later
    "evaluation_failures": ("r", "", "rad"),
    # care: set by nurses over the API, read by the rules
    "citizen_plans": ("raw", "", "r"),  # a plan ends; it is not deleted
    "thresholds": ("ra", "", "r"),
    "alert_pauses": ("raw", "", "rw"),
    "alert_configuration_version": ("rw", "", "r"),
    "escalation_policies": ("raw", "", "r"),
    # alerts: raised by the engine, handled by nurses over the API
    "alerts": ("rw", "", "raw"),
    "alert_findings": ("r", "", "ra"),
    "alert_history": ("raw", "", "raw"),
    "webhooks": ("raw", "", "r"),
    "webhook_deliveries": ("raw", "", "raw"),
    "webhook_attempts": ("r", "", "ra"),
    "screen_messages": ("raw", "", "raw"),  # the engine queues reminders
    # personal baselines: retrained by the engine (a row per series, rewritten), shown over the API
    "anomaly_baselines": ("r", "", "rawd"),
    # what-if runs over the API; `telecare alerts replay` runs as the owner
    "replay_runs": ("raw", "", ""),
    "replay_findings": ("ra", "", ""),
    "replay_alerts": ("ra", "", ""),
    # people and their relations: the API's alone
    "users": ("raw", "", ""),
    "refresh_tokens": ("rawd", "", ""),
    "sign_in_failures": ("rawd", "", ""),
    "team_members": ("rad", "", "r"),
    "proxies": ("raw", "", ""),
    # pilots (migrations/0015): managed by administrators and aggregated over the API
    "pilots": ("ra", "", ""),
    "pilot_enrolments": ("rawd", "", ""),
    "pilot_leads": ("rad", "", ""),
    # append-only for every process
    "audit_log": ("ra", "", ""),
}


# Columns a process may not SELECT though its letters say r: it gets SELECT on every other
# column of the table (column privileges), so that a defect or an injection in it cannot read
# them. The API issues device secrets and stores their hashes, and never reads a hash back.
HIDDEN_COLUMNS: dict[str, dict[Process, frozenset[str]]] = {
    "device_credentials": {"api": frozenset({"password_hash"})},
}


def process_dsn(dsn: str, process: Process) -> str:
    """`dsn` with the process's role set at connection start (kept with any other options)."""
    params = conninfo_to_dict(dsn)
    options = str(params.get("options") or "")
    role = f"-c role={ROLES[process]}"
    return make_conninfo(dsn, options=f"{options} {role}".strip())


def apply_privileges(conn: psycopg.Connection[Any]) -> None:
    """Create the roles where missing and make their grants exactly PRIVILEGES."""
    for role in ROLES.values():
        _create_role(conn, role)
    # Only the tables there are (a test may migrate a directory of its own).
    tables = [name for (name,) in conn.execute(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename = ANY(%s)"
        " ORDER BY 1", (sorted(PRIVILEGES),))]
    with conn.transaction():
        schema = sql.Identifier("public")
        for index, (process, role) in enumerate(ROLES.items()):
            who = sql.Identifier(role)
            conn.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(schema, who))
            conn.execute(sql.SQL("REVOKE ALL ON ALL TABLES IN SCHEMA {} FROM {}").format(
                schema, who))
            # Identity columns draw from their sequences as the inserting role.
            conn.execute(sql.SQL("GRANT USAGE ON ALL SEQUENCES IN SCHEMA {} TO {}").format(
                schema, who))
            for table in tables:
                letters = PRIVILEGES[table][index]
                hidden = HIDDEN_COLUMNS.get(table, {}).get(process, frozenset())
                if hidden and "r" in letters:
                    letters = letters.replace("r", "")
                    _grant_select_except(conn, table, hidden, who)
                if letters:
                    conn.execute(sql.SQL("GRANT {} ON TABLE {} TO {}").format(
                        sql.SQL(", ").join(sql.SQL(_LETTERS[c]) for c in letters),
                        sql.Identifier(table), who))


def _grant_select_except(conn: psycopg.Connection[Any], table: str, hidden: frozenset[str],
                         who: sql.Identifier) -> None:
    """SELECT on every column of `table` but `hidden` (revoking the table's privileges above
    revoked earlier column grants too)."""
    columns = [name for (name,) in conn.execute(
        "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0"
        " AND NOT attisdropped ORDER BY attnum", (f"public.{table}",))
        if name not in hidden]
    conn.execute(sql.SQL("GRANT SELECT ({}) ON TABLE {} TO {}").format(
        sql.SQL(", ").join(sql.Identifier(c) for c in columns), sql.Identifier(table), who))


def _create_role(conn: psycopg.Connection[Any], role: str) -> None:
    """A group role without login; roles are shared by the databases of a cluster, so another
    database's migration may create it at the same moment."""
    if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone():
        return
    try:
        with conn.transaction():
            conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(role)))
    except (psycopg.errors.DuplicateObject, psycopg.errors.UniqueViolation):
        pass  # created meanwhile by a concurrent migration
    log.info("created database role %s", role)


def enable_logins(conn: psycopg.Connection[Any], passwords: dict[Process, str]) -> list[str]:
    """Make the roles of these processes logins with these passwords (the roles were created
    NOLOGIN by the migrations); the roles changed. A process that connects as its own role
    holds no password that reaches further, and RESET ROLE leaves it where it is: a process
    that logs in as the owner and only switches role can switch back."""
    changed = []
    for process, password in sorted(passwords.items()):
        role = ROLES[process]
        conn.execute(sql.SQL("ALTER ROLE {} WITH LOGIN PASSWORD {}").format(
            sql.Identifier(role), sql.Literal(password)))
        changed.append(role)
    return changed


def unlisted_tables(conn: psycopg.Connection[Any]) -> list[str]:
    """Tables of the schema that PRIVILEGES does not name (partitions and chunks excepted)."""
    rows = conn.execute(
        """SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT c.relispartition
            ORDER BY 1""").fetchall()
    return [name for (name,) in rows if name not in PRIVILEGES]
