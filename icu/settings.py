"""Settings for ICU Monitor, read from the environment (and `.env`) with django-environ.

Every setting a deployment may change is listed in the README's settings table. Defaults are
for a laptop: SQLite next to the code and the embedded broker on 127.0.0.1:9092. Production
must set `SECRET_KEY` and keep `DEBUG` off; there is no secret default outside DEBUG.
"""

import math
import re
import warnings
import zoneinfo
from datetime import timedelta
from pathlib import Path

import environ
from csp.constants import NONCE, NONE, SELF, UNSAFE_INLINE
from django.core.exceptions import ImproperlyConfigured

from core.durations import duration_parse
from vitals.signs import OBSERVATION_VALIDITY, SIGNS

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
# Values already in the environment win over the file: `DEBUG=false make run` does what it says.
environ.Env.read_env(env("ICU_ENV_FILE", default=str(BASE_DIR / ".env")))

# --- Reading a setting -------------------------------------------------------------------------
# Every setting is read by one of these and checked now, at start-up: a bad value stops every
# command with one line, "<NAME> must be <the form expected> (got '<the value given>').", which
# manage.py and the web server print without a traceback (core/startup.py), exit status 2. A typo
# never passes for a default.


def _refuse(name: str, text: str, form: str) -> ImproperlyConfigured:
    return ImproperlyConfigured(f"{name} must be {form} (got {text!r}).")


def _text(name: str, default: str, *, pattern: str = r".*", form: str = "") -> str:
    text = env.str(name, default=default)
    if not re.fullmatch(pattern, text):
        raise _refuse(name, text, form)
    return text


def _flag(name: str, default: bool) -> bool:
    text = env.str(name, default=str(default).lower())
    if text.lower() in ("true", "yes", "on", "1"):
        return True
    if text.lower() in ("false", "no", "off", "0"):
        return False
    raise _refuse(name, text, "true or false")


def _choice(name: str, default: str, choices: tuple[str, ...]) -> str:
    """One of `choices`, in any case; the choice as spelled in `choices`."""
    text = env.str(name, default=default)
    for choice in choices:
        if text.lower() == choice.lower():
            return choice
    raise _refuse(name, text, "one of " + ", ".join(choices))


def _whole_number(name: str, default: int, *, minimum: int, unit: str = "") -> int:
    text = env.str(name, default=str(default))
    if not re.fullmatch(r"-?[0-9]+", text) or int(text) < minimum:
        raise _refuse(
            name, text, f"a whole number{' of ' + unit if unit else ''}, {minimum} or more"
        )
    return int(text)


def _seconds(name: str, default: float, *, at_least: float = 0.0) -> float:
    """A number of seconds above 0 (and `at_least`): 0, a negative number or NaN would switch
    off what it times (an alarm, a poll, a staleness mark)."""
    text = env.str(name, default=str(default))
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds <= 0:
        raise _refuse(name, text, "a number of seconds above 0")
    if seconds < at_least:
        raise _refuse(name, text, f"a number of seconds, {at_least:g} or more")
    return seconds


def _duration(name: str, default: str) -> timedelta:
    """A duration above 0 such as `7d` (core/durations.py)."""
    text = env.str(name, default=default)
    try:
        duration = duration_parse(text)
    except ValueError:
        duration = timedelta(0)
    if not duration:
        raise _refuse(name, text, "a duration above 0 like 30d, 12h, 90m, 2w")
    return duration


def _list(name: str, default: list[str], *, item: str = r".+", form: str) -> list[str]:
    values = env.list(name, default=default)
    if not all(re.fullmatch(item, value) for value in values):
        raise _refuse(name, env.str(name), form)
    return values


# The validity windows one setting may set: a sign's own key, `bp` for the blood pressure's
# three (the cuff measures them together), and the observations that are not signs.
_BP_SIGNS = ("systolic", "diastolic", "map")
_VALIDITY_KEYS = {
    **{
        ("bp" if sign.key in _BP_SIGNS else sign.key): (
            _BP_SIGNS if sign.key in _BP_SIGNS else (sign.key,)
        )
        for sign in SIGNS
    },
    **{key: (key,) for key in OBSERVATION_VALIDITY},
}


def _validity(name: str) -> dict[str, timedelta]:
    """How long each sign's and observation's newest value stays valid (for NEWS2, on a tile),
    by key: the registry's (vitals/signs.py), overridden by `key=duration` pairs."""
    text = env.str(name, default="")
    windows = {sign.key: sign.valid_for for sign in SIGNS} | OBSERVATION_VALIDITY
    for pair in filter(None, text.split(",")):
        key, _, value = pair.partition("=")
        try:
            duration = duration_parse(value)
        except ValueError:
            duration = timedelta(0)
        if key.strip() not in _VALIDITY_KEYS or not duration:
            raise _refuse(
                name,
                text,
                f"key=duration pairs like bp=20m,temperature=2h (keys {', '.join(_VALIDITY_KEYS)};"
                " durations above 0 like 90s, 20m, 2h)",
            )
        windows.update(dict.fromkeys(_VALIDITY_KEYS[key.strip()], duration))
    return windows


def _database(name: str, default: str) -> dict:
    text = env.str(name, default=default)
    with warnings.catch_warnings():  # django-environ warns of an unknown scheme: refused below
        warnings.simplefilter("ignore")
        config = env.db_url_config(text)
    if config.get("ENGINE") not in ("django.db.backends.sqlite3", "django.db.backends.postgresql"):
        raise _refuse(
            name,
            text,
            "a database URL like postgres://user:password@host:5432/icu or "
            "sqlite:////absolute/path/db.sqlite3",
        )
    return config


def _cache(name: str, default: str) -> dict:
    text = env.str(name, default=default)
    try:
        return env.cache_url_config(text)
    except (ImproperlyConfigured, ValueError, KeyError):
        raise _refuse(
            name,
            text,
            "a cache URL like locmemcache://, filecache:///var/tmp/icu-cache or "
            "dbcache://icu_cache",
        ) from None


def _time_zone(name: str, default: str) -> str:
    text = env.str(name, default=default)
    try:
        zoneinfo.ZoneInfo(text)
    except (ValueError, zoneinfo.ZoneInfoNotFoundError):
        raise _refuse(name, text, "an IANA time zone like UTC or Europe/Paris") from None
    return text


DEBUG = _flag("DEBUG", default=False)

SECRET_KEY = _text("SECRET_KEY", default="")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "SECRET_KEY is not set. Set it in the environment or in .env "
            "(`make run` writes a development .env for you), or set DEBUG=true for local use."
        )
    SECRET_KEY = "insecure-development-key-do-not-use-in-production"  # noqa: S105

ALLOWED_HOSTS = _list(
    "ALLOWED_HOSTS",
    default=["127.0.0.1", "localhost", "[::1]"],
    item=r"[^\s/]+",
    form="host names separated by commas, like icu.example.org,127.0.0.1",
)

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
    # Content-Security-Policy (django-csp). The platform app, `core` (its `migrate`, safe to
    # start several at once, its login log, templates and project-wide commands: core/apps.py),
    # comes after axes below.
    "csp",
    "patients",
    "vitals",
    "units",
    "gateway",
    "ward",
    "exports",
    "access",
]

MIDDLEWARE = [
    "core.logging.RequestIdMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # Content-Security-Policy (CONTENT_SECURITY_POLICY below), with request.csp_nonce.
    "csp.middleware.CSPMiddleware",
    "core.metrics.PrometheusMiddleware",
    # A body over MAX_REQUEST_BODY_BYTES is a 413 before anything reads it (and counted above).
    "core.request_limits.RequestBodyLimitMiddleware",
    # A NUL character in the path or the query is a 400 (PostgreSQL's text cannot hold one).
    "core.request_limits.RequestAddressCheckMiddleware",
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
DATABASES = {"default": _database("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The consumer writes while the web server reads. WAL lets readers and the single writer
    # proceed together; IMMEDIATE takes the write lock at BEGIN so that `timeout` (the busy
    # wait) applies, instead of failing with "database is locked" halfway through a transaction.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "transaction_mode": "IMMEDIATE",
            "timeout": _whole_number("SQLITE_BUSY_TIMEOUT", 20, minimum=1, unit="seconds"),
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
    )
else:
    DATABASES["default"]["CONN_MAX_AGE"] = _whole_number(
        "CONN_MAX_AGE", 60, minimum=0, unit="seconds"
    )
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
# The time zone of a date and time that a person typed without an offset (the browsable API's
# date pickers send `2026-12-02T17:50`), and of the admin's dates. Stored times are UTC.
TIME_ZONE = _time_zone("TIME_ZONE", default="UTC")
USE_I18N = True
USE_TZ = True
# The time zone of an HL7 v2 time stamp sent without an offset (OBX-14, OBR-7, MSH-7): the
# monitors' gateway's local time, as most send it.
HL7_DEFAULT_TIMEZONE = _time_zone("HL7_DEFAULT_TIMEZONE", default=TIME_ZONE)
# The largest HL7 message the gateway (run_hl7_gateway) takes: a larger MLLP frame is answered
# AR and discarded, the connection kept. A PCD-01 message of a full monitor is a few kB.
HL7_MAX_MESSAGE_BYTES = _whole_number("HL7_MAX_MESSAGE_BYTES", 2**20, minimum=1, unit="bytes")

STATIC_URL = "static/"
STATIC_ROOT = _text(
    "STATIC_ROOT", default=str(BASE_DIR / "var" / "static"), pattern=r".+", form="a directory"
)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    # Hashed, compressed files from `collectstatic` (the Docker image runs it). Without a
    # collectstatic (tests, a checkout) set the plain "django.contrib.staticfiles.storage.
    # StaticFilesStorage"; with DEBUG on, Django serves unhashed names anyway.
    "staticfiles": {
        "BACKEND": _text(
            "STATICFILES_BACKEND",
            default="whitenoise.storage.CompressedManifestStaticFilesStorage",
            pattern=r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)+",
            form="a dotted path to a storage class",
        )
    },
}

# Uploaded and generated files: the export results (exports/). Never served as static files:
# only the API's result endpoint hands them out, to those who may see them. The web server and the
# worker must share this directory (a volume in docker-compose.yml).
MEDIA_ROOT = _text(
    "MEDIA_ROOT", default=str(BASE_DIR / "var" / "media"), pattern=r".+", form="a directory"
)

# --- Background jobs and exports ---------------------------------------------------------------
# django-tasks with its database backend: a job is a row, `manage.py db_worker` runs it. No
# broker or extra server; the tasks' queue is the application's own database.
TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend", "QUEUES": ["default"]}}


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
if _flag("TRUST_X_FORWARDED_PROTO", default=False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = _flag("SECURE_SSL_REDIRECT", default=SECURE)
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
SESSION_COOKIE_SECURE = _flag("SESSION_COOKIE_SECURE", default=SECURE)
CSRF_COOKIE_SECURE = _flag("CSRF_COOKIE_SECURE", default=SECURE)
CSRF_TRUSTED_ORIGINS = _list(
    "CSRF_TRUSTED_ORIGINS",
    default=[],
    item=r"https?://[^\s/]+",
    form="origins separated by commas, like https://icu.example.org",
)
SECURE_HSTS_SECONDS = _whole_number(
    "SECURE_HSTS_SECONDS", 31_536_000 if SECURE else 0, minimum=0, unit="seconds"
)
SECURE_HSTS_INCLUDE_SUBDOMAINS = _flag("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=SECURE)
SECURE_HSTS_PRELOAD = _flag("SECURE_HSTS_PRELOAD", default=False)
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
CACHES = {"default": _cache("CACHE_URL", default="locmemcache://")}
# Prometheus' bearer token for `GET /metrics` (core/metrics.py); empty: staff users only.
METRICS_TOKEN = _text("METRICS_TOKEN", default="")

# --- API --------------------------------------------------------------------------------------
API_PREFIX = _text(
    "API_PREFIX", default="api/", pattern=r"[\w./-]*", form="a URL path like api/ or v1/"
)
if API_PREFIX and not API_PREFIX.endswith("/"):
    API_PREFIX += "/"
API_PREFIX = API_PREFIX.lstrip("/")


def _throttle_rate(name: str, default: str) -> str:
    """A DRF rate, "<requests>/<s|sec|m|min|h|hour|d|day>", checked now rather than failing
    every request."""
    return _text(
        name,
        default=default,
        pattern=r"[1-9]\d*/(s|sec|second|m|min|minute|h|hour|d|day)",
        form="a rate like 60/min (per s, min, hour or day)",
    )


REST_FRAMEWORK = {
    # Token first: its WWW-Authenticate header makes anonymous requests a 401, not a 403.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "core.authentication.TokenAuthentication",
        "core.authentication.SessionAuthentication",
    ],
    # Roles (Django groups and model permissions) and what each route needs: core/permissions.py.
    "DEFAULT_PERMISSION_CLASSES": ["core.permissions.ApiPermission"],
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
        "core.renderers.BrowsableAPIRenderer",
    ],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "core.exceptions.api_exception_handler",
    "DATETIME_FORMAT": "iso-8601",
    "TEST_REQUEST_DEFAULT_FORMAT": "json",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "ICU Monitor API",
    "DESCRIPTION": "Patients and their vital signs, as streamed by bedside monitors through Kafka.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # The schema describes health-data endpoints; it is no more public than they are.
    "SERVE_PERMISSIONS": ["core.permissions.ApiPermission"],
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
        "core.openapi.error_responses",
    ],
}

# --- Login doors: client address, lock-outs, login log (core/auth.py) --------------------------


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
INSTALLED_APPS += [
    "axes",
    "core.apps.CoreConfig",
]  # core after axes: its login log reads axes' mark
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
# Successful logins are in the login log (core.auth); not also a table that grows by a row each.
AXES_DISABLE_ACCESS_LOG = True
AXES_HTTP_RESPONSE_CODE = 429
AXES_CLIENT_IP_CALLABLE = "core.auth.client_address"
AXES_LOCKOUT_CALLABLE = "core.auth.lockout_response"
AXES_VERBOSE = False

# --- Kafka and the vitals pipeline -------------------------------------------------------------
KAFKA_BOOTSTRAP_SERVERS = _text(
    "KAFKA_BOOTSTRAP_SERVERS",
    default="127.0.0.1:9092",
    pattern=r"[^\s,]+:[0-9]+(,[^\s,]+:[0-9]+)*",
    form="host:port addresses separated by commas, like 127.0.0.1:9092",
)
KAFKA_TOPIC = _text(
    "KAFKA_TOPIC",
    default="vitals",
    pattern=r"[A-Za-z0-9._-]{1,249}",
    form="a Kafka topic name (letters, digits, . _ -)",
)
KAFKA_DLQ_TOPIC = _text(
    "KAFKA_DLQ_TOPIC",
    default="vitals.dlq",
    pattern=r"[A-Za-z0-9._-]{1,249}",
    form="a Kafka topic name (letters, digits, . _ -)",
)
KAFKA_ALARMS_TOPIC = _text(
    "KAFKA_ALARMS_TOPIC",
    default="alarms",
    pattern=r"[A-Za-z0-9._-]{1,249}",
    form="a Kafka topic name (letters, digits, . _ -)",
)
KAFKA_GROUP_ID = _text(
    "KAFKA_GROUP_ID", default="icu-vitals-consumer", pattern=r"\S+", form="a consumer group name"
)
KAFKA_TOPIC_PARTITIONS = _whole_number("KAFKA_TOPIC_PARTITIONS", 6, minimum=1)
# How long a consumer of a group may go unheard before the broker gives its partitions to the
# others (librdkafka's session.timeout.ms; heartbeats every sixth of it). Apache Kafka refuses
# less than its group.min.session.timeout.ms (6 s by default). The development broker (Tansu)
# also waits half of it for more members before it answers a consumer joining a group.
KAFKA_SESSION_TIMEOUT_MS = _whole_number(
    "KAFKA_SESSION_TIMEOUT_MS", 6000, minimum=1000, unit="milliseconds"
)
# Idempotent producers (no duplicates, no reordering on retry). Off only for a broker that
# forgets producer ids when it restarts, such as the in-memory development broker (core/kafka.py).
KAFKA_IDEMPOTENT_PRODUCER = _flag("KAFKA_IDEMPOTENT_PRODUCER", default=True)
# Extra librdkafka properties for every client, e.g. "security.protocol=SSL,ssl.ca.location=/ca".
_text(
    "KAFKA_EXTRA_CONFIG",
    default="",
    pattern=r"([^=,\s]+=[^,]*(,[^=,\s]+=[^,]*)*)?",
    form="librdkafka properties like security.protocol=SSL,ssl.ca.location=/ca",
)
KAFKA_EXTRA_CONFIG = env.dict("KAFKA_EXTRA_CONFIG", default={})
# The bedside monitors' (emulator's) reading interval.
METRICS_INTERVAL = _seconds("METRICS_INTERVAL", 5.0)
PATIENT_UUID = _text(
    "PATIENT_UUID",
    default="",
    pattern=r"|[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}",
    form="a UUID like 5f0c6a8e-0b7e-4d0e-9a57-3f1c2b7d9e10, or empty",
)
# Readings stamped further ahead than this are rejected (a monitor with a wrong clock).
VITALS_MAX_FUTURE_SKEW_SECONDS = _whole_number(
    "VITALS_MAX_FUTURE_SKEW_SECONDS", 300, minimum=0, unit="seconds"
)

# --- Alarms that no single reading raises (in seconds) ---------------------------------------


# A patient whose newest reading was received longer ago than this gets a `no_data` alarm:
# three reading intervals, as for a stale tile (WARD_STALE_SECONDS).
ALARM_NO_DATA_AFTER = _seconds("ALARM_NO_DATA_AFTER", 3 * METRICS_INTERVAL)
# A high-priority alarm active and unacknowledged this long is escalated (an `escalated` event
# on the alarms topic, for paging systems).
ALARM_ESCALATE_AFTER = _seconds("ALARM_ESCALATE_AFTER", 120.0)
# A monitor clock off by more than this (against the Kafka timestamp) raises `clock_skew`.
ALARM_CLOCK_SKEW_WARN = _seconds("ALARM_CLOCK_SKEW_WARN", 30.0)
# How long a sign's newest value stays valid, by sign key (and consciousness, on_oxygen): a
# reading's NEWS2 scores each parameter's newest value within it (else the score is
# incomplete), a tile shows it. Set as "bp=20m,temperature=2h"; the rest from vitals/signs.py.
SIGN_VALIDITY = _validity("SIGN_VALIDITY")
# Alarm processing is taken as stopped (the pages' "ALARMS NOT PROCESSED" banner, the web's
# icu_alarm_processing_up gauge) when no consumer's alarm sweep (every 2 s) was heard for this
# long by the database's clock: five sweeps missed, never less than 10 s.
# (Less would flap the banner on every station between two sweeps.)
ALARM_PROCESSING_STOPPED_AFTER = _seconds("ALARM_PROCESSING_STOPPED_AFTER", 10.0, at_least=10.0)

# --- Units, beds and admissions (units/) -----------------------------------------------------

# A reading from a patient never admitted admits them to the first free bed (by position) of
# DEFAULT_UNIT. On with DEBUG (`make run`); off in production, where admissions come from people
# (or the hospital's ADT system) and an unknown monitor waits under "Unassigned monitors".
AUTO_ADMIT = _flag("AUTO_ADMIT", default=DEBUG)
DEFAULT_UNIT = _text(
    "DEFAULT_UNIT", "icu", pattern=r"[-a-zA-Z0-9_]{1,20}", form="a unit code (letters, digits, - _)"
)

# --- Request size limits (core/request_limits.py; gunicorn.conf.py limits the request line and
# headers) ------------------------------------------------------------------------------------


# A request body larger than this is refused with 413 before it is read. The biggest legitimate
# body is a few KB (an admin form; the API's are a few hundred bytes): 1 MiB, nginx's default
# client_max_body_size, leaves room to spare. Django's own limit follows it, so a parser never
# meets a smaller one.
MAX_REQUEST_BODY_BYTES = _whole_number("MAX_REQUEST_BODY_BYTES", 2**20, minimum=1, unit="bytes")
DATA_UPLOAD_MAX_MEMORY_SIZE = MAX_REQUEST_BODY_BYTES

# --- Central station (ward/) -------------------------------------------------------------------
# How often the ward and patient pages poll the API, in seconds.
WARD_POLL_SECONDS = _seconds("WARD_POLL_SECONDS", 2.0)
# Updates pushed to the pages (ward/events.py, server-sent events): at most this many streams
# per web server process (0: none, the pages poll); while a page's stream is up it polls only
# every WARD_PUSH_POLL_SECONDS, the fallback should a change not be pushed.
WARD_PUSH_MAX_CLIENTS = _whole_number("WARD_PUSH_MAX_CLIENTS", 200, minimum=0)
WARD_PUSH_POLL_SECONDS = _seconds("WARD_PUSH_POLL_SECONDS", 10.0)
# The streams one user may hold in a process (429 beyond: that page polls): a quarter of the
# process's by default, so that one login (a script with a nurse's cookie, a station login on
# many screens) cannot send every other station back to polling, and shared station logins
# keep room.
WARD_PUSH_MAX_CLIENTS_PER_USER = _whole_number(
    "WARD_PUSH_MAX_CLIENTS_PER_USER", max(1, WARD_PUSH_MAX_CLIENTS // 4), minimum=1
)
# A stream checks its user's right to read what it tells this often (deactivated, password
# changed, logged out, role removed: it ends, and the page shows the session lost).
WARD_PUSH_RECHECK_SECONDS = _seconds("WARD_PUSH_RECHECK_SECONDS", 10.0)
# Where the pages find the stream: 0, on the server that served them (GET /events/: `make
# run`, or a reverse proxy routing /events/ to the push process); else the port of the push
# process (an ASGI server beside the API's WSGI one: docker-compose.yml) on the pages' host.
WARD_EVENTS_PORT = _whole_number("WARD_EVENTS_PORT", 0, minimum=0)
if WARD_EVENTS_PORT > 65535:
    raise _refuse("WARD_EVENTS_PORT", str(WARD_EVENTS_PORT), "a port number, 0 to 65535")
# A tile whose latest reading is older than this is shown as stale. Three reading intervals: one
# late reading is jitter (a batch, a retry), three missing in a row mean that the monitor, the
# network or the consumer is not delivering, and a nurse must not take such numbers for current.
WARD_STALE_SECONDS = _seconds("WARD_STALE_SECONDS", 3 * METRICS_INTERVAL)

# --- Logging ----------------------------------------------------------------------------------
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
LOG_LEVEL = _choice("LOG_LEVEL", "INFO", LOG_LEVELS)
LOG_FORMAT = _choice("LOG_FORMAT", "json", ("json", "text"))
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "json": {"()": "core.logging.JsonFormatter"},
        "text": {"()": "core.logging.TextFormatter"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT},
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django": {"handlers": ["console"], "level": LOG_LEVEL, "propagate": False},
        # librdkafka's own chatter (connection retries...) is routed here; our code reports
        # broker problems itself with one clear line.
        "core.kafka.librdkafka": {
            "level": _choice("KAFKA_CLIENT_LOG_LEVEL", "CRITICAL", LOG_LEVELS)
        },
        # django-axes' own line per failed login repeats core.auth's (core/auth.py).
        "axes": {"level": "ERROR"},
    },
}
