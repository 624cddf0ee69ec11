"""gunicorn settings for the `web` service (the Docker image's command) and the `push` one.

    gunicorn -c gunicorn.conf.py icu.wsgi
    gunicorn -c gunicorn.conf.py --worker-class asgi --workers 1 --bind 0.0.0.0:8001 icu.asgi

Each setting can be changed through the environment without rebuilding the image.
"""

import os
import shutil
from pathlib import Path

bind = os.environ.get("GUNICORN_BIND", "0.0.0.0:8000")
# Sync workers: the API is short database reads. 2-4 per core is gunicorn's advice. The pages'
# stream of changes runs in a process of its own with `--worker-class asgi --workers 1
# icu.asgi` (docker-compose.yml's `push`), the same settings otherwise.
workers = int(os.environ.get("GUNICORN_WORKERS", "3"))
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
graceful_timeout = 20
# gunicorn's control socket (gunicornc) is not used; its default path (~/.gunicorn/gunicorn.ctl)
# would be shared by every gunicorn of the user: the web workers, the push process, the tests'.
control_socket_disable = True
# Request limits, gunicorn's own, checked before Django sees anything (README, "Security"). The
# longest legitimate request line (a FHIR search with dates, codes and a cursor) is a few hundred
# bytes: 4094 (gunicorn's default, at most 8190) answers a longer one 414. A browser sends ~20
# headers, a proxy adds a few: more than 50 is 431, as is one header over 8190 bytes (a
# session's cookies are well under 1 KB). Bodies: MAX_REQUEST_BODY_BYTES in the application.
limit_request_line = 4094
limit_request_fields = 50
limit_request_field_size = 8190
# Our JSON log lines already say which request did what; gunicorn's access log would repeat
# each request in another format.
accesslog = None
errorlog = "-"
# Gunicorn's own lines (worker boots and timeouts) in the project's format: LOG_FORMAT, JSON
# unless text (as `make run` sets it, whose push process is a gunicorn).
_log_format = "text" if os.environ.get("LOG_FORMAT") == "text" else "json"
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "json": {"()": "core.logging.JsonFormatter"},
        "text": {"()": "core.logging.TextFormatter"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": _log_format}},
    "loggers": {"gunicorn.error": {"handlers": ["console"], "level": "INFO", "propagate": False}},
}


# Clients connect to gunicorn itself (docker-compose.yml publishes its port): no proxy adds to
# X-Forwarded-For, so none is trusted for the client's address (core/auth.py). Behind a reverse
# proxy that appends to X-Forwarded-For, set TRUSTED_PROXIES=1 in the environment (one per proxy).
os.environ.setdefault("TRUSTED_PROXIES", "0")

# Prometheus multiprocess mode, always under gunicorn: each worker writes its metrics to files
# in this directory and /metrics adds them up, whichever worker answers the scrape. Set here,
# in the master, before the workers fork and import prometheus_client.
os.environ.setdefault(
    "PROMETHEUS_MULTIPROC_DIR",
    f"/tmp/icu-prometheus-{bind.rsplit(':', 1)[-1]}",  # noqa: S108
)

# Every setting is checked here, in the master, before a worker starts: a bad one stops gunicorn
# with its one line and exit status 2 (core/startup.py), not a traceback per worker boot.
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "icu.settings")
from core.startup import settings_load_or_exit  # noqa: E402

settings_load_or_exit()


def on_starting(server) -> None:
    """The directory must start empty: stale files of an earlier run would be summed in."""
    directory = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    shutil.rmtree(directory, ignore_errors=True)
    Path(directory).mkdir(parents=True)


def post_worker_init(worker) -> None:
    """The worker has loaded the application: its long-lived objects out of the garbage
    collector's full collections (core/startup.py)."""
    from core.startup import worker_ready

    worker_ready()


def child_exit(server, worker) -> None:
    """A worker is gone: keep its counters, drop its live gauges."""
    from core.metrics import child_exit as metrics_child_exit

    metrics_child_exit(server, worker)
