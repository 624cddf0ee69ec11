"""Health checks for load balancers, container engines and orchestrators.

- `GET /healthz`: liveness. The process answers HTTP; nothing else is checked, so that a
  database or broker outage never gets healthy web processes restarted in a loop.
- `GET /readyz`: readiness. The database answers a query and takes a write (one rolled
  back: a read-only file or a read-only server fails it), the Kafka broker answers a
  metadata request, each within a short timeout, and every check an app registered
  (`readiness_check_register`, from its AppConfig.ready(); e.g. vitals: no consumer held at a
  message the DLQ does not take) passes; 200 with the detail when all do, 503 when one does
  not. A load balancer stops sending traffic to a process that is not ready.

Neither needs a login nor says anything about patients. Both are exempt from the HTTPS
redirect (settings.SECURE_REDIRECT_EXEMPT): probes speak plain HTTP inside the cluster.
"""

import threading
import time
from collections.abc import Callable

from confluent_kafka.admin import AdminClient
from django.db import DatabaseError, connections, transaction
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from core.exceptions import KafkaUnavailable, NotReady
from core.kafka import admin_create, broker_check

BROKER_TIMEOUT_S = 2.0

_admin: AdminClient | None = None
# Checks the apps add (name -> a callable that raises NotReady, DatabaseError or
# KafkaUnavailable when not ready): this module imports no app.
_checks: dict[str, Callable[[], None]] = {}


def readiness_check_register(*, name: str, check: Callable[[], None]) -> None:
    """Add a check to /readyz under `name` (registering a name again replaces its check)."""
    _checks[name] = check


_admin_lock = threading.Lock()


def _broker_admin() -> AdminClient:
    """One admin client per process, kept: it reconnects by itself when the broker returns, and
    a probe every few seconds should not build a client (threads, sockets) each time."""
    global _admin
    with _admin_lock:
        if _admin is None:
            _admin = admin_create()
        return _admin


def database_check() -> None:
    """Raise DatabaseError unless the default database answers `SELECT 1`."""
    with connections["default"].cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()


# How long the write probe waits for SQLite's write lock (a consumer's batch holds it for
# milliseconds): a probe must answer within the prober's timeout.
WRITE_PROBE_LOCK_TIMEOUT_S = 2.0
# A real row to write to: there is always one once the database is migrated.
_WRITE_PROBE_SQL = (
    "UPDATE django_migrations SET app = app WHERE id = (SELECT MIN(id) FROM django_migrations)"
)


class _RolledBack(Exception):
    pass


def database_write_check(*, using: str = "default") -> None:
    """Raise DatabaseError ("database cannot be written: <the database's words>") unless the
    database takes a write: an UPDATE of a real row that changes nothing, in a transaction (or
    savepoint) rolled back. A temporary table would not do: SQLite writes it elsewhere than the
    file, and a PostgreSQL standby refuses only writes to real tables.
    SQLite: the write lock is waited for WRITE_PROBE_LOCK_TIMEOUT_S at most."""
    connection = connections[using]
    sqlite = connection.vendor == "sqlite"
    try:
        with connection.cursor() as cursor:
            if sqlite:
                cursor.execute(f"PRAGMA busy_timeout = {int(WRITE_PROBE_LOCK_TIMEOUT_S * 1000)}")
            try:
                with transaction.atomic(using=using):
                    cursor.execute(_WRITE_PROBE_SQL)
                    raise _RolledBack
            except _RolledBack:
                pass
            finally:
                if sqlite:
                    # Back to the connection's own (settings: SQLITE_BUSY_TIMEOUT).
                    timeout_ms = int(connection.settings_dict["OPTIONS"].get("timeout", 5) * 1000)
                    cursor.execute(f"PRAGMA busy_timeout = {timeout_ms}")
    except DatabaseError as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise type(exc)(f"database cannot be written: {reason}") from exc


def broker_ready_check() -> None:
    """Raise KafkaUnavailable unless the broker answers within BROKER_TIMEOUT_S."""
    broker_check(_broker_admin(), timeout=BROKER_TIMEOUT_S)


def _timed(check: Callable[[], None]) -> dict:
    started = time.monotonic()
    try:
        check()
    except (DatabaseError, KafkaUnavailable, NotReady) as exc:
        result = {"ok": False, "error": str(exc).strip().splitlines()[0][:300]}
        if isinstance(exc, NotReady):
            result.update(exc.detail)
    else:
        result = {"ok": True}
    result["latency_ms"] = round((time.monotonic() - started) * 1000, 1)
    return result


@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


@never_cache
@require_GET
def readyz(request: HttpRequest) -> JsonResponse:
    checks = {"database": _timed(database_check)}
    # Writing is asked only of a database that answers (one error, not two).
    if checks["database"]["ok"]:
        checks["database_write"] = _timed(database_write_check)
    checks["broker"] = _timed(broker_ready_check)
    # An app's check reads the database: not asked when the database does not answer.
    if checks["database"]["ok"]:
        checks |= {name: _timed(check) for name, check in _checks.items()}
    ready = all(check["ok"] for check in checks.values())
    return JsonResponse(
        {"status": "ready" if ready else "not_ready", "checks": checks},
        status=200 if ready else 503,
    )
