"""Health checks for load balancers, container engines and orchestrators.

- `GET /healthz`: liveness. The process answers HTTP; nothing else is checked, so that a
  database or broker outage never gets healthy web processes restarted in a loop.
- `GET /readyz`: readiness. The database answers a query and the Kafka broker answers a
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
from django.db import DatabaseError, connections
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from icu.exceptions import KafkaUnavailable, NotReady
from icu.kafka import admin_create, broker_check

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
    checks = {"database": _timed(database_check), "broker": _timed(broker_ready_check)}
    # An app's check reads the database: not asked when the database does not answer.
    if checks["database"]["ok"]:
        checks |= {name: _timed(check) for name, check in _checks.items()}
    ready = all(check["ok"] for check in checks.values())
    return JsonResponse(
        {"status": "ready" if ready else "not_ready", "checks": checks},
        status=200 if ready else 503,
    )
