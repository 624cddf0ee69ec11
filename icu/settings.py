"""Settings for ICU Monitor, read from the environment (and `.env`) with django-environ.

Every setting a deployment may change is listed in the README's settings table. Defaults are
for a laptop: SQLite next to the code and the embedded broker on 127.0.0.1:9092. Production
must set `SECRET_KEY` and keep `DEBUG` off; there is no secret default outside DEBUG.
"""

import math
import re
from datetime import timedelta
from pathlib import Path

import environ
from csp.constants import NONCE, NONE, SELF, UNSAFE_INLINE
from django.core.exceptions import ImproperlyConfigured

from icu.durations import duration_parse

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
# Values already in the environment win over the file: `DEBUG=false make run` does what it says.
environ.Env.read_env(env("ICU_ENV_FILE", default=str(BASE_DIR / ".env")))

DEBUG = env.bool("DEBUG", default=False)

SECRET_KEY = env("SECRET_KEY", default="")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "SECRET_KEY is not set. Set it in the environment or in .env "
            "(`make run` writes a development .env for you), or set DEBUG=true for local use."
        )
    SECRET_KEY = "insecure-development-key-do-not-use-in-production"  # noqa: S105

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]"])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    # Background jobs: Django's tasks framework (backported) and its database backend, whose
    # worker is `manage.py db_worker`.
    "django_tasks",
    "django_tasks_db",
    # Content-Security-Policy (django-csp). The platform app itself, `icu` (its `migrate`, safe
    # to start several at once, its login log and templates: icu/apps.py), comes after axes
    # below.
    "csp",
    "patients",
    "vitals",
    "ward",
    "exports",
    "access",
]

MIDDLEWARE = [
    "icu.logging.RequestIdMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # Content-Security-Policy (CONTENT_SECURITY_POLICY below), with request.csp_nonce.
    "csp.middleware.CSPMiddleware",
    "icu.metrics.PrometheusMiddleware",
    # A body over MAX_REQUEST_BODY_BYTES is a 413 before anything reads it (and counted above).
    "icu.request_limits.RequestBodyLimitMiddleware",
    # Static files (admin, browsable API, Swagger UI) from the app itself, compressed and with
    # far-future cache headers on the hashed names: no separate web server needed.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "icu.urls"
WSGI_APPLICATION = "icu.wsgi.application"
ASGI_APPLICATION = "icu.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database ---------------------------------------------------------------------------------
DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The consumer writes while the web server reads. WAL lets readers and the single writer
    # proceed together; IMMEDIATE takes the write lock at BEGIN so that `timeout` (the busy
    # wait) applies, instead of failing with "database is locked" halfway through a transaction.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "transaction_mode": "IMMEDIATE",
            "timeout": env.int("SQLITE_BUSY_TIMEOUT", default=20),
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
    )
else:
    DATABASES["default"]["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=60)
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = env("STATIC_ROOT", default=str(BASE_DIR / "var" / "static"))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    # Hashed, compressed files from `collectstatic` (the Docker image runs it). Without a
    # collectstatic (tests, a checkout) set the plain "django.contrib.staticfiles.storage.
    # StaticFilesStorage"; with DEBUG on, Django serves unhashed names anyway.
    "staticfiles": {
        "BACKEND": env(
            "STATICFILES_BACKEND", default="whitenoise.storage.CompressedManifestStaticFilesStorage"
        )
    },
}

# Uploaded and generated files: the export results (exports/). Never served as static files:
# only the API's result endpoint hands them out, to those who may see them. The web server and the
# worker must share this directory (a volume in docker-compose.yml).
MEDIA_ROOT = env("MEDIA_ROOT", default=str(BASE_DIR / "var" / "media"))

# --- Background jobs and exports ---------------------------------------------------------------
# django-tasks with its database backend: a job is a row, `manage.py db_worker` runs it. No
# broker or extra server; the tasks' queue is the application's own database.
TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend", "QUEUES": ["default"]}}


def _duration(name: str, default: str) -> timedelta:
    """A positive duration such as `7d` (icu/durations.py), checked now."""
    try:
        duration = duration_parse(env(name, default=default))
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name}: {exc}.") from None
    if not duration:
        raise ImproperlyConfigured(f"{name} must be longer than 0.")
    return duration


# How long an export's result is kept (and downloadable) after it finished.
EXPORT_RESULT_TTL = _duration("EXPORT_RESULT_TTL", default="7d")

# --- Access log (access/) ------------------------------------------------------------------------
# Who read which patient's data: at most one row per user, patient and kind of read per window
# of this length (a page polling every 2 s counts its reads in one row).
ACCESS_LOG_WINDOW = _duration("ACCESS_LOG_WINDOW", default="15m")

# --- HTTPS and cookies -------------------------------------------------------------------------
# Secure by default outside DEBUG. TLS is expected to end at a reverse proxy or load balancer in
# front of gunicorn, which says so with X-Forwarded-Proto (set TRUST_X_FORWARDED_PROTO only
# then: a client could send the header itself). The health checks and /metrics stay reachable
# over plain HTTP, for probes and scrapers inside the cluster.
SECURE = not DEBUG
if env.bool("TRUST_X_FORWARDED_PROTO", default=False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=SECURE)
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=SECURE)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=SECURE)
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31_536_000 if SECURE else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=SECURE)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=False)
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SILENCED_SYSTEM_CHECKS = [
    # HSTS preloading puts the domain in browsers' built-in lists, for good: a decision for
    # whoever owns the hospital's domain (SECURE_HSTS_PRELOAD=true), not a default.
    "security.W021",
]

# --- Content-Security-Policy (django-csp) ------------------------------------------------------
# Every page runs only the application's own scripts and styles, from its own origin: no inline
# script (the central station's import map and Swagger UI's inline style carry the response's
# nonce, `request.csp_nonce`), no eval, no third-party origin, no plugins, no framing. Style
# attributes are allowed (style-src-attr): the browsable API's and the admin's templates use
# them, and CSS in an attribute runs no code nor loads from elsewhere (img-src is 'self').
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF, NONCE],
        "style-src": [SELF, NONCE],
        "style-src-attr": [UNSAFE_INLINE],
        "img-src": [SELF, "data:"],
        "connect-src": [SELF],
        "object-src": [NONE],
        "base-uri": [SELF],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    }
}

# The central station's login page (ward/); the browsable API and the admin keep their own.
LOGIN_URL = "ward:login"
LOGIN_REDIRECT_URL = "/"

# Throttling counts (DRF) live here. Local memory: each process (gunicorn worker) counts on its
# own. CACHE_URL names a cache the workers share, e.g. filecache:///var/tmp/icu-cache (one
# host) or dbcache://icu_cache (after `manage.py createcachetable`).
CACHES = {"default": env.cache("CACHE_URL", default="locmemcache://")}
# Prometheus' bearer token for `GET /metrics` (icu/metrics.py); empty: staff users only.
METRICS_TOKEN = env("METRICS_TOKEN", default="")

# --- API --------------------------------------------------------------------------------------
API_PREFIX = env("API_PREFIX", default="api/")
if API_PREFIX and not API_PREFIX.endswith("/"):
    API_PREFIX += "/"
API_PREFIX = API_PREFIX.lstrip("/")


def _throttle_rate(name: str, default: str) -> str:
    """A DRF rate, "<requests>/<s|sec|m|min|h|hour|d|day>", checked now rather than failing
    every request."""
    rate = env(name, default=default)
    if not re.fullmatch(r"[1-9]\d*/(s|sec|second|m|min|minute|h|hour|d|day)", rate):
        raise ImproperlyConfigured(f"{name}={rate!r}: use e.g. 60/min (per s, min, hour or day).")
    return rate


REST_FRAMEWORK = {
    # Token first: its WWW-Authenticate header makes anonymous requests a 401, not a 403.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    # Roles (Django groups and model permissions) and what each route needs: icu/permissions.py.
    "DEFAULT_PERMISSION_CLASSES": ["icu.permissions.ApiPermission"],
    # Per client address for anonymous requests (the token endpoint), per user otherwise;
    # counted in CACHES (per process with the default local-memory cache).
    "DEFAULT_THROTTLE_CLASSES": [
        "rest_framework.throttling.AnonRateThrottle",
        "rest_framework.throttling.UserRateThrottle",
    ],
    "DEFAULT_THROTTLE_RATES": {
        "anon": _throttle_rate("THROTTLE_ANON", default="60/min"),
        "user": _throttle_rate("THROTTLE_USER", default="1200/min"),
    },
    "DEFAULT_RENDERER_CLASSES": [
        "rest_framework.renderers.JSONRenderer",
        "icu.renderers.BrowsableAPIRenderer",
    ],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "icu.exceptions.api_exception_handler",
    "DATETIME_FORMAT": "iso-8601",
    "TEST_REQUEST_DEFAULT_FORMAT": "json",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "ICU Monitor API",
    "DESCRIPTION": "Patients and their vital signs, as streamed by bedside monitors through Kafka.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # The schema describes health-data endpoints; it is no more public than they are.
    "SERVE_PERMISSIONS": ["icu.permissions.ApiPermission"],
    "COMPONENT_SPLIT_REQUEST": True,
    "SWAGGER_UI_DIST": "SIDECAR",
    # No validator badge: it would send the schema's URL to validator.swagger.io (and the CSP
    # refuses third-party origins).
    "SWAGGER_UI_SETTINGS": {"deepLinking": True, "validatorUrl": None},
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # An alarm's priority and the priority its acknowledgement covered: one enum.
    "ENUM_NAME_OVERRIDES": {"AlarmPriorityEnum": "vitals.models.AlarmPriority"},
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "icu.openapi.error_responses",
    ],
}

# --- Login doors: client address, lock-outs, login log (icu/auth.py) --------------------------


def _whole_number(name: str, default: int, *, minimum: int) -> int:
    text = env.str(name, default=str(default))
    try:
        value = int(text)
    except ValueError:
        value = minimum - 1
    if value < minimum:
        raise ImproperlyConfigured(
            f"{name} must be a whole number of {minimum} or more (got {text!r})."
        )
    return value


# How many reverse proxies in front of gunicorn append to X-Forwarded-For. 0 (no proxy): the
# header is ignored, for any client can write it. N: the N-th address from the right is the
# client's. Decides the address everywhere: DRF's throttles, the lock-outs, the login log.
TRUSTED_PROXIES = _whole_number("TRUSTED_PROXIES", 0, minimum=0)
REST_FRAMEWORK["NUM_PROXIES"] = TRUSTED_PROXIES

# django-axes: failed logins counted per user name and per client address, on every login door
# (the token endpoint's too: its view authenticates with the request). At LOGIN_FAILURE_LIMIT
# failures of either, logins are refused (429) for LOGIN_LOCKOUT, counted from the lock-out:
# attempts while locked do not prolong it, so nobody keeps a nurse out for good by typing her
# name. `manage.py axes_reset_username NAME` / `axes_reset_ip ADDRESS` lift a lock-out.
INSTALLED_APPS += ["axes", "icu.apps.IcuConfig"]  # icu after axes: its login log reads axes' mark
MIDDLEWARE += ["axes.middleware.AxesMiddleware"]  # last, as django-axes asks
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = _whole_number("LOGIN_FAILURE_LIMIT", 5, minimum=1)
AXES_COOLOFF_TIME = _duration("LOGIN_LOCKOUT", default="15m")
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False
AXES_RESET_ON_SUCCESS = True
# Successful logins are in the login log (icu.auth); not also a table that grows by a row each.
AXES_DISABLE_ACCESS_LOG = True
AXES_HTTP_RESPONSE_CODE = 429
AXES_CLIENT_IP_CALLABLE = "icu.auth.client_address"
AXES_LOCKOUT_CALLABLE = "icu.auth.lockout_response"
AXES_VERBOSE = False

# --- Kafka and the vitals pipeline -------------------------------------------------------------
KAFKA_BOOTSTRAP_SERVERS = env("KAFKA_BOOTSTRAP_SERVERS", default="127.0.0.1:9092")
KAFKA_TOPIC = env("KAFKA_TOPIC", default="vitals")
KAFKA_DLQ_TOPIC = env("KAFKA_DLQ_TOPIC", default="vitals.dlq")
KAFKA_ALARMS_TOPIC = env("KAFKA_ALARMS_TOPIC", default="alarms")
KAFKA_GROUP_ID = env("KAFKA_GROUP_ID", default="icu-vitals-consumer")
KAFKA_TOPIC_PARTITIONS = env.int("KAFKA_TOPIC_PARTITIONS", default=6)
# Idempotent producers (no duplicates, no reordering on retry). Off only for a broker that
# forgets producer ids when it restarts, such as the in-memory development broker (icu/kafka.py).
KAFKA_IDEMPOTENT_PRODUCER = env.bool("KAFKA_IDEMPOTENT_PRODUCER", default=True)
# Extra librdkafka properties for every client, e.g. "security.protocol=SSL,ssl.ca.location=/ca".
KAFKA_EXTRA_CONFIG = env.dict("KAFKA_EXTRA_CONFIG", default={})
METRICS_INTERVAL = env.float("METRICS_INTERVAL", default=5.0)
PATIENT_UUID = env("PATIENT_UUID", default="")
# Readings stamped further ahead than this are rejected (a monitor with a wrong clock).
VITALS_MAX_FUTURE_SKEW_SECONDS = env.int("VITALS_MAX_FUTURE_SKEW_SECONDS", default=300)

# --- Alarms that no single reading raises (in seconds) ---------------------------------------


def _alarm_seconds(name: str, default: float) -> float:
    """A number of seconds above 0 from the environment: 0, a negative number or NaN would
    silence the alarm it times, and a typo must not pass for a default."""
    text = env.str(name, default=str(default))
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds <= 0:
        raise ImproperlyConfigured(f"{name} must be a number of seconds above 0 (got {text!r}).")
    return seconds


# A patient whose newest reading was received longer ago than this gets a `no_data` alarm:
# three reading intervals, as for a stale tile (WARD_STALE_SECONDS).
ALARM_NO_DATA_AFTER = _alarm_seconds("ALARM_NO_DATA_AFTER", 3 * METRICS_INTERVAL)
# A high-priority alarm active and unacknowledged this long is escalated (an `escalated` event
# on the alarms topic, for paging systems).
ALARM_ESCALATE_AFTER = _alarm_seconds("ALARM_ESCALATE_AFTER", 120.0)
# A monitor clock off by more than this (against the Kafka timestamp) raises `clock_skew`.
ALARM_CLOCK_SKEW_WARN = _alarm_seconds("ALARM_CLOCK_SKEW_WARN", 30.0)

# --- Request size limits (icu/request_limits.py; gunicorn.conf.py limits the request line and
# headers) ------------------------------------------------------------------------------------


def _body_bytes(name: str, default: int) -> int:
    """A whole number of bytes above 0 from the environment."""
    text = env.str(name, default=str(default))
    if not re.fullmatch(r"[1-9][0-9]*", text):
        raise ImproperlyConfigured(
            f"{name} must be a whole number of bytes above 0 (got {text!r})."
        )
    return int(text)


# A request body larger than this is refused with 413 before it is read. The biggest legitimate
# body is a few KB (an admin form; the API's are a few hundred bytes): 1 MiB, nginx's default
# client_max_body_size, leaves room to spare. Django's own limit follows it, so a parser never
# meets a smaller one.
MAX_REQUEST_BODY_BYTES = _body_bytes("MAX_REQUEST_BODY_BYTES", 2**20)
DATA_UPLOAD_MAX_MEMORY_SIZE = MAX_REQUEST_BODY_BYTES

# --- Central station (ward/) -------------------------------------------------------------------
# How often the ward and patient pages poll the API, in seconds.
WARD_POLL_SECONDS = env.float("WARD_POLL_SECONDS", default=2.0)
# A tile whose latest reading is older than this is shown as stale. Three reading intervals: one
# late reading is jitter (a batch, a retry), three missing in a row mean that the monitor, the
# network or the consumer is not delivering, and a nurse must not take such numbers for current.
WARD_STALE_SECONDS = env.float("WARD_STALE_SECONDS", default=3 * METRICS_INTERVAL)
if WARD_POLL_SECONDS <= 0 or WARD_STALE_SECONDS <= 0:
    raise ImproperlyConfigured("WARD_POLL_SECONDS and WARD_STALE_SECONDS must be above 0.")

# --- Logging ----------------------------------------------------------------------------------
LOG_LEVEL = env("LOG_LEVEL", default="INFO")
LOG_FORMAT = env("LOG_FORMAT", default="json")  # "json" or "text"
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "json": {"()": "icu.logging.JsonFormatter"},
        "text": {"()": "icu.logging.TextFormatter"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT},
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django": {"handlers": ["console"], "level": LOG_LEVEL, "propagate": False},
        # librdkafka's own chatter (connection retries...) is routed here; our code reports
        # broker problems itself with one clear line.
        "icu.kafka.librdkafka": {"level": env("KAFKA_CLIENT_LOG_LEVEL", default="CRITICAL")},
        # django-axes' own line per failed login repeats icu.auth's (icu/auth.py).
        "axes": {"level": "ERROR"},
    },
}
