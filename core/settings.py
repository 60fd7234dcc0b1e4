"""One settings class for the whole service, read from TELECARE_* environment variables."""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.roles import Process, process_dsn


class Settings(BaseSettings):
    """Telecare configuration; build it once in the entry point and pass it down."""

    model_config = SettingsConfigDict(env_prefix="TELECARE_", frozen=True)

    # Empty means "not configured": `telecare demo` then starts embedded servers.
    database_url: SecretStr | None = None
    # Each process (API, ingest, alerts) switches to its own database role when it connects
    # (core/roles.py). Off only where each process already logs in as its role's member and the
    # login cannot switch.
    database_roles: bool = True
    # Passwords that `telecare migrate` gives the processes' roles (telecare_api,
    # telecare_alerts, telecare_ingest), making each a login of its own: deployed, those
    # processes connect as their role and hold no password of the owner (compose.yaml).
    database_api_password: SecretStr | None = None
    database_alerts_password: SecretStr | None = None
    database_ingest_password: SecretStr | None = None
    # The maintenance jobs (partitions, compression, retention) need the owner: an ingest worker
    # that logs in as its own role leaves them to `telecare maintain --forever` (compose.yaml).
    ingest_maintenance: bool = True
    # auto: TimescaleDB when the extension is available, else native partitioning.
    storage: str = Field(default="auto", pattern="^(auto|timescaledb|postgres)$")

    mqtt_host: str | None = None
    mqtt_port: int = 1883
    mqtt_username: str | None = None
    mqtt_password: SecretStr | None = None
    # The alert process's broker password (its TELECARE_MQTT_PASSWORD when it runs): only
    # `telecare broker config` reads it here, to write the account `alerts` into the broker's
    # password file beside `ingest` (whose password is mqtt_password).
    mqtt_alerts_password: SecretStr | None = None
    # The broker's `broker-admin` account (password file beside ingest and alerts): only
    # `telecare broker config` uses it, to send a running broker's dynamic-security plugin the
    # access-control changes over its control topic (the plugin reads its file only at start).
    mqtt_admin_password: SecretStr | None = None
    # 5 on Mosquitto; 3.1.1 for brokers that speak nothing newer (embedded fallback).
    mqtt_protocol: str = Field(default="5", pattern="^(5|3.1.1)$")
    # Which broker `telecare demo` embeds when no host is configured.
    embedded_broker: str = Field(default="auto", pattern="^(auto|mosquitto|amqtt)$")
    topic_root: str = "telecare"
    # Workers of one group share the load ($share/<group>/...). Empty: a plain subscription,
    # for brokers without shared subscriptions (then run a single worker).
    share_group: str = "ingest"
    ingest_client_id: str = "telecare-ingest-1"
    # How long the broker keeps a stopped worker's session (and its queued messages).
    session_expiry_s: int = 7 * 24 * 3600
    # Upper bound on un-acknowledged messages in flight to one worker (MQTT 5 Receive Maximum).
    receive_maximum: int = Field(default=1000, ge=1, le=65535)

    # Received messages waiting for the writer, bounded in bytes as well as in count: a full
    # inbox never blocks the network thread (see ingest/inbox.py).
    inbox_max_bytes: int = Field(default=64 * 1024 * 1024, ge=1024 * 1024)
    # A stop finishes within this time; what is not committed by then is left unacknowledged
    # for the broker to redeliver.
    stop_timeout_s: float = Field(default=10.0, gt=0)

    # Sign-in (api/auth). The key signs access tokens (HS256); unset, each API process makes a
    # random one at start (tokens then die with the process and are not valid in another one:
    # set it when running more than one). Access tokens are short-lived: a disabled user's
    # token works until it expires; refresh tokens are revoked at once.
    auth_signing_key: SecretStr | None = None
    # Refuse every call without a valid access token (401), except health, readiness and the
    # sign-in routes. Off (the demo on its own machine, tests of the local operator), a call
    # without a token acts as the local operator and sees everything.
    auth_required: bool = True
    access_token_ttl_s: int = Field(default=900, ge=30, le=3600)
    refresh_token_ttl_s: int = Field(default=12 * 3600, ge=60, le=30 * 24 * 3600)
    # Pilots (pilots/pseudonyms.py): the key of the pseudonyms project leads see, at least 32
    # characters, kept apart from the database (here or in a file of its own). Unset, the
    # aggregates answer 503: a key made up per process would give each process other pseudonyms.
    pseudonym_key: SecretStr | None = None
    pseudonym_key_file: str | None = None

    batch_max: int = Field(default=500, ge=1)
    batch_wait_ms: int = Field(default=10, ge=0)
    # The protocol's limit (ingest/wire.py MAX_PAYLOAD_BYTES); lower it, never raise it.
    max_payload_bytes: int = Field(default=256 * 1024, ge=256, le=256 * 1024)
    late_after_s: int = Field(default=600, ge=0)
    max_clock_ahead_s: int = Field(default=300, ge=0)
    # Dead letters keep whole payloads (up to max_payload_bytes): kept this long, then purged.
    dead_letter_retention_days: int = Field(default=30, ge=1)
    # Citizen rights (api/erasure.py, docs/access.md): how long an erasure keeps each kind of a
    # citizen's data. The care record follows the rule for patient records, at least 10 years
    # after the last entry (autorisationsloven § 25; 3653 days are 10 years, leap days
    # included); counted from the last entry in the citizen's record unless from_last_entry is
    # off (then from each row's own time). The log of look-ups and the proxies behind them: 5
    # years (1827 days).
    retention_readings_days: int = Field(default=3653, ge=0)
    retention_events_days: int = Field(default=3653, ge=0)
    retention_devices_days: int = Field(default=3653, ge=0)
    retention_alerts_days: int = Field(default=3653, ge=0)
    retention_care_days: int = Field(default=3653, ge=0)
    retention_proxies_days: int = Field(default=1827, ge=0)
    retention_audit_days: int = Field(default=1827, ge=0)
    retention_from_last_entry: bool = True

    # `telecare alerts`: how often the time-driven rules, escalation and the release of held
    # alerts run; how many queued items, and of how many citizens, one evaluation transaction
    # takes at most; how often a standby tries to take the lead.
    alerts_tick_s: float = Field(default=10.0, gt=0)
    alerts_batch_max: int = Field(default=5000, ge=1)
    alerts_batch_citizens: int = Field(default=100, ge=1)
    alerts_standby_retry_s: float = Field(default=1.0, gt=0)
    # Replay steps its clock through the measured times, and ticks (missed measurements,
    # silence) at most this often on that clock.
    alerts_replay_tick_s: float = Field(default=900.0, gt=0)
    # Personal baselines (docs/anomaly.md): a series raises nothing until it has been watched
    # this many days; retraining looks back this many days, and takes each citizen again after
    # this many hours, so many citizens per engine tick.
    alerts_baseline_learning_days: float = Field(default=14.0, ge=0)
    alerts_baseline_training_days: float = Field(default=60.0, gt=0)
    alerts_baseline_retrain_hours: float = Field(default=24.0, gt=0)
    alerts_baseline_retrain_chunk: int = Field(default=100, ge=1)

    api_host: str = "127.0.0.1"
    api_port: int = 8000

    def database_dsn(self) -> str:
        """The configured database URL, or an error that says how to set it."""
        if self.database_url is None:
            raise RuntimeError("TELECARE_DATABASE_URL is not set")
        return self.database_url.get_secret_value()

    def login_passwords(self) -> dict[Process, str]:
        """The process roles to make logins, with their passwords (the ones configured)."""
        given: dict[Process, SecretStr | None] = {"api": self.database_api_password,
                                                  "alerts": self.database_alerts_password,
                                                  "ingest": self.database_ingest_password}
        return {process: secret.get_secret_value() for process, secret in given.items()
                if secret is not None and secret.get_secret_value()}

    def for_process(self, process: Process) -> Settings:
        """These settings with the database URL of `process`: its role, unless roles are off."""
        if not self.database_roles or self.database_url is None:
            return self
        dsn = process_dsn(self.database_dsn(), process)
        return self.model_copy(update={"database_url": SecretStr(dsn)})
