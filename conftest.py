"""Fixtures shared by every app's tests: the database, the real broker, per-test topics, API
clients.

The database is SQLite, or with `ICU_TEST_DB_ENGINE=postgresql` a throwaway PostgreSQL server
started once per session (`postgresql_server`); see icu/settings_test.py. Child processes are
pointed at the test database with `database_url()`.

The broker is the embedded Tansu, started once per session by our own `run_broker` command on
a free loopback port. Each test that uses Kafka gets topics and a consumer group of its own,
so tests never see each other's messages.
"""

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from urllib.parse import quote, urlencode

import psycopg
import pytest
from confluent_kafka import Consumer, Message, TopicPartition
from django.conf import LazySettings
from django.conf import settings as django_settings
from django.db import connection
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from core.kafka import kafka_config, producer_create, topics_ensure
from core.process import die_with_parent, process_stop
from testing.devservers import DevServerError, PostgresServer, free_port

BASE_DIR = Path(__file__).resolve().parent

# Figures that tests measure for the README (scenario evidence); printed after the run.
_FIGURES: list[tuple[str, str]] = []


def report_figure(name: str, value: str) -> None:
    _FIGURES.append((name, value))


# Fixtures through which a test reaches the database (directly, by a fixture that needs it, or
# by giving a database to a child process).
DATABASE_FIXTURES = frozenset(
    {
        "db",
        "transactional_db",
        "django_db_reset_sequences",
        "django_db_serialized_rollback",
        "empty_database_url",
        "postgresql_server",
    }
)


def uses_database(item: pytest.Item) -> bool:
    return item.get_closest_marker("django_db") is not None or bool(
        DATABASE_FIXTURES & set(getattr(item, "fixturenames", ()))
    )


def runs_on_postgresql(item: pytest.Item) -> bool:
    """Whether the PostgreSQL pass runs a test: those that reach the database, but those marked
    `engine_neutral`, whose database is only where their data lives while what they try out is
    elsewhere (a browser, process faults against the broker, the URLconf's permissions, make
    run's processes), and whose engine-specific parts other tests run on both engines."""
    return uses_database(item) and item.get_closest_marker("engine_neutral") is None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On the PostgreSQL pass of `make test`, only the tests that reach the database run: the
    others (NEWS2, the parser, the emulator, the settings...) cannot answer differently on
    another engine, and the SQLite pass has run them. ICU_TEST_ALL=1 runs everything."""
    if django_settings.TEST_DB_ENGINE != "postgresql" or os.environ.get("ICU_TEST_ALL"):
        return
    kept = [item for item in items if runs_on_postgresql(item)]
    if len(kept) < len(items):
        config.hook.pytest_deselected(items=[i for i in items if not runs_on_postgresql(i)])
        items[:] = kept


def pytest_terminal_summary(terminalreporter) -> None:
    if _FIGURES:
        terminalreporter.section("measured figures")
        for name, value in _FIGURES:
            terminalreporter.write_line(f"{name}: {value}")


def subprocess_env(**overrides: str) -> dict[str, str]:
    """Environment for running `manage.py` commands as child processes of the tests."""
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "icu.settings_test",
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "INFO",
        "PYTHONUNBUFFERED": "1",
        **overrides,
    }


def start_manage(
    *args: str, log: Path, prefix: tuple[str, ...] = (), **env: str
) -> subprocess.Popen:
    """Start `python manage.py <args>` as a child process, its output going to `log`; it is
    sent SIGTERM if pytest dies without stopping it (e.g. pytest-timeout's os._exit).
    `prefix`: a command that runs it (e.g. setpriv, to drop capabilities)."""
    with log.open("wb") as out:
        return subprocess.Popen(
            [*prefix, sys.executable, "manage.py", *args],
            cwd=BASE_DIR,
            env=subprocess_env(**env),
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent,
        )


def wait_for_log(path: Path, text: str, process: subprocess.Popen, timeout: float) -> str:
    """Wait until `text` appears in a child's log file; fail with the log if it never does."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        content = path.read_text(errors="replace") if path.exists() else ""
        if text in content:
            return content
        if process.poll() is not None:
            break
        time.sleep(0.1)
    content = path.read_text(errors="replace") if path.exists() else ""
    pytest.fail(f"{text!r} not in the log within {timeout}s (exit {process.poll()}):\n{content}")


def json_lines(text: str) -> list[dict]:
    """The JSON log lines in a child's output (other lines, e.g. the broker's own, skipped)."""
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


# --- The database ----------------------------------------------------------------------------


def database_url(name: str | None = None) -> str:
    """DATABASE_URL of the database the tests use, for the commands run as child processes:
    the test database of either engine (or the database `name` on the same PostgreSQL server).
    Built from the live connection settings, so it names what this session really uses."""
    config = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{name or config['NAME']}"
    assert connection.vendor == "postgresql", f"no URL for {connection.vendor} databases"
    assert config["HOST"] != django_settings.TEST_DB_PLACEHOLDER_HOST, (
        "the throwaway PostgreSQL server is not started yet: call database_url() from a test "
        "with database access"
    )
    user = quote(config["USER"] or "", safe="")
    password = f":{quote(str(config['PASSWORD']), safe='')}" if config["PASSWORD"] else ""
    host = quote(config["HOST"] or "", safe="")  # a socket directory is a path: %2F...
    port = f":{config['PORT']}" if config["PORT"] else ""
    options = {k: v for k, v in config["OPTIONS"].items() if isinstance(v, str | int)}
    query = f"?{urlencode(options)}" if options else ""
    return f"postgres://{user}{password}@{host}{port}/{quote(name or config['NAME'])}{query}"


@pytest.fixture(scope="session")
def postgresql_server() -> Iterator[PostgresServer | None]:
    """The session's throwaway PostgreSQL server (ICU_TEST_DB_ENGINE=postgresql), stopped and
    removed at the end; None when the session runs on SQLite or on a server of DATABASE_URL."""
    if not django_settings.TEST_DB_THROWAWAY_POSTGRESQL:
        yield None
        return
    try:
        server = PostgresServer.create()
    except DevServerError as exc:
        pytest.fail(f"ICU_TEST_DB_ENGINE=postgresql: {exc}", pytrace=False)
    try:
        server.start()
        yield server
    finally:
        server.remove()


@pytest.fixture(scope="session")
def django_db_modify_db_settings(
    django_db_modify_db_settings_parallel_suffix: None,
    postgresql_server: PostgresServer | None,
) -> None:
    """pytest-django's hook before it creates the test database: point the settings at the
    throwaway PostgreSQL server, now that it runs and its port is known."""
    if postgresql_server is None:
        return
    config = django_settings.DATABASES["default"]
    assert config["HOST"] == django_settings.TEST_DB_PLACEHOLDER_HOST
    config.update(
        HOST="127.0.0.1",
        PORT=str(postgresql_server.port),
        USER=PostgresServer.SUPERUSER,
        PASSWORD="",
    )


@pytest.fixture
def empty_database_url(tmp_path: Path, django_db_modify_db_settings: None) -> Iterator[str]:
    """DATABASE_URL of a new, empty database of the session's engine, for a child process that
    migrates its own: a file for SQLite, a database on the session's server for PostgreSQL."""
    if connection.vendor == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.sqlite3'}"
        return
    name = f"icu_empty_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(database_url("postgres"), autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield database_url(name)
    finally:
        with psycopg.connect(database_url("postgres"), autocommit=True) as admin:
            admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


# --- The broker ------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Kafka-protocol broker for the whole session: `manage.py run_broker`."""
    bootstrap = f"127.0.0.1:{free_port()}"
    log = tmp_path_factory.mktemp("broker") / "broker.log"
    process = start_manage("run_broker", log=log, KAFKA_BOOTSTRAP_SERVERS=bootstrap)
    try:
        wait_for_log(log, "broker ready", process, timeout=30)
        yield bootstrap
    finally:
        process_stop(process)


def _reading_timestamp(value: bytes | None) -> int | None:
    """The `timestamp` of a reading's value in milliseconds since the epoch, if it has one."""
    try:
        text = json.loads(value or b"")["timestamp"]
        stamp = round(datetime.fromisoformat(text).timestamp() * 1000)
    except (ValueError, TypeError, KeyError, AttributeError, UnicodeDecodeError, RecursionError):
        return None
    return stamp if 0 < stamp < 2**62 else None


@dataclass
class KafkaTopics:
    """The topics and group of one test, and helpers to write and read them."""

    bootstrap: str
    topic: str
    dlq_topic: str
    alarms_topic: str
    group_id: str

    def env(self) -> dict[str, str]:
        """The settings that point a child process (`start_manage`) at these topics."""
        return {
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "KAFKA_TOPIC": self.topic,
            "KAFKA_DLQ_TOPIC": self.dlq_topic,
            "KAFKA_ALARMS_TOPIC": self.alarms_topic,
            "KAFKA_GROUP_ID": self.group_id,
        }

    def produce(
        self,
        messages: list[tuple[bytes | None, bytes | None]],
        topic: str = "",
        *,
        sent: str = "measured",
    ) -> None:
        """Produce the messages in order. Their Kafka timestamp (which the consumer takes for
        the time a reading was sent, to measure the monitor's clock against) is, with `sent`
        "measured", the reading's own `timestamp` when the value has one: a monitor with a
        right clock that sent each reading as it took it, however long ago the test stamps
        it; with "now", the producer's clock (a monitor whose clock is off by as much as the
        stamps are from now)."""
        producer = producer_create()
        for key, value in messages:
            extra = {}
            if sent == "measured" and (stamp := _reading_timestamp(value)) is not None:
                extra["timestamp"] = stamp
            producer.produce(topic or self.topic, key=key, value=value, **extra)
        assert producer.flush(10) == 0

    def read(self, topic: str = "", idle: float = 1.0, timeout: float = 20.0) -> list[Message]:
        """Every message now in `topic`, in (partition, offset) order, read without a group
        from offset 0 until none arrives for `idle` seconds.

        Not up to the high watermark: the Tansu broker reports it as the last *batch's* base
        offset + 1, not the last offset + 1 as Apache Kafka does.
        """
        topic = topic or self.topic
        consumer = Consumer(kafka_config(**{"group.id": f"reader-{uuid.uuid4()}"}))
        try:
            partitions = consumer.list_topics(topic, timeout=timeout).topics[topic].partitions
            consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
            messages: list[Message] = []
            deadline = time.monotonic() + timeout
            last_seen = time.monotonic()
            while time.monotonic() - last_seen < idle and time.monotonic() < deadline:
                message = consumer.poll(0.1)
                if message is not None and message.error() is None:
                    messages.append(message)
                    last_seen = time.monotonic()
            return sorted(messages, key=lambda m: (m.partition(), m.offset()))
        finally:
            consumer.close()

    def committed(self, topic: str = "") -> dict[int, int]:
        """The group's committed offset per partition (-1001 when none)."""
        topic = topic or self.topic
        consumer = Consumer(kafka_config(**{"group.id": self.group_id}))
        try:
            partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
            found = consumer.committed([TopicPartition(topic, p) for p in partitions], timeout=10)
            return {tp.partition: tp.offset for tp in found}
        finally:
            consumer.close()


@pytest.fixture
def kafka(kafka_broker: str, settings: LazySettings) -> KafkaTopics:
    """Fresh topics and consumer group for one test, set in Django settings."""
    suffix = uuid.uuid4().hex[:10]
    topics = KafkaTopics(
        bootstrap=kafka_broker,
        topic=f"vitals-{suffix}",
        dlq_topic=f"vitals-{suffix}.dlq",
        alarms_topic=f"alarms-{suffix}",
        group_id=f"group-{suffix}",
    )
    settings.KAFKA_BOOTSTRAP_SERVERS = kafka_broker
    settings.KAFKA_TOPIC = topics.topic
    settings.KAFKA_DLQ_TOPIC = topics.dlq_topic
    settings.KAFKA_ALARMS_TOPIC = topics.alarms_topic
    settings.KAFKA_GROUP_ID = topics.group_id
    topics_ensure(topics={topics.topic: 3, topics.dlq_topic: 1, topics.alarms_topic: 1})
    return topics


@pytest.fixture(autouse=True)
def _access_log_forgotten() -> Iterator[None]:
    """Each test starts with no access-log counts pending in this process (access/services.py
    keeps them in memory between requests; ids and usernames repeat from test to test)."""
    from access.services import patient_access_forget

    patient_access_forget()
    yield
    patient_access_forget()


@pytest.fixture
def roles() -> dict:
    """The role groups by name (core/permissions.py). The migration vitals/0004_roles creates
    them, but a transactional test's flush empties every table: ensured again here."""
    from core.permissions import role_groups_ensure

    return role_groups_ensure()


def token_client(user) -> APIClient:
    """A client authenticated with a DRF token of `user`, as an API consumer would be."""
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    return client


@pytest.fixture
def user(django_user_model, roles):
    """The clinician "nurse": reads everything, acknowledges alarms, changes alarm limits."""
    nurse = django_user_model.objects.create_user(username="nurse", password="correct-horse-9")
    nurse.groups.add(roles["clinician"])
    return nurse


@pytest.fixture
def api_client(user) -> APIClient:
    """The clinician "nurse", by token."""
    return token_client(user)


@pytest.fixture
def clinician_client(api_client) -> APIClient:
    return api_client


@pytest.fixture
def viewer(django_user_model, roles):
    """The viewer "observer": reads everything, changes nothing."""
    observer = django_user_model.objects.create_user(username="observer", password="x" * 16)
    observer.groups.add(roles["viewer"])
    return observer


@pytest.fixture
def viewer_client(viewer) -> APIClient:
    return token_client(viewer)


@pytest.fixture
def staff_user(django_user_model):
    """The staff superuser "chief": everything, the admin, the audit trail and /metrics."""
    return django_user_model.objects.create_superuser(username="chief", password="x" * 16)


@pytest.fixture
def staff_client(staff_user) -> APIClient:
    return token_client(staff_user)


@pytest.fixture
def anon_client() -> APIClient:
    return APIClient()
