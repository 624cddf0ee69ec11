"""Prometheus metrics of every process: the one place they are defined and served.

Web (Django; `GET /metrics`, no patient data; for staff users, or for Prometheus with
`Authorization: Bearer <METRICS_TOKEN>`):
- `icu_http_requests_total{method,route,status}`: requests answered, by HTTP method, route
  (the URL pattern's name, e.g. `api:patient-detail`; `<static>` for static files,
  `<unmatched>` when no pattern matched) and status code.
- `icu_http_request_duration_seconds{method,route,status}`: histogram of the time from the
  request entering Django's middleware to the response leaving it.
- `icu_alarm_processing_up`: 1 while a consumer's alarm sweep was heard within
  ALARM_PROCESSING_STOPPED_AFTER seconds (the database's clock), 0 when none was (stopped, or
  never started); absent when the database does not answer (alert on `absent()` too).
- `icu_alarm_processing_heartbeat_age_seconds`: seconds since the latest alarm sweep of any
  consumer; absent before the first one. Both read at each scrape (vitals/health.py).

Consumer (`manage.py consume_vitals --metrics-port PORT`; the same port answers `/healthz` and
`/readyz`, 503 with the reason while the consumer cannot write the database, see
vitals.consumer.ConsumerHealth):
- `icu_consumer_readings_consumed_total`: messages taken from the vitals topic in batches that
  completed; equals stored + duplicates + rejected.
- `icu_consumer_readings_stored_total`: readings newly written to the database.
- `icu_consumer_readings_duplicate_total`: readings already stored (a replay), skipped.
- `icu_consumer_readings_rejected_total{reason}`: messages that broke the contract (or that the
  database refused), by DLQ reason code; every reason is present from the start, at 0.
- `icu_consumer_signs_refused_total{reason}`: signs the contract refused (out of range, an
  implausible pressure) in readings stored without them: the rest of the reading is kept and
  judged (a pulse of 0 beside a flat pressure); each is also logged. Every reason at 0 from the
  start.
- `icu_consumer_dlq_messages_total`: messages the DLQ topic acknowledged; above the rejected
  total only when a batch was retried after part of its DLQ copies had been written.
- `icu_consumer_dlq_failures_total{error}`: DLQ copies the dead-letter topic did not take
  (refused at once or in the delivery report, or not acknowledged in time: `_FLUSH_TIMEOUT`),
  by librdkafka error code; each holds its batch, which is retried.
- `icu_consumer_dlq_blocked`: partitions this consumer is held at because the DLQ does not
  take one of their messages (0 when none); also on the web's `/readyz`.
- `icu_consumer_batches_retried_total`: batches not completed (database unavailable or the DLQ
  not answering), rewound and tried again after a backoff.
- `icu_consumer_alarm_events_published_total`: alarm changes the alarms topic acknowledged.
- `icu_consumer_name_mismatch_total`: readings stored under a patient (by uuid) whose name is
  not the one they carry; each is also logged, and recorded as the patient's name conflict.
- `icu_consumer_batch_size`: histogram of messages per completed batch.
- `icu_consumer_batch_write_seconds`: histogram of the database transaction of a completed batch
  (readings, NEWS2 and alarms).
- `icu_consumer_reading_delay_seconds`: histogram of the delay from a reading's timestamp
  (`measured_at`) to its storage (`received_at`), one observation per stored reading; a device
  clock ahead of the consumer's counts as 0.
- `icu_consumer_lag{topic,partition}`: messages behind, per assigned partition: the high
  watermark of the last fetch minus the consumer's position; refreshed every few seconds.

Emulator (`manage.py run_patient --metrics-port PORT`):
- `icu_emulator_readings_produced_total`: readings handed to the Kafka producer.
- `icu_emulator_readings_delivered_total`: readings the broker acknowledged.
- `icu_emulator_delivery_failures_total{error}`: readings not delivered, by librdkafka error
  code (e.g. `_MSG_TIMED_OUT`).
- `icu_emulator_patients`: patients this process emulates.

HL7 gateway (`manage.py run_hl7_gateway --metrics-port PORT`):
- `icu_gateway_messages_total{type,ack}`: HL7 messages answered, by message type (`ORU^R01`,
  `ADT^A01`, ..., `other` for any type the gateway does not handle) and acknowledgement code.
- `icu_gateway_readings_delivered_total`: readings the vitals topic acknowledged (acks=all).
- `icu_gateway_delivery_failures_total{error}`: readings not delivered (the message got an AR),
  by librdkafka error code.
- `icu_gateway_ack_seconds`: histogram of the time from a message's last byte received to its
  acknowledgement written.
- `icu_gateway_connections`: connections open now.
- `icu_gateway_junk_bytes_total`: bytes received outside any MLLP frame, ignored.

The consumer, the emulator and the gateway also expose prometheus_client's `process_*` and
`python_*` metrics. Several gunicorn workers: set PROMETHEUS_MULTIPROC_DIR (an empty directory,
for the web server only) and `child_exit = core.metrics.child_exit` in gunicorn's config;
`/metrics` then adds up every worker's counts.
"""

import argparse
import functools
import hmac
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from wsgiref.simple_server import WSGIRequestHandler, make_server

from django.conf import settings
from django.core.management.base import CommandError, CommandParser
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import path
from django.views.decorators.http import require_safe
from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    make_wsgi_app,
    multiprocess,
)
from prometheus_client.exposition import ThreadingWSGIServer, choose_encoder

logger = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
UNMATCHED_ROUTE = "<unmatched>"
STATIC_ROUTE = "<static>"
# Anything else a client may send as a method is counted as "other": label values must stay a
# small fixed set whatever the clients do.
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"})


# --- web -------------------------------------------------------------------------------------
class WebMetrics:
    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        labels = ("method", "route", "status")
        self.requests = Counter(
            "icu_http_requests",
            "HTTP requests answered, by method, route name (or pattern) and status code.",
            labels,
            registry=registry,
        )
        self.duration = Histogram(
            "icu_http_request_duration_seconds",
            "Time from the request entering Django's middleware to the response leaving it.",
            labels,
            registry=registry,
        )


@functools.cache
def web_metrics() -> WebMetrics:
    return WebMetrics()


def request_route(request: HttpRequest) -> str:
    """A bounded label for the URL: the pattern's (namespaced) name, or the pattern itself when
    it has no name; never the raw path, which has a value per patient."""
    match = getattr(request, "resolver_match", None)
    if match is None:
        # Static files are answered by WhiteNoise's middleware before URL resolution.
        return STATIC_ROUTE if request.path.startswith(settings.STATIC_URL) else UNMATCHED_ROUTE
    return match.view_name if match.url_name else f"/{match.route}"


class PrometheusMiddleware:
    """Counts and times every request. Sits right after SecurityMiddleware, so that the time
    includes sessions, authentication and the view."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        self.metrics = web_metrics()

    def __call__(self, request: HttpRequest) -> HttpResponse:
        started = time.perf_counter()
        response = self.get_response(request)
        elapsed = time.perf_counter() - started
        method = request.method if request.method in HTTP_METHODS else "other"
        labels = (method, request_route(request), str(response.status_code))
        self.metrics.requests.labels(*labels).inc()
        self.metrics.duration.labels(*labels).observe(elapsed)
        return response


def _metrics_refusal(request: HttpRequest) -> HttpResponse | None:
    """None when the request may read the metrics: it presents `Bearer <METRICS_TOKEN>` (a
    scraper; no token configured, no bearer access), or comes from a staff user (a DRF token
    or a session). Otherwise the answer, in the API's error shape: 401 without valid
    credentials, 403 for a user who is not staff."""
    # Imported here: the workers' metrics (and gunicorn's master) need no DRF.
    from rest_framework.exceptions import AuthenticationFailed

    from core.authentication import TokenAuthentication

    keyword, _, credentials = request.headers.get("Authorization", "").partition(" ")
    if keyword.lower() == "bearer":
        expected = settings.METRICS_TOKEN
        given = credentials.strip()
        if expected and hmac.compare_digest(given.encode(), expected.encode()):
            return None
        return _metrics_error(401, "authentication_failed", "Invalid bearer token.")
    user = request.user
    try:
        authenticated = TokenAuthentication().authenticate(request)
    except AuthenticationFailed as exc:
        return _metrics_error(401, "authentication_failed", str(exc.detail))
    if authenticated is not None:
        user = authenticated[0]
    if not user.is_authenticated:
        return _metrics_error(
            401, "not_authenticated", "Authentication credentials were not provided."
        )
    if not (user.is_active and user.is_staff):
        return _metrics_error(403, "permission_denied", "Only staff may read the metrics.")
    return None


def _metrics_error(status: int, code: str, message: str) -> JsonResponse:
    from core.exceptions import error_body

    response = JsonResponse(
        error_body(status_code=status, code=code, message=message), status=status
    )
    if status == 401:
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
    return response


# Collectors the apps add to the web's /metrics (`web_collector_register`, from their
# AppConfig.ready()): read when scraped, e.g. vitals' alarm processing gauges. Not in REGISTRY:
# the workers, which serve REGISTRY on their own port, do not collect them.
_web_collectors: dict[str, object] = {}


def web_collector_register(*, name: str, collector: object) -> None:
    """Add a collector (an object with `collect()` yielding metric families) to the web's
    /metrics under `name` (registering a name again replaces it)."""
    _web_collectors[name] = collector


class _Joined:
    """A registry and the apps' collectors, as one for the encoder."""

    def __init__(self, *sources: object) -> None:
        self.sources = sources

    def collect(self) -> Iterator:
        for source in self.sources:
            yield from source.collect()


@require_safe
def metrics_view(request: HttpRequest) -> HttpResponse:
    """The metrics in the text exposition format (OpenMetrics if the scraper asks for it), for
    staff users and for a scraper presenting METRICS_TOKEN (see _metrics_refusal).
    With PROMETHEUS_MULTIPROC_DIR set (several gunicorn workers) the counts of every worker,
    live or gone, are added up from that directory."""
    if refusal := _metrics_refusal(request):
        return refusal
    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    joined = _Joined(registry, *_web_collectors.values())
    return HttpResponse(encoder(joined), content_type=content_type)


# icu/urls.py mounts this with `path("metrics", include("core.metrics"))`.
urlpatterns = [path("", metrics_view, name="metrics")]


def child_exit(server: object, worker: object) -> None:
    """gunicorn hook (`child_exit = core.metrics.child_exit` in gunicorn.conf.py): a worker
    that exited must not count in live gauges any more. Its counters stay in the sums."""
    if os.environ.get(MULTIPROC_ENV):
        multiprocess.mark_process_dead(worker.pid)


# --- consumer --------------------------------------------------------------------------------
class ConsumerMetrics:
    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.consumed = Counter(
            "icu_consumer_readings_consumed",
            "Messages taken from the vitals topic in completed batches "
            "(= stored + duplicate + rejected).",
            registry=registry,
        )
        self.stored = Counter(
            "icu_consumer_readings_stored",
            "Readings newly written to the database.",
            registry=registry,
        )
        self.duplicates = Counter(
            "icu_consumer_readings_duplicate",
            "Readings already in the database (a replay), skipped.",
            registry=registry,
        )
        self.rejected = Counter(
            "icu_consumer_readings_rejected",
            "Messages that broke the contract or that the database refused, by DLQ reason.",
            ("reason",),
            registry=registry,
        )
        self.signs_refused = Counter(
            "icu_consumer_signs_refused",
            "Signs the contract refused in readings stored without them, by reason.",
            ("reason",),
            registry=registry,
        )
        self.dlq = Counter(
            "icu_consumer_dlq_messages",
            "Messages the dead-letter topic acknowledged.",
            registry=registry,
        )
        self.dlq_failures = Counter(
            "icu_consumer_dlq_failures",
            "DLQ copies the dead-letter topic did not take, by librdkafka error code.",
            ("error",),
            registry=registry,
        )
        self.dlq_blocked = Gauge(
            "icu_consumer_dlq_blocked",
            "Partitions held at a message the DLQ does not take (not committed past, retried).",
            registry=registry,
        )
        self.retries = Counter(
            "icu_consumer_batches_retried",
            "Batches not completed (database unavailable, DLQ not answering), retried.",
            registry=registry,
        )
        self.alarm_events = Counter(
            "icu_consumer_alarm_events_published",
            "Alarm changes the alarms topic acknowledged.",
            registry=registry,
        )
        self.name_mismatches = Counter(
            "icu_consumer_name_mismatch",
            "Readings stored under a patient whose name is not the one they carry (an identity "
            "conflict, recorded on the patient).",
            registry=registry,
        )
        self.batch_size = Histogram(
            "icu_consumer_batch_size",
            "Messages per completed batch.",
            buckets=(1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000),
            registry=registry,
        )
        self.batch_write = Histogram(
            "icu_consumer_batch_write_seconds",
            "Duration of a completed batch's database transaction (readings, NEWS2, alarms).",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=registry,
        )
        self.reading_delay = Histogram(
            "icu_consumer_reading_delay_seconds",
            "Delay from a reading's timestamp (measured_at) to its storage (received_at).",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600),
            registry=registry,
        )
        self.lag = Gauge(
            "icu_consumer_lag",
            "Messages behind per assigned partition: high watermark minus the consumer's position.",
            ("topic", "partition"),
            registry=registry,
        )


@functools.cache
def consumer_metrics(*, reasons: frozenset[str] = frozenset()) -> ConsumerMetrics:
    """The consumer's metrics, once per process. `reasons`: the rejection reasons (the consumer
    passes vitals.contract.REASONS), each counted from the start at 0, so that rate() and alerts
    see the first one."""
    metrics = ConsumerMetrics()
    for reason in sorted(reasons):
        metrics.rejected.labels(reason)
        metrics.signs_refused.labels(reason)
    return metrics


# --- emulator --------------------------------------------------------------------------------
class EmulatorMetrics:
    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.produced = Counter(
            "icu_emulator_readings_produced",
            "Readings handed to the Kafka producer.",
            registry=registry,
        )
        self.delivered = Counter(
            "icu_emulator_readings_delivered",
            "Readings the broker acknowledged.",
            registry=registry,
        )
        self.failures = Counter(
            "icu_emulator_delivery_failures",
            "Readings not delivered, by librdkafka error code.",
            ("error",),
            registry=registry,
        )
        self.patients = Gauge(
            "icu_emulator_patients", "Patients this process emulates.", registry=registry
        )


@functools.cache
def emulator_metrics() -> EmulatorMetrics:
    return EmulatorMetrics()


# --- HL7 gateway -----------------------------------------------------------------------------
class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.messages = Counter(
            "icu_gateway_messages",
            "HL7 messages answered, by message type and acknowledgement code.",
            ("type", "ack"),
            registry=registry,
        )
        self.delivered = Counter(
            "icu_gateway_readings_delivered",
            "Readings the vitals topic acknowledged (acks=all).",
            registry=registry,
        )
        self.failures = Counter(
            "icu_gateway_delivery_failures",
            "Readings not delivered (their message got an AR), by librdkafka error code.",
            ("error",),
            registry=registry,
        )
        self.ack_seconds = Histogram(
            "icu_gateway_ack_seconds",
            "Time from a message's last byte received to its acknowledgement written.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=registry,
        )
        self.connections = Gauge(
            "icu_gateway_connections", "HL7 connections open now.", registry=registry
        )
        self.junk = Counter(
            "icu_gateway_junk_bytes",
            "Bytes received outside any MLLP frame, ignored.",
            registry=registry,
        )


@functools.cache
def gateway_metrics() -> GatewayMetrics:
    return GatewayMetrics()


# --- serving a worker's metrics --------------------------------------------------------------
# A worker's readiness: (ready, body) for its /readyz, e.g. the consumer's (vitals/consumer.py).
Readiness = Callable[[], tuple[bool, dict]]


class _QuietHandler(WSGIRequestHandler):
    """No access log line per scrape or probe on stderr."""

    def log_message(self, format: str, *args: object) -> None:
        pass


def worker_wsgi_app(readiness: Readiness | None = None) -> Callable:
    """The worker's HTTP answers: `/healthz` (liveness: the process answers), `/readyz` (200
    or 503 with `readiness`'s body; always ready without one) and the metrics on every other
    path (prometheus_client's own app, as before)."""
    metrics_app = make_wsgi_app(REGISTRY)

    def app(environ: dict, start_response: Callable) -> list[bytes]:
        path = environ.get("PATH_INFO", "")
        if path not in ("/healthz", "/readyz"):
            return metrics_app(environ, start_response)
        if path == "/healthz":
            ready, body = True, {"status": "ok"}
        elif readiness is None:
            ready, body = True, {"status": "ready", "checks": {}}
        else:
            ready, body = readiness()
        payload = json.dumps(body).encode()
        start_response(
            "200 OK" if ready else "503 Service Unavailable",
            [
                ("Content-Type", "application/json"),
                ("Content-Length", str(len(payload))),
                ("Cache-Control", "no-cache, no-store, must-revalidate, max-age=0"),
            ],
        )
        return [payload]

    return app


@contextmanager
def metrics_server(
    port: int | None, address: str = "127.0.0.1", readiness: Readiness | None = None
) -> Iterator[str | None]:
    """Serve this process's metrics over HTTP at http://address:port/metrics while inside the
    block, with /healthz and /readyz (worker_wsgi_app), from a daemon thread. No port or 0:
    nothing is served and None is yielded; otherwise the URL. OSError if the address cannot be
    bound."""
    if not port:
        yield None
        return

    class Server(ThreadingWSGIServer):
        address_family = socket.AF_INET6 if ":" in address else socket.AF_INET

    server = make_server(address, port, worker_wsgi_app(readiness), Server, _QuietHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    host = f"[{address}]" if ":" in address else address
    try:
        yield f"http://{host}:{port}/metrics"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


# --- the commands' options -------------------------------------------------------------------
def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (0-65535)")
    return port


def metrics_arguments(parser: CommandParser) -> None:
    """--metrics-port and --metrics-address, the same for every worker command."""
    parser.add_argument(
        "--metrics-port",
        type=_port,
        default=0,
        metavar="PORT",
        help="Serve Prometheus metrics on http://ADDRESS:PORT/metrics (default 0: off).",
    )
    parser.add_argument(
        "--metrics-address",
        default="127.0.0.1",
        metavar="ADDRESS",
        help="Address the metrics server binds to (default 127.0.0.1, this machine only; "
        "0.0.0.0 for every interface, e.g. in a container).",
    )


def metrics_serve(
    stack: ExitStack, options: dict, readiness: Readiness | None = None
) -> str | None:
    """Start the metrics server the options ask for (with /healthz, and /readyz answered by
    `readiness`), stopped when `stack` closes; return its URL (None when off). A port that
    cannot be bound is a CommandError."""
    port, address = options["metrics_port"], options["metrics_address"]
    try:
        url = stack.enter_context(metrics_server(port, address, readiness))
    except OSError as exc:
        raise CommandError(
            f"Cannot serve metrics on {address}:{port}: {exc.strerror or exc}."
        ) from None
    if url:
        logger.info("serving metrics", extra={"url": url})
    return url
