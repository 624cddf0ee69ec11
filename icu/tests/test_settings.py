"""Settings read from the environment and `.env`, and the SQLite connection they configure."""

import json
import os
import re
import runpy
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest
from django.core.exceptions import ImproperlyConfigured
from django.db import close_old_connections, connection

from testing.database import database_url

BASE_DIR = Path(__file__).resolve().parent.parent.parent

PRINT_SETTINGS = """
import json, django
django.setup()
from django.conf import settings
from django.urls import reverse
print(json.dumps({
    "API_PREFIX": settings.API_PREFIX,
    "patients_url": reverse("api:patient-list"),
    "DEBUG": settings.DEBUG,
    "SECRET_KEY": settings.SECRET_KEY,
    "KAFKA_TOPIC": settings.KAFKA_TOPIC,
    "LOG_LEVEL": settings.LOG_LEVEL,
}))
"""


def run_python(*args: str, **env: str) -> subprocess.CompletedProcess:
    """`python ARGS` in the project directory on the production settings module, as a person
    runs it. The environment is built from scratch, so nothing of the test run's own
    (SECRET_KEY, DEBUG, a developer's settings) leaks in: only what the test passes."""
    return subprocess.run(
        [sys.executable, *args],
        cwd=BASE_DIR,
        env={
            "PATH": os.environ.get("PATH", ""),
            "DJANGO_SETTINGS_MODULE": "icu.settings",
            "ICU_ENV_FILE": os.devnull,
            **env,
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def run_settings(code: str, **env: str) -> subprocess.CompletedProcess:
    """Run `code` in a fresh interpreter on the production settings module."""
    return run_python("-c", code, **env)


def settings_of(**env: str) -> dict:
    result = run_settings(PRINT_SETTINGS, **env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.django_db
def test_the_session_runs_on_the_engine_it_claims(postgresql_server) -> None:
    """`make test` runs the suite once per engine: a misconfigured run must not pass on
    SQLite while claiming PostgreSQL (or the reverse)."""
    claimed = os.environ.get("ICU_TEST_DB_ENGINE") or "sqlite"

    assert connection.vendor == claimed
    with connection.cursor() as cursor:  # and the server answers as one
        if claimed == "sqlite":
            cursor.execute("SELECT sqlite_version()")
            assert cursor.fetchone()[0]
            return
        cursor.execute("SELECT current_database(), current_setting('port'), version()")
        database, port, version = cursor.fetchone()
        cursor.execute("SHOW fsync")
        fsync = cursor.fetchone()[0]
    assert version.startswith("PostgreSQL ")
    assert database == connection.settings_dict["NAME"]
    assert database.startswith("test_")  # Django's test database, never the one named
    if postgresql_server is not None:  # not an existing server named by DATABASE_URL
        assert int(port) == postgresql_server.port
        assert fsync == "off"
        assert postgresql_server.process.poll() is None


@pytest.mark.django_db
@pytest.mark.skipif(
    connection.vendor != "sqlite",
    reason="SQLite's own settings (WAL journal, busy timeout, IMMEDIATE transactions); on "
    "PostgreSQL, test_postgresql_connections_are_persistent_and_survive_a_dropped_session",
)
def test_sqlite_runs_in_wal_mode_with_immediate_transactions() -> None:
    options = connection.settings_dict["OPTIONS"]
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA journal_mode")
        journal_mode = cursor.fetchone()[0]
        cursor.execute("PRAGMA busy_timeout")
        busy_timeout = cursor.fetchone()[0]
        cursor.execute("PRAGMA synchronous")
        synchronous = cursor.fetchone()[0]

    assert journal_mode == "wal"
    assert busy_timeout == 20_000  # milliseconds: SQLITE_BUSY_TIMEOUT's default 20 s
    assert synchronous == 1  # NORMAL
    assert options["transaction_mode"] == "IMMEDIATE"
    assert options["timeout"] == 20


@pytest.mark.django_db(transaction=True)  # closing the connection ends a test's transaction
@pytest.mark.skipif(
    connection.vendor != "postgresql",
    reason="PostgreSQL's connection settings (CONN_MAX_AGE, CONN_HEALTH_CHECKS); on SQLite, "
    "test_sqlite_runs_in_wal_mode_with_immediate_transactions",
)
def test_postgresql_connections_are_persistent_and_survive_a_dropped_session() -> None:
    """A server-side session that goes away (a restart, a failover, an idle timeout) costs the
    next unit of work a reconnection, not an error: what the consumer relies on between
    batches (close_old_connections) and the web server between requests."""
    assert connection.settings_dict["CONN_MAX_AGE"] == 60
    assert connection.settings_dict["CONN_HEALTH_CHECKS"] is True
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        pid = cursor.fetchone()[0]
    close_old_connections()
    with connection.cursor() as cursor:  # the same session: persistent
        cursor.execute("SELECT pg_backend_pid()")
        assert cursor.fetchone()[0] == pid

    with psycopg.connect(database_url(), autocommit=True) as other:
        other.execute("SELECT pg_terminate_backend(%s)", [pid])
    close_old_connections()

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        assert cursor.fetchone()[0] != pid


def test_debug_without_secret_key_uses_the_development_key() -> None:
    found = settings_of(DEBUG="true")

    assert found["DEBUG"] is True
    assert found["SECRET_KEY"] == "insecure-development-key-do-not-use-in-production"


@pytest.mark.parametrize(
    ("prefix", "normalised", "patients_url"),
    [
        ("/v1", "v1/", "/v1/patients/"),
        ("v1", "v1/", "/v1/patients/"),
        ("/v1/", "v1/", "/v1/patients/"),
        ("", "", "/patients/"),
    ],
)
def test_api_prefix_normalisation(prefix: str, normalised: str, patients_url: str) -> None:
    found = settings_of(SECRET_KEY="s", API_PREFIX=prefix)

    assert found["API_PREFIX"] == normalised
    assert found["patients_url"] == patients_url


def test_api_prefix_default() -> None:
    found = settings_of(SECRET_KEY="s")

    assert found["API_PREFIX"] == "api/"
    assert found["patients_url"] == "/api/patients/"


def test_env_file_is_read_and_the_environment_wins(tmp_path: Path) -> None:
    env_file = tmp_path / "test.env"
    env_file.write_text(
        "SECRET_KEY=secret-from-the-file\n"
        "API_PREFIX=/from-file\n"
        "DEBUG=true\n"
        "KAFKA_TOPIC=topic-from-the-file\n"
        "LOG_LEVEL=DEBUG\n"
    )

    found = settings_of(ICU_ENV_FILE=str(env_file), DEBUG="false", KAFKA_TOPIC="topic-from-env")

    assert found == {
        "API_PREFIX": "from-file/",  # from the file
        "patients_url": "/from-file/patients/",
        "DEBUG": False,  # the environment wins
        "SECRET_KEY": "secret-from-the-file",  # from the file: no ImproperlyConfigured
        "KAFKA_TOPIC": "topic-from-env",  # the environment wins
        "LOG_LEVEL": "DEBUG",  # from the file
    }


@pytest.mark.parametrize(
    ("idempotent", "expected"),
    [
        (True, {"enable.idempotence": True}),
        (False, {"acks": "all", "max.in.flight.requests.per.connection": 1}),
    ],
)
def test_producers_are_idempotent_unless_the_setting_says_otherwise(
    settings, monkeypatch, idempotent: bool, expected: dict
) -> None:
    from core import kafka

    built: list[dict] = []
    monkeypatch.setattr(kafka, "Producer", lambda config: built.append(config))
    settings.KAFKA_IDEMPOTENT_PRODUCER = idempotent

    kafka.producer_create()

    [config] = built
    delivery_keys = {"enable.idempotence", "acks", "max.in.flight.requests.per.connection"}
    assert {k: v for k, v in config.items() if k in delivery_keys} == expected


ALARM_SETTINGS = """
import json, django
django.setup()
from django.conf import settings
print(json.dumps([settings.ALARM_NO_DATA_AFTER, settings.ALARM_ESCALATE_AFTER,
                  settings.ALARM_CLOCK_SKEW_WARN, settings.ALARM_PROCESSING_STOPPED_AFTER]))
"""


def test_the_alarm_timings_default_from_the_reading_interval_and_are_read_from_the_env() -> None:
    defaults = run_settings(ALARM_SETTINGS, SECRET_KEY="s", METRICS_INTERVAL="2")
    assert defaults.returncode == 0, defaults.stderr
    # no_data after 3 readings; alarm processing stopped after 10 s without a sweep
    assert json.loads(defaults.stdout) == [6.0, 120.0, 30.0, 10.0]

    given = run_settings(
        ALARM_SETTINGS,
        SECRET_KEY="s",
        ALARM_NO_DATA_AFTER="45",
        ALARM_ESCALATE_AFTER="60.5",
        ALARM_CLOCK_SKEW_WARN="10",
        ALARM_PROCESSING_STOPPED_AFTER="30",
    )
    assert json.loads(given.stdout) == [45.0, 60.5, 10.0, 30.0]


PUSH_SETTINGS = """
import json, django
django.setup()
from django.conf import settings
print(json.dumps([settings.WARD_PUSH_MAX_CLIENTS, settings.WARD_PUSH_MAX_CLIENTS_PER_USER,
                  settings.WARD_PUSH_RECHECK_SECONDS]))
"""


def test_a_user_holds_a_quarter_of_the_push_streams_by_default_and_is_checked_every_10_s() -> None:
    """Shared station logins keep room: a quarter of the process's streams, one at least."""
    for environ, expected in [
        ({}, [200, 50, 10.0]),
        ({"WARD_PUSH_MAX_CLIENTS": "6"}, [6, 1, 10.0]),
        ({"WARD_PUSH_MAX_CLIENTS": "0"}, [0, 1, 10.0]),
        (
            {"WARD_PUSH_MAX_CLIENTS_PER_USER": "120", "WARD_PUSH_RECHECK_SECONDS": "2.5"},
            [200, 120, 2.5],
        ),
    ]:
        run = run_settings(PUSH_SETTINGS, SECRET_KEY="s", **environ)
        assert run.returncode == 0, run.stderr
        assert json.loads(run.stdout) == expected, environ


LOGIN_SETTINGS = """
import json, django
django.setup()
from django.conf import settings
print(json.dumps([settings.TRUSTED_PROXIES, settings.REST_FRAMEWORK["NUM_PROXIES"],
                  settings.AXES_CLIENT_IP_CALLABLE, settings.AXES_FAILURE_LIMIT,
                  settings.AXES_COOLOFF_TIME.total_seconds()]))
"""


def test_the_login_defences_default_and_are_read_from_the_env() -> None:
    defaults = run_settings(LOGIN_SETTINGS, SECRET_KEY="s")
    assert defaults.returncode == 0, defaults.stderr
    # No proxy trusted (X-Forwarded-For ignored), 5 failures, 15 minutes.
    assert json.loads(defaults.stdout) == [0, 0, "core.auth.client_address", 5, 900.0]

    given = run_settings(
        LOGIN_SETTINGS,
        SECRET_KEY="s",
        TRUSTED_PROXIES="1",
        LOGIN_FAILURE_LIMIT="10",
        LOGIN_LOCKOUT="1h",
    )
    assert json.loads(given.stdout) == [1, 1, "core.auth.client_address", 10, 3600.0]


BODY_LIMIT = """
import django, json
django.setup()
from django.conf import settings
print(json.dumps([settings.MAX_REQUEST_BODY_BYTES, settings.DATA_UPLOAD_MAX_MEMORY_SIZE]))
"""


def test_the_request_body_limit_defaults_to_1_mib_and_django_s_follows_it() -> None:
    defaults = run_settings(BODY_LIMIT, SECRET_KEY="s")
    assert defaults.returncode == 0, defaults.stderr
    assert json.loads(defaults.stdout) == [1048576, 1048576]

    given = run_settings(BODY_LIMIT, SECRET_KEY="s", MAX_REQUEST_BODY_BYTES="65536")
    assert json.loads(given.stdout) == [65536, 65536]


ACCESS_SETTINGS = """
import django; django.setup()
from django.conf import settings
print(settings.ACCESS_LOG_WINDOW.total_seconds())
"""


def test_the_access_log_window_is_15_minutes_unless_the_env_says_otherwise() -> None:
    default = run_settings(ACCESS_SETTINGS, SECRET_KEY="s")
    assert default.returncode == 0, default.stderr
    assert default.stdout.strip() == "900.0"

    given = run_settings(ACCESS_SETTINGS, SECRET_KEY="s", ACCESS_LOG_WINDOW="1h")
    assert given.stdout.strip() == "3600.0"


# --- Every setting checked at start-up ---------------------------------------------------------
# (name, a bad value, the line that refuses it); several rows per setting where its check has
# several parts. Each setting read in icu/settings.py has at least one row (the test below says
# which one lacks it), except FREE_TEXT.
WHOLE = "a whole number"
SECONDS = "a number of seconds above 0"
DURATION = "a duration above 0 like 30d, 12h, 90m, 2w"
TOPIC = "a Kafka topic name (letters, digits, . _ -)"
LEVELS = "one of DEBUG, INFO, WARNING, ERROR, CRITICAL"
BAD_SETTINGS = [
    ("DEBUG", "maybe", "true or false"),
    ("DEBUG", "", "true or false"),
    ("AUTO_ADMIT", "sometimes", "true or false"),
    ("DEFAULT_UNIT", "icu a", "a unit code (letters, digits, - _)"),
    (
        "ALLOWED_HOSTS",
        "https://icu.example.org",
        "host names separated by commas, like icu.example.org,127.0.0.1",
    ),
    (
        "DATABASE_URL",
        "nonsense",
        "a database URL like postgres://user:password@host:5432/icu or "
        "sqlite:////absolute/path/db.sqlite3",
    ),
    (
        "DATABASE_URL",
        "mysql://h/icu",
        "a database URL like postgres://user:password@host:5432/icu "
        "or sqlite:////absolute/path/db.sqlite3",
    ),
    ("SQLITE_BUSY_TIMEOUT", "x", f"{WHOLE} of seconds, 1 or more"),
    ("SQLITE_BUSY_TIMEOUT", "0", f"{WHOLE} of seconds, 1 or more"),
    ("CONN_MAX_AGE", "-1", f"{WHOLE} of seconds, 0 or more"),
    ("TIME_ZONE", "CEST", "an IANA time zone like UTC or Europe/Paris"),
    ("TIME_ZONE", "../etc/passwd", "an IANA time zone like UTC or Europe/Paris"),
    ("HL7_DEFAULT_TIMEZONE", "CEST", "an IANA time zone like UTC or Europe/Paris"),
    *[
        ("HL7_MAX_MESSAGE_BYTES", value, f"{WHOLE} of bytes, 1 or more")
        for value in ("0", "1MiB", "")
    ],
    ("STATIC_ROOT", "", "a directory"),
    ("MEDIA_ROOT", "", "a directory"),
    ("STATICFILES_BACKEND", "whitenoise", "a dotted path to a storage class"),
    ("EXPORT_RESULT_TTL", "7", DURATION),
    ("EXPORT_RESULT_TTL", "a week", DURATION),
    ("EXPORT_RESULT_TTL", "0d", DURATION),
    ("ACCESS_LOG_WINDOW", "0m", DURATION),
    ("ACCESS_LOG_WINDOW", "-5m", DURATION),
    ("LOGIN_LOCKOUT", "15", DURATION),
    ("TRUST_X_FORWARDED_PROTO", "https", "true or false"),
    ("SECURE_SSL_REDIRECT", "2", "true or false"),
    ("SESSION_COOKIE_SECURE", "si", "true or false"),
    ("CSRF_COOKIE_SECURE", "yes please", "true or false"),
    ("SECURE_HSTS_INCLUDE_SUBDOMAINS", "maybe", "true or false"),
    ("SECURE_HSTS_PRELOAD", "t", "true or false"),
    ("KAFKA_IDEMPOTENT_PRODUCER", "nope", "true or false"),
    (
        "CSRF_TRUSTED_ORIGINS",
        "icu.example.org",
        "origins separated by commas, like https://icu.example.org",
    ),
    ("SECURE_HSTS_SECONDS", "1y", f"{WHOLE} of seconds, 0 or more"),
    (
        "CACHE_URL",
        "nonsense",
        "a cache URL like locmemcache://, filecache:///var/tmp/icu-cache or dbcache://icu_cache",
    ),
    ("API_PREFIX", "api v1", "a URL path like api/ or v1/"),
    ("THROTTLE_ANON", "60", "a rate like 60/min (per s, min, hour or day)"),
    ("THROTTLE_USER", "0/min", "a rate like 60/min (per s, min, hour or day)"),
    ("TRUSTED_PROXIES", "-1", f"{WHOLE}, 0 or more"),
    ("TRUSTED_PROXIES", "one", f"{WHOLE}, 0 or more"),
    ("TRUSTED_PROXIES", "", f"{WHOLE}, 0 or more"),
    ("LOGIN_FAILURE_LIMIT", "0", f"{WHOLE}, 1 or more"),
    ("LOGIN_FAILURE_LIMIT", "5.5", f"{WHOLE}, 1 or more"),
    (
        "KAFKA_BOOTSTRAP_SERVERS",
        "localhost",
        "host:port addresses separated by commas, like 127.0.0.1:9092",
    ),
    ("KAFKA_TOPIC", "vital signs", TOPIC),
    ("KAFKA_DLQ_TOPIC", "", TOPIC),
    ("KAFKA_ALARMS_TOPIC", "alarms!", TOPIC),
    ("KAFKA_GROUP_ID", "", "a consumer group name"),
    ("KAFKA_TOPIC_PARTITIONS", "abc", f"{WHOLE}, 1 or more"),
    ("KAFKA_TOPIC_PARTITIONS", "0", f"{WHOLE}, 1 or more"),
    ("KAFKA_SESSION_TIMEOUT_MS", "6s", f"{WHOLE} of milliseconds, 1000 or more"),
    ("KAFKA_SESSION_TIMEOUT_MS", "999", f"{WHOLE} of milliseconds, 1000 or more"),
    (
        "KAFKA_EXTRA_CONFIG",
        "security.protocol",
        "librdkafka properties like security.protocol=SSL,ssl.ca.location=/ca",
    ),
    ("METRICS_INTERVAL", "abc", SECONDS),
    ("METRICS_INTERVAL", "0", SECONDS),  # not WARD_STALE_SECONDS, which follows it
    ("METRICS_INTERVAL", "", SECONDS),
    ("PATIENT_UUID", "bob", "a UUID like 5f0c6a8e-0b7e-4d0e-9a57-3f1c2b7d9e10, or empty"),
    ("VITALS_MAX_FUTURE_SKEW_SECONDS", "5m", f"{WHOLE} of seconds, 0 or more"),
    # Below five sweeps (every 2 s) the banner would flap on every station.
    *[
        ("ALARM_PROCESSING_STOPPED_AFTER", value, "a number of seconds, 10 or more")
        for value in ("4", "9.9")
    ],
    *[
        (name, value, SECONDS)
        for name in (
            "ALARM_NO_DATA_AFTER",
            "ALARM_ESCALATE_AFTER",
            "ALARM_CLOCK_SKEW_WARN",
            "ALARM_PROCESSING_STOPPED_AFTER",
        )
        for value in ("0", "-5", "nan", "inf", "2min", "")
    ],
    *[
        ("MAX_REQUEST_BODY_BYTES", value, f"{WHOLE} of bytes, 1 or more")
        for value in ("0", "-1", "1MB", "1.5", "", " 100")
    ],
    *[
        (
            "SIGN_VALIDITY",
            value,
            "key=duration pairs like bp=20m,temperature=2h (keys pulse, resp_rate, bp, spo2, "
            "temperature, etco2, consciousness, on_oxygen; durations above 0 like 90s, 20m, 2h)",
        )
        for value in ("systolic=20m", "bp=20", "bp=0m", "bp", "bp=20m,temp=2h", "=5m")
    ],
    ("WARD_POLL_SECONDS", "0", SECONDS),
    *[("WARD_PUSH_MAX_CLIENTS", value, f"{WHOLE}, 0 or more") for value in ("-1", "many", "1.5")],
    ("WARD_PUSH_POLL_SECONDS", "0", SECONDS),
    *[
        ("WARD_PUSH_MAX_CLIENTS_PER_USER", value, f"{WHOLE}, 1 or more")
        for value in ("0", "-1", "many", "2.5")
    ],
    *[("WARD_PUSH_RECHECK_SECONDS", value, SECONDS) for value in ("0", "-5", "soon")],
    *[("WARD_EVENTS_PORT", value, f"{WHOLE}, 0 or more") for value in ("-1", "http", "80.5")],
    ("WARD_EVENTS_PORT", "65536", "a port number, 0 to 65535"),
    ("WARD_STALE_SECONDS", "-1", SECONDS),
    ("LOG_LEVEL", "LOUD", LEVELS),
    ("LOG_FORMAT", "xml", "one of json, text"),
    ("KAFKA_CLIENT_LOG_LEVEL", "quiet", LEVELS),
]
# Any text will do: a token, the file that settings are read from.
FREE_TEXT = {"METRICS_TOKEN", "ICU_ENV_FILE"}


def settings_load(monkeypatch, **env: str) -> dict:
    """The production settings module run afresh in this process, on an environment of only
    `env` (a subprocess per row would cost a second each)."""
    for name in list(os.environ):
        monkeypatch.delenv(name)
    monkeypatch.setenv("ICU_ENV_FILE", os.devnull)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return runpy.run_path(str(BASE_DIR / "icu" / "settings.py"))


@pytest.mark.parametrize(("name", "value", "form"), BAD_SETTINGS)
def test_a_bad_setting_is_refused_with_its_name_its_value_and_the_form_expected(
    monkeypatch, name: str, value: str, form: str
) -> None:
    env = {"SECRET_KEY": "s", name: value}
    if name == "CONN_MAX_AGE":  # read for PostgreSQL only
        env["DATABASE_URL"] = "postgres://icu@127.0.0.1:5432/icu"

    with pytest.raises(ImproperlyConfigured) as refused:
        settings_load(monkeypatch, **env)

    assert str(refused.value) == f"{name} must be {form} (got {value!r})."


def test_every_setting_has_a_row_in_the_bad_settings_table(monkeypatch) -> None:
    source = (BASE_DIR / "icu" / "settings.py").read_text()
    read = set(re.findall(r"""\b(?:_\w+|env(?:\.\w+)?)\(\s*"([A-Z][A-Z0-9_]+)\"""", source))

    assert read - FREE_TEXT - {"SECRET_KEY"} == {name for name, _, _ in BAD_SETTINGS}
    # and the defaults pass every check
    assert settings_load(monkeypatch, SECRET_KEY="s")["METRICS_INTERVAL"] == 5.0


@pytest.mark.parametrize(
    ("command", "env", "line"),
    [
        (
            ["check"],
            {"SECRET_KEY": "s", "METRICS_INTERVAL": "abc"},
            "METRICS_INTERVAL must be a number of seconds above 0 (got 'abc').",
        ),
        (
            ["consume_vitals"],
            {"SECRET_KEY": "s", "DATABASE_URL": "nonsense"},
            "DATABASE_URL must be a database URL like postgres://user:password@host:5432/icu "
            "or sqlite:////absolute/path/db.sqlite3 (got 'nonsense').",
        ),
        (
            ["run_patient", "--name", "bob"],
            {"DEBUG": "maybe"},
            "DEBUG must be true or false (got 'maybe').",
        ),
        (
            ["help"],
            {},
            "SECRET_KEY is not set. Set it in the environment or in .env (`make run` writes a "
            "development .env for you), or set DEBUG=true for local use.",
        ),
    ],
)
def test_manage_py_stops_at_a_bad_setting_with_one_line_and_exit_status_2(
    command: list[str], env: dict, line: str
) -> None:
    result = run_python("manage.py", *command, **env)

    assert (result.returncode, result.stdout, result.stderr) == (2, "", line + "\n")


def test_sign_validity_sets_the_windows_given_and_keeps_the_registrys_for_the_rest(
    monkeypatch,
) -> None:
    minutes = lambda n: timedelta(minutes=n)  # noqa: E731
    defaults = {
        "pulse": minutes(5),
        "resp_rate": minutes(5),
        "systolic": minutes(30),
        "diastolic": minutes(30),
        "map": minutes(30),
        "spo2": minutes(5),
        "temperature": minutes(60),
        "etco2": minutes(5),
        "consciousness": minutes(60),
        "on_oxygen": minutes(60),
    }

    assert settings_load(monkeypatch, SECRET_KEY="s")["SIGN_VALIDITY"] == defaults
    given = settings_load(monkeypatch, SECRET_KEY="s", SIGN_VALIDITY="bp=20m, temperature=2h")
    assert given["SIGN_VALIDITY"] == {
        **defaults,
        "systolic": minutes(20),
        "diastolic": minutes(20),
        "map": minutes(20),
        "temperature": minutes(120),
    }
