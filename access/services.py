"""Recording who read which patient's data (PatientAccess), off the request's critical path.

A view calls `patient_access_record()` for each read of a patient's data: in memory only, no
query. The process keeps one entry per (user, patient, kind, window); the first read of an
entry makes it due, and so does a read finding its count unwritten for FLUSH_EVERY. Due entries
are written by `patient_access_flush_after_response`, connected to Django's `request_finished`:
it runs when the server closes the response, after the client has it, in the request's own
thread and connection (nothing to lose in a queue when a worker dies, no thread to manage, and
in tests the test's own transaction). One upsert per entry adds the reads counted since the
last write, so several web workers sharing a window add up in one row (the database's unique
constraint, never two rows). A write that fails is logged (ERROR) and never fails the read; its
entry is forgotten, so the next read tries again.

Why not transaction.on_commit: a read has no transaction, so on_commit would run at once,
inside the request. Why not a thread and a queue: a connection of its own per worker, and a
test could not see what it writes.
"""

import logging
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from uuid import UUID

from django.conf import settings
from django.db import connections, router, transaction

from access.models import PatientAccess

logger = logging.getLogger(__name__)

# A read finding its entry's count unwritten this long writes it (count, last_at): a page open
# all day keeps its row up to date within a minute at one statement a minute.
FLUSH_EVERY = timedelta(minutes=1)

Key = tuple[str, UUID, str, datetime]  # username, patient uuid, kind, window start


@dataclass
class _Entry:
    user_id: int | None
    patient_id: int | None
    first_at: datetime
    last_at: datetime
    count: int = 0  # reads counted
    written: int = 0  # of which written to the database
    written_at: datetime | None = None
    due: bool = True


_lock = threading.Lock()
_entries: dict[Key, _Entry] = {}
_local = threading.local()


def _now() -> datetime:
    return datetime.now(tz=UTC)


def access_window_start(*, at: datetime, window: timedelta) -> datetime:
    """The start of the window of `window` (aligned on the epoch) that holds `at`."""
    seconds = window.total_seconds()
    return datetime.fromtimestamp(at.timestamp() // seconds * seconds, tz=UTC)


def patient_access_record(*, user, patient, kind: str, at: datetime | None = None) -> None:
    """Count a read of `patient`'s data (kind: PatientAccess.Kind) by `user`; written after
    the response. No query; anonymous users are not recorded (nothing is shown to them)."""
    if not getattr(user, "is_authenticated", False) or patient is None:
        return
    now = at or _now()
    key = (
        user.get_username(),
        patient.uuid,
        kind,
        access_window_start(at=now, window=settings.ACCESS_LOG_WINDOW),
    )
    with _lock:
        entry = _entries.get(key)
        if entry is None:
            entry = _entries[key] = _Entry(
                user_id=user.pk, patient_id=patient.pk, first_at=now, last_at=now
            )
        entry.count += 1
        entry.last_at = max(entry.last_at, now)
        if entry.written_at is not None and now - entry.written_at >= FLUSH_EVERY:
            entry.due = True
        if entry.due:
            _local.due = True


def patient_access_flush_after_response(**kwargs) -> None:
    """request_finished receiver: write what this request made due. Never raises."""
    if getattr(_local, "due", False):
        _local.due = False
        patient_access_flush(due_only=True)


def patient_access_flush(*, due_only: bool = False) -> int:
    """Write the counted reads not written yet (`due_only`: only the due entries, and those of
    windows that have ended); return how many rows were written. Never raises: a failure is
    logged and its entries forgotten (the next read of theirs counts afresh and retries)."""
    now = _now()
    current = access_window_start(at=now, window=settings.ACCESS_LOG_WINDOW)
    with _lock:
        batch = [
            (key, entry, entry.count - entry.written, entry.last_at)
            for key, entry in _entries.items()
            if entry.count > entry.written and (not due_only or entry.due or key[3] < current)
        ]
        for _key, entry, _delta, _last in batch:
            entry.due = False
        # Entries of ended windows that are fully written are done with.
        for key in [k for k, e in _entries.items() if k[3] < current and e.count == e.written]:
            del _entries[key]
    written = 0
    for key, entry, delta, last_at in batch:
        try:
            _upsert(key=key, entry=entry, delta=delta, last_at=last_at)
        except Exception:
            logger.exception(
                "access log not written",
                extra={
                    "username": key[0],
                    "patient_uuid": str(key[1]),
                    "kind": key[2],
                    "reads": delta,
                },
            )
            with _lock:
                _entries.pop(key, None)
            continue
        written += 1
        with _lock:
            entry.written += delta
            entry.written_at = now
            if key[3] < current and entry.count == entry.written:
                _entries.pop(key, None)
    return written


def patient_access_forget() -> None:
    """Forget everything counted and not written (tests: each starts with nothing pending)."""
    with _lock:
        _entries.clear()
    _local.due = False


def _upsert(*, key: Key, entry: _Entry, delta: int, last_at: datetime) -> None:
    """One statement: the row of the window, created with `delta` reads or added to."""
    username, patient_uuid, kind, window_start = key
    alias = router.db_for_write(PatientAccess)
    connection = connections[alias]
    table = connection.ops.quote_name(PatientAccess._meta.db_table)
    greatest = "GREATEST" if connection.vendor == "postgresql" else "MAX"
    least = "LEAST" if connection.vendor == "postgresql" else "MIN"
    # The table and the functions are ours; the values are parameters.
    sql = (
        f"INSERT INTO {table} (user_id, username, patient_id, patient_uuid, kind, window_start,"  # noqa: S608
        " first_at, last_at, count) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
        " ON CONFLICT (username, patient_uuid, kind, window_start) DO UPDATE SET"
        f" count = {table}.count + excluded.count,"
        f" first_at = {least}({table}.first_at, excluded.first_at),"
        f" last_at = {greatest}({table}.last_at, excluded.last_at)"
    )
    field = PatientAccess._meta.get_field
    values = [
        entry.user_id,
        username,
        entry.patient_id,
        field("patient_uuid").get_db_prep_value(patient_uuid, connection),
        kind,
        field("window_start").get_db_prep_value(window_start, connection),
        field("first_at").get_db_prep_value(entry.first_at, connection),
        field("last_at").get_db_prep_value(last_at, connection),
        delta,
    ]
    started = time.perf_counter()
    if connection.in_atomic_block:
        # Inside a transaction (a test's): a savepoint, so that a failure rolls back this
        # statement only. After a response there is none: the statement is its own.
        with transaction.atomic(using=alias), connection.cursor() as cursor:
            cursor.execute(sql, values)
    else:
        with connection.cursor() as cursor:
            cursor.execute(sql, values)
    logger.debug(
        "access log written",
        extra={"kind": kind, "reads": delta, "ms": round((time.perf_counter() - started) * 1e3, 2)},
    )
