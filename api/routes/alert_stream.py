"""A care team's alert changes as server-sent events, resumable with Last-Event-ID.

Each alert_history row of the team is one event: `id` its stream position (drawn at commit,
so positions become visible in increasing order; migrations/0009), `event` the action, `data`
the change as JSON. A client that reconnects with the last id it saw first gets every row of
the team after it from the table, then live ones.

Live changes come from one LISTEN connection per API process (the hub), shared by every
client: a notification carries only a history id, and the hub reads the committed rows by id
from the table before fanning them out. Each client has a bounded queue; a client too slow to
keep up is disconnected rather than allowed to hold anyone up, and resumes with its
Last-Event-ID, missing nothing. Comment lines every 15 s keep proxies from closing an idle
stream.

Who may follow a team's stream is checked when it opens (api/access.py `team`); what each
stream carries is then filtered by the caller's relation to each event's citizen, the same
`visible` relation as every other route (a nurse: only the citizens she may see now; a citizen
who left her teams drops out), and each citizen whose data a stream pushes is recorded in the
audit log once, under the stream's request, before their first event goes out. The relation is
cached per stream (`StreamView`) and read again at most every VIEW_REFRESH_S; then the user is
checked too: a user disabled, or signed out by a new password, ends their streams."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import suppress
from dataclasses import replace
from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

import anyio
import psycopg
from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse
from psycopg_pool import ConnectionPool
from starlette.concurrency import run_in_threadpool

from alerts import delivery_repository as repo
from api import access, audit
from api.auth.errors import NotSignedIn
from api.deps import Caller, CallerDep, current_role
from api.problems import responses
from core.clock import Clock

log = logging.getLogger(__name__)

router = APIRouter(tags=["alerts"])

HEARTBEAT_S = 15.0
# Events a client may have waiting before it counts as too slow and is disconnected.
QUEUE_MAX = 1000
REPLAY_PAGE = 500
# Rows read per query when notifications pile up: each read lets the clients' streams run,
# so that a burst overflows only the queues of clients that really do not keep up.
FAN_OUT_BATCH = 500
LISTEN_READY_TIMEOUT_S = 10.0
EVENT_STREAM = "text/event-stream"
# How long a stream trusts what it read of the caller's relation (and the caller's user).
VIEW_REFRESH_S = 5.0


class Subscriber:
    """One client's bounded queue of live events."""

    def __init__(self, team_id: UUID, maxsize: int) -> None:
        self.team_id, self.maxsize = team_id, maxsize
        self.events: deque[dict[str, Any]] = deque()
        self.ended: str | None = None
        self._wake = asyncio.Event()

    def offer(self, event: dict[str, Any]) -> None:
        if self.ended is not None:
            return
        if len(self.events) >= self.maxsize:
            self.end("slow")  # never block the hub, never drop silently: the client resumes
            return
        self.events.append(event)
        self._wake.set()

    def end(self, reason: str) -> None:
        self.ended = reason
        self._wake.set()

    async def take(self, timeout: float) -> list[dict[str, Any]]:
        """What has arrived, waiting up to `timeout` (empty: nothing came)."""
        if not self.events and self.ended is None:
            with suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
        self._wake.clear()
        taken = list(self.events)
        self.events.clear()
        return taken


class AlertStreamHub:
    """The process's one LISTEN on alert changes, fanned out to the subscribed clients. It runs
    while anyone is subscribed; if it loses its connection every client is ended, and resumes."""

    def __init__(self, dsn: str, *, queue_max: int = QUEUE_MAX,
                 heartbeat_s: float = HEARTBEAT_S) -> None:
        self.dsn, self.queue_max, self.heartbeat_s = dsn, queue_max, heartbeat_s
        self._subscribers: set[Subscriber] = set()
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    async def subscribe(self, team_id: UUID) -> Subscriber:
        """A queue that receives every change of the team committed from now on."""
        subscriber = Subscriber(team_id, self.queue_max)
        self._subscribers.add(subscriber)
        if self._task is None or self._task.done():
            self._ready = asyncio.Event()
            self._task = asyncio.create_task(self._run(), name="alert-stream-hub")
        try:
            await asyncio.wait_for(self._ready.wait(), LISTEN_READY_TIMEOUT_S)
        except TimeoutError:
            subscriber.end("hub_not_ready")
        if subscriber.ended is not None:
            await self.unsubscribe(subscriber)
            # Answered 503 with Retry-After (api/problems.py), like any database outage.
            raise psycopg.OperationalError("the alert stream cannot listen to the database")
        return subscriber

    async def unsubscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.discard(subscriber)
        if not self._subscribers and self._task is not None:
            task, self._task = self._task, None
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        try:
            async with (await psycopg.AsyncConnection.connect(self.dsn, autocommit=True) as listen,
                        await psycopg.AsyncConnection.connect(self.dsn, autocommit=True) as reader):
                await repo.listen_alert_changes_async(listen)
                self._ready.set()
                ids: asyncio.Queue[int] = asyncio.Queue()
                fan_out = asyncio.create_task(self._fan_out(reader, ids))
                try:
                    async for notify in listen.notifies():
                        ids.put_nowait(int(notify.payload))
                finally:
                    fan_out.cancel()
                    with suppress(asyncio.CancelledError):
                        await fan_out
        except asyncio.CancelledError:
            raise
        except psycopg.Error as exc:
            log.warning("alert stream lost its database connection (%s); ending %d streams",
                        type(exc).__name__, len(self._subscribers))
        except Exception:  # the streams must end cleanly whatever broke the hub
            log.exception("alert stream hub failed; ending %d streams", len(self._subscribers))
        # Here only when the connection or a read failed: a change may be missed, so every
        # client ends and resumes from its Last-Event-ID.
        for subscriber in list(self._subscribers):
            subscriber.end("hub_lost")
        self._ready.set()  # wakes a subscribe waiting for a LISTEN that never came

    async def _fan_out(self, reader: psycopg.AsyncConnection[Any], ids: asyncio.Queue[int]) -> None:
        while True:
            batch = [await ids.get()]
            while not ids.empty() and len(batch) < FAN_OUT_BATCH:
                batch.append(ids.get_nowait())
            # The rows themselves, committed (the notification is sent at commit), not the
            # payload: what a client gets is what the table says.
            for row in await repo.events_by_id_async(reader, batch):
                event = _event(row)
                for subscriber in list(self._subscribers):
                    if subscriber.team_id == row["care_team_id"]:
                        subscriber.offer(event)


def _event(row: dict[str, Any]) -> dict[str, Any]:
    return {"id": row["stream_position"], "event": row["action"], "data": repo.event_data(row),
            "citizen_id": row["citizen_id"]}


class StreamEnded(Exception):
    """The stream may carry nothing more (the reason is the message)."""


class StreamView:
    """What one stream's caller may see of the citizens its events are about: the relation,
    read for the citizens as they come and forgotten every `refresh_s` (then read again, with
    the caller's user), and the citizens already recorded in the audit log for this stream.
    Runs in the thread pool; each read takes a pooled connection for a moment."""

    def __init__(self, pool: ConnectionPool, caller: Caller, clock: Clock, *,
                 refresh_s: float = VIEW_REFRESH_S,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.pool, self.caller, self.clock = pool, caller, clock
        self.refresh_s, self.monotonic = refresh_s, monotonic
        self.windows: dict[UUID, access.Window | None] = {}
        self.read_at = monotonic()
        self.recorded: set[UUID] = set()

    def admit(self, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The events the caller may see, in order, each citizen's first one recorded in the
        audit log before it is returned; StreamEnded when the caller may no longer follow
        (her token has expired: the stream lasts no longer than the token that opened it, so a
        reconnection must show a valid one)."""
        expires = self.caller.token_expires_at
        if expires is not None and self.clock() >= expires:
            raise StreamEnded("token_expired")
        if self.monotonic() - self.read_at >= self.refresh_s:
            self._check_user()
            self.windows.clear()
            self.read_at = self.monotonic()
        unknown = {e["citizen_id"] for e in events} - self.windows.keys()
        if not unknown and all(self._settled(e) for e in events):
            # The usual case: known citizens, seen whole and recorded already; no query.
            return [e for e in events if self.windows[e["citizen_id"]] is not None]
        now = self.clock()
        with self.pool.connection() as conn:
            if unknown:
                found = access.windows(conn, self.caller, unknown, "alerts", now)
                self.windows.update({c: found.get(c) for c in unknown})
            clipped = [e["data"]["alert_id"] for e in events
                       if (w := self.windows[e["citizen_id"]]) is not None
                       and w != access.EVERYTHING]
            begun = access.alert_times(conn, clipped) if clipped else {}
            admitted = [e for e in events if self._sees(e, begun)]
            new = list(dict.fromkeys(e["citizen_id"] for e in admitted
                                     if e["citizen_id"] not in self.recorded))
            if new:
                try:
                    audit.searched(conn, self.caller, "alert_stream", new, now)
                except audit.AuditUnavailable as exc:
                    raise StreamEnded("audit_unavailable") from exc
        # Committed (leaving the pool's block) before any of it is sent.
        self.recorded.update(new)
        return admitted

    def _settled(self, event: dict[str, Any]) -> bool:
        window = self.windows[event["citizen_id"]]
        return window is None or (window == access.EVERYTHING
                                  and event["citizen_id"] in self.recorded)

    def _sees(self, event: dict[str, Any], begun: dict[int, datetime]) -> bool:
        window = self.windows[event["citizen_id"]]
        if window is None:
            return False
        if window == access.EVERYTHING:
            return True
        at = begun.get(event["data"]["alert_id"])
        return at is not None and window.holds(at)

    def _check_user(self) -> None:
        """The caller's user as it is now: its current role counts; disabled or signed out
        (a new password) ends the stream."""
        if self.caller.is_local_operator or self.caller.token_generation is None:
            return
        try:
            role = current_role(self.pool, UUID(self.caller.subject),
                                self.caller.token_generation)
        except NotSignedIn as exc:
            raise StreamEnded("signed_out") from exc
        if role != self.caller.role:
            self.caller = replace(self.caller, role=role)


def _format(event: dict[str, Any]) -> str:
    data = json.dumps(event["data"], separators=(",", ":"))
    return f"id: {event['id']}\nevent: {event['event']}\ndata: {data}\n\n"


def _hub(request: Request) -> AlertStreamHub:
    hub: AlertStreamHub | None = getattr(request.app.state, "alert_stream", None)
    if hub is None:
        pool: ConnectionPool = request.app.state.pool
        conninfo = pool.conninfo  # a string, or a function giving one
        hub = AlertStreamHub(conninfo if isinstance(conninfo, str) else conninfo())
        request.app.state.alert_stream = hub
    return hub


def _may_follow(pool: ConnectionPool, caller: Caller, team_id: UUID, now: datetime) -> None:
    """TeamNotFound unless the caller works in the team (api/access.py); the opening is
    recorded as a search of the team's alerts (which citizens it will carry is not known yet)."""
    with pool.connection() as conn:
        access.team(conn, caller, team_id)
        audit.searched(conn, caller, "alert_stream", [], now)


def _replay_page(pool: ConnectionPool, team_id: UUID, after: int) -> list[dict[str, Any]]:
    with pool.connection() as conn:
        return [_event(row) for row in repo.team_events_after(conn, team_id, after, REPLAY_PAGE)]


async def _stream(pool: ConnectionPool, hub: AlertStreamHub, subscriber: Subscriber,
                  view: StreamView, team_id: UUID, last_id: int | None) -> AsyncIterator[str]:
    try:
        yield f"retry: 1000\n: alert stream of team {team_id}\n\n"
        # Subscribed before reading the table: a change committed meanwhile is in both, and
        # sent once; one committed after the read is in the queue. Positions grow in commit
        # order, so anything at or below the last one sent has been sent (or was before the
        # client's Last-Event-ID): the client's last id never goes back.
        last_sent = last_id if last_id is not None else 0
        while last_id is not None:
            page = await run_in_threadpool(_replay_page, pool, team_id, last_id)
            for event in await run_in_threadpool(view.admit, page):
                yield _format(event)
            if page:
                last_sent = page[-1]["id"]
            if len(page) < REPLAY_PAGE:
                break
            last_id = page[-1]["id"]
        while subscriber.ended is None:
            events = await subscriber.take(hub.heartbeat_s)
            if subscriber.ended is not None:
                break
            events = [event for event in events if event["id"] > last_sent]
            if not events:
                await run_in_threadpool(view.admit, [])  # a user signed out meanwhile: ended
                yield ": heartbeat\n\n"
                continue
            last_sent = events[-1]["id"]
            for event in await run_in_threadpool(view.admit, events):
                yield _format(event)
        log.info("alert stream of team %s ended (%s)", team_id, subscriber.ended)
    except StreamEnded as exc:
        log.info("alert stream of team %s ended (%s)", team_id, exc)
    except psycopg.Error as exc:
        # The relation or the record could not be read or written: nothing more is sent, and
        # the client resumes from its Last-Event-ID.
        log.warning("alert stream of team %s ended: %s", team_id, type(exc).__name__)
    finally:
        # Also when the client went away (the generator is cancelled): shielded, so the hub
        # stops listening once its last client is gone.
        with anyio.CancelScope(shield=True):
            await hub.unsubscribe(subscriber)


@router.get("/teams/{team_id}/alerts/stream", response_class=StreamingResponse,
            responses={200: {"description": "Server-sent events, one per alert change of the "
                                            "team: `id` the stream position, `event` the "
                                            "action, `data` the change as JSON.",
                             "content": {EVENT_STREAM: {"schema": {"type": "string"}}}},
                       **responses(404, 422)})
async def alert_stream(
    team_id: UUID,
    request: Request,
    caller: CallerDep,
    last_event_id: Annotated[int | None, Query(
        ge=0, description="resume after this event id (as the Last-Event-ID header)")] = None,
    last_event_header: Annotated[int | None, Header(
        alias="Last-Event-ID", ge=0, description="sent by a reconnecting EventSource")] = None,
) -> StreamingResponse:
    """The team's alert changes as server-sent events: those after Last-Event-ID first (none
    without one), then live."""
    pool: ConnectionPool = request.app.state.pool
    clock: Clock = request.app.state.clock
    await run_in_threadpool(_may_follow, pool, caller, team_id, clock())
    hub = _hub(request)
    subscriber = await hub.subscribe(team_id)
    last_id = last_event_header if last_event_header is not None else last_event_id
    view = StreamView(pool, caller, clock, refresh_s=VIEW_REFRESH_S)
    return StreamingResponse(
        _stream(pool, hub, subscriber, view, team_id, last_id), media_type=EVENT_STREAM,
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
