"""Updates pushed to the central station's pages: server-sent events (GET /events/).

One ChangeWatcher per server process, not per client: a thread that every WATCH_SECONDS reads
what changed since its marks (ward/selectors.py: three primary-key range scans) and fans the
patients' uuids out to the connected streams; every HEARTBEAT_SECONDS (5 s) after a read that
succeeded it sends them a heartbeat too, and a new stream gets one after the first read that
succeeded once it subscribed: a heartbeat says the watcher reads the database, which the page
takes for the stream being up (not the stream's opening, which says only that the session
was accepted). A stream holds no database connection: it waits on its subscription (an
asyncio event under ASGI, a threading one under a threaded WSGI server), and is told only
"these patients changed"; the page then refreshes what it shows through the API (its
poller's refresh(): one rendering path), polling on as the fallback.

A row committed after a higher id was seen (two consumers' batches; an API write during a
consumer's batch on PostgreSQL: an id is given out at the INSERT, the row seen at the COMMIT)
is reported when it commits, if within LATE_SECONDS (ChangeTrail). A failed read keeps the
marks: what was committed meanwhile is reported by the next read that succeeds. A watcher
whose step has not returned for STUCK_SECONDS (a read hung on a dead connection) is replaced
by a new thread when a stream connects (ensure_running); on PostgreSQL its reads end after
READ_TIMEOUT_MS.

The wire format (text/event-stream):

    : connected                                      (first: the headers go out at once)

    event: changed
    data: {"patients": ["<uuid>", ...]}

    event: heartbeat
    data: {}

No `retry:` field: the page closes the stream on an error or a silence and reconnects on its
own schedule (backoff), never through the browser's own reconnection.
A stream ends after STREAM_SECONDS (the page reconnects, and the session is checked again).
Meanwhile it checks its user's right to read it every WARD_PUSH_RECHECK_SECONDS (a read of the
session, the user and their permissions; also before a change once that is due), and ends when
it is gone (deactivated, password changed, logged out, role removed): the page's poll is then
refused, and it shows the session lost. One user holds at most WARD_PUSH_MAX_CLIENTS_PER_USER
of a process's streams (max_per_user).
"""

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator

from asgiref.sync import sync_to_async
from django.db import close_old_connections, connection

from ward.selectors import ChangeMarks, ChangeRows, change_marks_now, change_rows_after

logger = logging.getLogger(__name__)

WATCH_SECONDS = 0.2
HEARTBEAT_SECONDS = 5.0
STREAM_SECONDS = 300.0
# A row whose id was seen missing (below the highest seen) is reported if it commits within
# this, and within LATE_IDS ids of the highest: each read starts at the lowest id missing.
LATE_SECONDS = 2.0
LATE_IDS = 10_000
# A watcher whose step has not returned for this long is taken for hung, and replaced.
STUCK_SECONDS = 5.0
# PostgreSQL: the watcher's reads (primary-key range scans, milliseconds) end after this.
READ_TIMEOUT_MS = 2000
# The stream's first bytes: a comment, which sends the response's headers at once (a WSGI
# server sends them with the first bytes).
CONNECTED = ": connected\n\n"
# Written when the watcher said nothing for HEARTBEAT_SECONDS (its reads failing): a comment,
# which the page does not take for a sign of life, but which finds out a client gone.
KEEPALIVE = ": keep-alive\n\n"
TABLES = ("reading", "alarm_event", "audit_event")


class TooManyClients(Exception):
    pass


class TooManyForUser(Exception):
    """The user holds max_per_user streams already."""

    def __init__(self, *, held: int) -> None:
        super().__init__(held)
        self.held = held


class Subscription:
    """One stream's share of the watcher's news: the patients changed and whether a heartbeat
    is due since it last took them. `patient`: only that patient's changes (the patient page).
    `greeted`: it had its first heartbeat (after the first read that succeeded once it came)."""

    def __init__(self, *, patient: str | None, user: object = None) -> None:
        self.patient = patient
        self.user = user  # whose stream (the user's pk): max_per_user counts them
        self.wake: Callable[[], None] = lambda: None
        self.changed: set[str] = set()
        self.heartbeat = False
        self.greeted = False

    def offer(self, *, changed: set[str], heartbeat: bool) -> None:
        """From the watcher (under its lock)."""
        mine = changed if self.patient is None else changed & {self.patient}
        heartbeat = heartbeat or not self.greeted
        if not mine and not heartbeat:
            return
        self.greeted = True
        self.changed |= mine
        self.heartbeat |= heartbeat
        # Its event loop closed (RuntimeError): the stream is gone, the others are not.
        with contextlib.suppress(RuntimeError):
            self.wake()


def event_text(event: str, data: dict) -> str:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


class ChangeTrail:
    """One table's rows reported: `mark`, the highest id seen, and `missing`, the ids below it
    not seen yet (given out to a transaction not committed when read, or rolled back), with
    when each was found missing: reported if it commits within LATE_SECONDS, forgotten after."""

    def __init__(self, *, mark: int) -> None:
        self.mark = mark
        self.missing: dict[int, float] = {}

    def floor(self) -> int:
        """The next read is of the ids above this: the new ones and those still missing."""
        return min(self.missing, default=self.mark + 1) - 1

    def take(self, *, rows: list[tuple[int, str | None]], now: float) -> set[str]:
        """The patients of the rows not reported yet (new, or missing until now), from a read
        above floor(); the trail moves past them."""
        changed: set[str] = set()
        new: set[int] = set()
        for pk, patient in rows:
            if pk > self.mark:
                new.add(pk)
            elif self.missing.pop(pk, None) is None:
                continue  # reported already
            if patient is not None:
                changed.add(patient)
        top = max(new, default=self.mark)
        for pk in range(max(self.mark, top - LATE_IDS) + 1, top):
            if pk not in new:
                self.missing[pk] = now
        self.mark = top
        if self.missing:
            self.missing = {
                pk: since
                for pk, since in self.missing.items()
                if now - since < LATE_SECONDS and pk > top - LATE_IDS
            }
        return changed


class ChangeWatcher:
    def __init__(
        self,
        *,
        max_clients: int,
        max_per_user: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        heartbeat_seconds: float = HEARTBEAT_SECONDS,
        read: Callable[..., ChangeRows] = change_rows_after,
    ) -> None:
        self.max_clients = max_clients
        self.max_per_user = max_per_user  # None: no cap but max_clients
        self.clock = clock
        self.heartbeat_seconds = heartbeat_seconds
        self.read = read
        self.lock = threading.Lock()
        self.subscriptions: set[Subscription] = set()
        self.trails: dict[str, ChangeTrail] | None = None
        self.last_heartbeat: float | None = None
        self.stopping = threading.Event()
        self.thread: threading.Thread | None = None
        # The thread's: a replaced thread (hung) stops, and what its step read is dropped.
        self.generation = 0
        self.stepped_at: float | None = None  # when a step last returned (or the thread began)
        self.failing = False
        self.local = threading.local()  # the connection whose reads time out (PostgreSQL)

    def subscribe(self, *, patient: str | None, user: object = None) -> Subscription:
        """A new stream's subscription, or TooManyClients at max_clients, or TooManyForUser
        when `user` holds max_per_user already (one login must not take every stream)."""
        with self.lock:
            if len(self.subscriptions) >= self.max_clients:
                raise TooManyClients
            if user is not None and self.max_per_user is not None:
                held = sum(1 for s in self.subscriptions if s.user == user)
                if held >= self.max_per_user:
                    raise TooManyForUser(held=held)
            subscription = Subscription(patient=patient, user=user)
            self.subscriptions.add(subscription)
        return subscription

    def wake_with(self, subscription: Subscription, wake: Callable[[], None]) -> None:
        """How the stream is woken, once it runs (and at once if news came meanwhile)."""
        with self.lock:
            subscription.wake = wake
            if subscription.changed or subscription.heartbeat:
                wake()

    def unsubscribe(self, subscription: Subscription) -> None:
        with self.lock:
            self.subscriptions.discard(subscription)

    def take(self, subscription: Subscription) -> str:
        """What the stream sends now: a "changed" event, a heartbeat, or nothing ("")."""
        with self.lock:
            changed, heartbeat = subscription.changed, subscription.heartbeat
            subscription.changed, subscription.heartbeat = set(), False
        if changed:  # a change says the stream is alive as well as a heartbeat would
            return event_text("changed", {"patients": sorted(changed)})
        return event_text("heartbeat", {}) if heartbeat else ""

    def step(self, *, generation: int | None = None) -> set[str]:
        """One read of the changes and their fan-out; the patients changed. With nobody
        listening, no read (and the marks are read anew for the next listener). A read that
        fails raises and changes nothing. `generation`: the thread's; a replaced thread's read
        is dropped."""
        if not self.subscriptions:
            self.trails = None
            return set()
        trails = self.trails
        if trails is None:
            marks = change_marks_now()
            rows = None
        else:
            floors = ChangeMarks(**{name: trail.floor() for name, trail in trails.items()})
            rows = self.read(floors=floors)
        with self.lock:
            if generation is not None and generation != self.generation:
                return set()
            now = self.clock()
            changed: set[str] = set()
            if rows is None:
                self.trails = {name: ChangeTrail(mark=getattr(marks, name)) for name in TABLES}
            else:
                for name, trail in trails.items():
                    changed |= trail.take(rows=rows[name], now=now)
            heartbeat = self.last_heartbeat is None or now - self.last_heartbeat >= (
                self.heartbeat_seconds
            )
            if heartbeat:
                self.last_heartbeat = now
            for subscription in self.subscriptions:
                subscription.offer(changed=changed, heartbeat=heartbeat)
        return changed

    def tick(self, *, generation: int | None = None) -> None:
        """The thread's single step: a step, whose failure (the database down, mostly) is
        logged once and leaves the marks as they were, the next step reading on from them;
        then the connection kept (CONN_MAX_AGE's) while anyone listens, closed otherwise."""
        try:
            self.reads_time_out()
            self.step(generation=generation)
        except Exception:  # the thread must live on
            if not self.failing:  # once a failure, not five times a second
                logger.warning("ward change watcher: the read failed", exc_info=True)
            self.failing = True
            connection.close()
        else:
            if self.failing:
                logger.info("ward change watcher: reading again")
            self.failing = False
        with self.lock:
            if generation is None or generation == self.generation:
                self.stepped_at = self.clock()
        if self.subscriptions:
            close_old_connections()
        else:
            connection.close()  # nobody listens: none held

    def reads_time_out(self) -> None:
        """PostgreSQL: the reads of this thread's connection end after READ_TIMEOUT_MS (set
        once a connection)."""
        if connection.vendor != "postgresql":
            return
        connection.ensure_connection()
        if getattr(self.local, "timed", None) is not connection.connection:
            with connection.cursor() as cursor:
                cursor.execute(f"SET statement_timeout = {int(READ_TIMEOUT_MS)}")
            self.local.timed = connection.connection

    def run(self, *, generation: int) -> None:
        """Ticks every WATCH_SECONDS until stopped or replaced. A failed read sends nothing,
        heartbeats neither: the streams' pages see the silence and fall back to polling."""
        try:
            while not self.stopping.wait(WATCH_SECONDS) and generation == self.generation:
                self.tick(generation=generation)
        finally:
            connection.close()

    def ensure_running(self) -> None:
        """A thread running: a new one if there is none, or if its step has not returned for
        STUCK_SECONDS (hung: it stops should its read ever return)."""
        with self.lock:
            alive = self.thread is not None and self.thread.is_alive()
            now = self.clock()
            stuck = alive and now - self.stepped_at > STUCK_SECONDS
            if alive and not stuck:
                return
            if stuck:
                logger.warning(
                    "ward change watcher: no step for %.0f s, a new thread replaces it",
                    now - self.stepped_at,
                )
            self.generation += 1
            self.stepped_at = now
            self.thread = threading.Thread(
                target=self.run,
                kwargs={"generation": self.generation},
                name="ward-change-watcher",
                daemon=True,
            )
            self.thread.start()


_watcher: ChangeWatcher | None = None
_watcher_lock = threading.Lock()


def change_watcher() -> ChangeWatcher:
    """This process's watcher, running."""
    global _watcher
    from django.conf import settings

    with _watcher_lock:
        if _watcher is None:
            _watcher = ChangeWatcher(
                max_clients=settings.WARD_PUSH_MAX_CLIENTS,
                max_per_user=settings.WARD_PUSH_MAX_CLIENTS_PER_USER,
            )
    _watcher.ensure_running()
    return _watcher


class StreamTimes:
    """A stream's schedule: when it ends (STREAM_SECONDS), when it checks its user's right
    again (every recheck_seconds), and when it writes a keep-alive (HEARTBEAT_SECONDS without
    writing anything)."""

    def __init__(self, *, now: float, recheck_seconds: float) -> None:
        self.end = now + STREAM_SECONDS
        self.recheck_seconds = recheck_seconds
        self.check_at = now + recheck_seconds
        self.quiet_since = now

    def wait(self, now: float) -> float:
        """How long to wait for news before something else is due."""
        due = min(self.end, self.check_at, self.quiet_since + HEARTBEAT_SECONDS)
        return max(0.0, due - now)

    def check_due(self, now: float) -> bool:
        """Whether the user's right is to be checked now (the next check then scheduled)."""
        if now < self.check_at:
            return False
        self.check_at = now + self.recheck_seconds
        return True

    def keepalive_due(self, now: float) -> bool:
        return now - self.quiet_since >= HEARTBEAT_SECONDS

    def wrote(self, now: float) -> None:
        self.quiet_since = now


def _revoked(*, watcher: ChangeWatcher, subscription: Subscription) -> None:
    logger.info(
        "ward stream: its user may no longer read it, ended",
        extra={"user_id": subscription.user, "patient": subscription.patient},
    )


async def stream_async(
    *,
    watcher: ChangeWatcher,
    subscription: Subscription,
    allowed: Callable[[], bool] = lambda: True,
    recheck_seconds: float = STREAM_SECONDS,
) -> AsyncIterator[str]:
    """The stream under ASGI: waits on an asyncio event the watcher's thread sets. `allowed`:
    whether its user may still read it (a database read, in a thread), asked every
    `recheck_seconds` and before a change once that is due; the stream ends when not."""
    loop = asyncio.get_running_loop()
    woken = asyncio.Event()
    watcher.wake_with(subscription, lambda: loop.call_soon_threadsafe(woken.set))
    check = sync_to_async(allowed)
    times = StreamTimes(now=time.monotonic(), recheck_seconds=recheck_seconds)  # from its opening
    try:
        yield CONNECTED
        while (now := time.monotonic()) < times.end:
            if times.check_due(now) and not await check():
                _revoked(watcher=watcher, subscription=subscription)
                return
            try:
                await asyncio.wait_for(woken.wait(), timeout=times.wait(now))
            except TimeoutError:
                woke = False
            else:
                woke = True
            now = time.monotonic()
            if woke:
                woken.clear()
                if times.check_due(now) and not await check():
                    _revoked(watcher=watcher, subscription=subscription)
                    return
                if text := watcher.take(subscription):
                    times.wrote(now)
                    yield text
                    continue
            if times.keepalive_due(now):
                times.wrote(now)
                yield KEEPALIVE
    finally:
        watcher.unsubscribe(subscription)


def stream_sync(
    *,
    watcher: ChangeWatcher,
    subscription: Subscription,
    allowed: Callable[[], bool] = lambda: True,
    recheck_seconds: float = STREAM_SECONDS,
) -> Iterator[str]:
    """The stream under a threaded WSGI server (`runserver`, the tests' live server): a thread
    a client, as that server gives each request anyway. `allowed`: as for stream_async."""
    woken = threading.Event()
    watcher.wake_with(subscription, woken.set)
    times = StreamTimes(now=time.monotonic(), recheck_seconds=recheck_seconds)  # from its opening
    try:
        yield CONNECTED
        while (now := time.monotonic()) < times.end:
            if times.check_due(now) and not allowed():
                _revoked(watcher=watcher, subscription=subscription)
                return
            woke = woken.wait(timeout=times.wait(now))
            now = time.monotonic()
            if woke:
                woken.clear()
                if times.check_due(now) and not allowed():
                    _revoked(watcher=watcher, subscription=subscription)
                    return
                if text := watcher.take(subscription):
                    times.wrote(now)
                    yield text
                    continue
            if times.keepalive_due(now):
                times.wrote(now)  # a client gone is found out by this write
                yield KEEPALIVE
    finally:
        watcher.unsubscribe(subscription)
