"""Updates pushed to the central station's pages: server-sent events (GET /events/).

One ChangeWatcher per server process, not per client: a thread that every WATCH_SECONDS reads
what changed since its marks (ward/selectors.py: three primary-key range scans) and fans the
patients' uuids out to the connected streams; every HEARTBEAT_SECONDS (5 s) after a read that
succeeded it sends them a heartbeat too. A stream holds no database connection: it waits on
its subscription (an asyncio event under ASGI, a threading one under a threaded WSGI server),
and is told only "these patients changed"; the page then refreshes what it shows through the
API (its poller's refresh(): one rendering path), polling on as the fallback.

The wire format (text/event-stream):

    retry: 2000                                      (first, as the stream opens)
    event: changed
    data: {"patients": ["<uuid>", ...]}

    event: heartbeat
    data: {}

A stream ends after STREAM_SECONDS (the browser reconnects, and the session is checked again).
"""

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator

from django.db import close_old_connections, connection

from ward.selectors import ChangeMarks, change_marks_now, changes_after

logger = logging.getLogger(__name__)

WATCH_SECONDS = 0.2
HEARTBEAT_SECONDS = 5.0
STREAM_SECONDS = 300.0
# How long the browser waits before it reconnects after the stream ended (the field "retry").
RETRY_MS = 2000
# Written when the watcher said nothing for HEARTBEAT_SECONDS (its reads failing): a comment,
# which the page does not take for a sign of life, but which finds out a client gone.
KEEPALIVE = ": keep-alive\n\n"


class TooManyClients(Exception):
    pass


class Subscription:
    """One stream's share of the watcher's news: the patients changed and whether a heartbeat
    is due since it last took them. `patient`: only that patient's changes (the patient page)."""

    def __init__(self, *, patient: str | None) -> None:
        self.patient = patient
        self.wake: Callable[[], None] = lambda: None
        self.changed: set[str] = set()
        self.heartbeat = False

    def offer(self, *, changed: set[str], heartbeat: bool) -> None:
        """From the watcher (under its lock)."""
        mine = changed if self.patient is None else changed & {self.patient}
        if not mine and not heartbeat:
            return
        self.changed |= mine
        self.heartbeat |= heartbeat
        # Its event loop closed (RuntimeError): the stream is gone, the others are not.
        with contextlib.suppress(RuntimeError):
            self.wake()


def event_text(event: str, data: dict) -> str:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


class ChangeWatcher:
    def __init__(
        self,
        *,
        max_clients: int,
        clock: Callable[[], float] = time.monotonic,
        heartbeat_seconds: float = HEARTBEAT_SECONDS,
    ) -> None:
        self.max_clients = max_clients
        self.clock = clock
        self.heartbeat_seconds = heartbeat_seconds
        self.lock = threading.Lock()
        self.subscriptions: set[Subscription] = set()
        self.marks: ChangeMarks | None = None
        self.last_heartbeat: float | None = None
        self.stopping = threading.Event()
        self.thread: threading.Thread | None = None

    def subscribe(self, *, patient: str | None) -> Subscription:
        """A new stream's subscription, or TooManyClients at max_clients."""
        with self.lock:
            if len(self.subscriptions) >= self.max_clients:
                raise TooManyClients
            subscription = Subscription(patient=patient)
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

    def step(self) -> set[str]:
        """One read of the changes and their fan-out; the patients changed. With nobody
        listening, no read (and the marks are read anew for the next listener)."""
        if not self.subscriptions:
            self.marks = None
            return set()
        if self.marks is None:
            self.marks, changed = change_marks_now(), set()
        else:
            self.marks, changed = changes_after(marks=self.marks)
        now = self.clock()
        heartbeat = self.last_heartbeat is None or now - self.last_heartbeat >= (
            self.heartbeat_seconds
        )
        if heartbeat:
            self.last_heartbeat = now
        if changed or heartbeat:
            with self.lock:
                for subscription in self.subscriptions:
                    subscription.offer(changed=changed, heartbeat=heartbeat)
        return changed

    def run(self) -> None:
        """Steps every WATCH_SECONDS until stopped. A failed read sends nothing, heartbeats
        neither: the streams' pages see the silence and fall back to polling."""
        failing = False
        while not self.stopping.wait(WATCH_SECONDS):
            try:
                self.step()
            except Exception:  # the database down, mostly: the thread must live on
                if not failing:  # once a failure, not five times a second
                    logger.warning("ward change watcher: the read failed", exc_info=True)
                failing = True
                self.marks = None
                connection.close()
            else:
                if failing:
                    logger.info("ward change watcher: reading again")
                failing = False
            if self.subscriptions:
                close_old_connections()  # CONN_MAX_AGE's: one connection, kept
            else:
                connection.close()  # nobody listens: none held

    def ensure_running(self) -> None:
        with self.lock:
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(
                    target=self.run, name="ward-change-watcher", daemon=True
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
            _watcher = ChangeWatcher(max_clients=settings.WARD_PUSH_MAX_CLIENTS)
    _watcher.ensure_running()
    return _watcher


async def stream_async(*, watcher: ChangeWatcher, subscription: Subscription) -> AsyncIterator[str]:
    """The stream under ASGI: waits on an asyncio event the watcher's thread sets."""
    loop = asyncio.get_running_loop()
    woken = asyncio.Event()
    watcher.wake_with(subscription, lambda: loop.call_soon_threadsafe(woken.set))
    try:
        yield f"retry: {RETRY_MS}\n\n"
        end = time.monotonic() + STREAM_SECONDS
        while (left := end - time.monotonic()) > 0:
            try:
                await asyncio.wait_for(woken.wait(), timeout=min(left, HEARTBEAT_SECONDS))
            except TimeoutError:
                yield KEEPALIVE
                continue
            woken.clear()
            if text := watcher.take(subscription):
                yield text
    finally:
        watcher.unsubscribe(subscription)


def stream_sync(*, watcher: ChangeWatcher, subscription: Subscription) -> Iterator[str]:
    """The stream under a threaded WSGI server (`runserver`, the tests' live server): a thread
    a client, as that server gives each request anyway."""
    woken = threading.Event()
    watcher.wake_with(subscription, woken.set)
    try:
        yield f"retry: {RETRY_MS}\n\n"
        end = time.monotonic() + STREAM_SECONDS
        while (left := end - time.monotonic()) > 0:
            if not woken.wait(timeout=min(left, HEARTBEAT_SECONDS)):
                yield KEEPALIVE  # a client gone is found out by this write
                continue
            woken.clear()
            if text := watcher.take(subscription):
                yield text
    finally:
        watcher.unsubscribe(subscription)
